"""Numeric parameters from the network: one checked parser, so no odd digit is ever a 500.

``'²'.isdigit()`` is true and ``int('²')`` raises; ``int`` and ``float`` take Unicode digits,
underscores, spaces, 'nan' and 'inf'. Every numeric parameter goes through ``ringflow.numeric``,
which answers a value in range or the caller's error naming the parameter, and nothing else.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringflow.dashboard.logins import set_account_password
from ringflow.errors import Forbidden, InvalidRequest
from ringflow.numeric import decimal, whole_number
from tests.e2e import running
from tests.test_dashboard import PASSWORD, browser_like, form_post, sign_in

ODD = [
    "²",
    "٣",
    "①",
    "1_000",
    "0x10",
    "1e3",
    "nan",
    "inf",
    "-inf",
    "",
    " ",
    "9" * 5000,
    "１２",
    "12\n",
    "+",
    "1.5.2",
    "١٢٣",
]


@given(st.text(max_size=30) | st.sampled_from(ODD))
def test_whole_number_gives_a_value_in_range_or_the_callers_error(text: str) -> None:
    try:
        value = whole_number(text, "n", low=-1000, high=1000, error=Forbidden)
    except Forbidden as exc:
        assert str(exc).startswith("n must be a whole number from -1000 to 1000, got ")
        return
    stripped = text.strip(" \t")
    assert stripped.isascii() and value == int(stripped) and -1000 <= value <= 1000


@given(st.text(max_size=30) | st.sampled_from(ODD))
def test_decimal_gives_a_finite_value_in_range_or_the_callers_error(text: str) -> None:
    try:
        value = decimal(text, "x", low=0, high=600)
    except InvalidRequest as exc:
        assert str(exc).startswith("x must be a number from 0 to 600, got ")
        return
    assert math.isfinite(value) and 0 <= value <= 600


@pytest.mark.parametrize("text", ODD)
def test_odd_digits_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        whole_number(text, "n", low=0, high=10**9)


def test_plain_numbers_are_read() -> None:
    assert whole_number(" 42 ", "n", low=0, high=100) == 42
    assert whole_number("-7", "n", low=-10, high=10) == -7
    assert decimal("2.5", "x", low=0, high=10) == 2.5
    assert decimal(".5", "x", low=0, high=10) == 0.5


async def test_odd_digits_in_network_parameters_are_4xx_never_500(database_url):
    """Each place a number comes from the network, fed a digit that int() refuses."""
    async with running(database_url) as rig:
        # A signed recording link, before any login: was a plain-text 500.
        for expires in ("²", "٣", "1_700_000_000", "9" * 5000):
            r = await rig.http.get(
                f"{rig.base}/v1/Accounts/{rig.sid}/Recordings/abc.mp3",
                params={"Expires": expires, "Signature": "aa"},
            )
            assert r.status_code == 403, (expires, r.status_code, r.text)
            assert "Expires" in r.text

        # Admin API: a signed link's ttl.
        link = f"{rig.base}/admin/v1/accounts/{rig.sid}/recordings/{'0' * 32}/link"
        for ttl in ("²", "nan", "1_0"):
            r = await rig.http.get(link, params={"ttl": ttl}, auth=rig.auth)
            assert r.status_code == 400 and "ttl must be a whole number" in r.text, r.text

        # The Exotel API: paging.
        r = await rig.http.get(rig.url("Calls.json"), params={"PageSize": "²"}, auth=rig.auth)
        assert r.status_code == 400 and "PageSize" in r.text

        # The dashboard: a test call's app and a sandbox phone's ring time.
        await set_account_password(rig.services.accounts, rig.sid, PASSWORD)
        async with browser_like(rig) as client:
            await sign_in(client, rig.sid)
            base = f"/a/{rig.sid}"
            r = await form_post(
                client, f"{base}/sandbox", f"{base}/sandbox/call", number="09812345678", app_id="²"
            )
            assert r.status_code == 400 and "choose an app" in r.text
            r = await form_post(
                client,
                f"{base}/sandbox",
                f"{base}/sandbox/phones",
                number="09812345678",
                ring="nan",
                outcome="answer",
            )
            assert r.status_code == 400 and "ring (seconds) must be a number" in r.text
