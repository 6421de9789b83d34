"""Phone number normalisation and display (spec §1 `From`, §7)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringflow.errors import InvalidRequest
from ringflow.phone import display, normalize


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("09052161119", "+919052161119"),  # 0 + 10 digits, the seed's example
        ("9052161119", "+919052161119"),  # bare 10 digits are Indian
        ("919052161119", "+919052161119"),
        ("+919052161119", "+919052161119"),
        ("+91 90521 61119", "+919052161119"),
        ("+91-90521-61119", "+919052161119"),
        ("+91 (0) 90521 61119", "+919052161119"),
        ("0091 9052161119", "+919052161119"),
        ("  09052161119\t", "+919052161119"),
        ("9123456789", "+919123456789"),  # starts with 91 but is a bare 10-digit mobile
        ("08030752400", "+918030752400"),  # landline with STD code
        ("(080) 3075-2400", "+918030752400"),
        ("080.3075.2400", "+918030752400"),
        ("011 2345 6789", "+911123456789"),
        ("1800123456", "+911800123456"),  # toll free
        ("09999900001", "+919999900001"),  # sandbox magic numbers
        ("09999900099", "+919999900099"),
        ("+14155552671", "+14155552671"),
        ("0014155552671", "+14155552671"),
        ("+44 20 7183 8750", "+442071838750"),
        ("+15555550100", "+15555550100"),  # foreign: possible is enough (fictional range)
        ("sip:alice@pbx.example.com", "sip:alice@pbx.example.com"),
        ("SIP:Alice@PBX.example.com;transport=udp", "sip:Alice@PBX.example.com;transport=udp"),
    ],
)
def test_normalize_accepts(raw: str, e164: str) -> None:
    assert normalize(raw) == e164


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("12ab", "only digits"),
        ("9052161119 ext 12", "only digits"),
        ("1-800-FLOWERS", "only digits"),
        ("".join(chr(0xFF10 + int(d)) for d in "09052161119"), "only digits"),  # full width
        ("++919052161119", "only digits"),
        ("90+52161119", "only digits"),
        ("+", "only digits"),
        ("12345", "too short"),
        ("905216111", "IN numbering range"),  # a dropped digit
        ("0111234567", "IN numbering range"),
        ("5555555555", "IN numbering range"),
        ("+999 123456789", "unknown country code"),
        ("+1 415 555 26711234", "too long"),
        ("0000000000", "not a valid phone number"),
        ("sip:", "sip: URI"),
        ("sip:alice @example.com", "sip: URI"),
        ("9" * 80, "too long"),
    ],
)
def test_normalize_rejects(raw: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        normalize(raw)


def test_message_names_the_field_and_value() -> None:
    with pytest.raises(InvalidRequest) as info:
        normalize("12ab", field="CallerId")
    assert str(info.value).startswith("CallerId '12ab' is not a valid phone number")


def test_remembered_results_keep_to_their_input_and_field() -> None:
    """Numbers are remembered, with what they gave; a rejected one is rejected every time,
    naming the field of each request, and a remembered number is not given for a field or
    region it was not read for."""
    for field in ("From", "CallerId", "From"):
        with pytest.raises(InvalidRequest, match=f"^{field} '98123' "):
            normalize("98123", field=field)
    assert normalize("09812345678", field="To") == "+919812345678"
    assert normalize("09812345678", field="To") == "+919812345678"
    assert display("+919812345678") == "09812345678"
    assert display("+919812345678", "US") == "+919812345678"
    with pytest.raises(ValueError):
        display("919812345678")


def test_region_changes_what_bare_numbers_mean() -> None:
    assert normalize("(415) 555-2671", "US") == "+14155552671"
    assert normalize("+919052161119", "US") == "+919052161119"


@pytest.mark.parametrize(
    ("e164", "shown"),
    [
        ("+918167443199", "08167443199"),
        ("+918030752400", "08030752400"),
        ("+919999900001", "09999900001"),
        ("+911800123456", "1800123456"),  # toll free is dialled without 0
        ("+14155552671", "+14155552671"),
        ("+442071838750", "+442071838750"),
        ("sip:alice@pbx.example.com", "sip:alice@pbx.example.com"),
    ],
)
def test_display(e164: str, shown: str) -> None:
    assert display(e164) == shown


def test_display_for_another_home_region() -> None:
    assert display("+14155552671", "US") == "4155552671"
    assert display("+919052161119", "US") == "+919052161119"


def test_display_rejects_what_was_never_normalized() -> None:
    with pytest.raises(ValueError):
        display("09052161119")


@given(st.text(max_size=40))
def test_normalize_raises_only_invalid_request(raw: str) -> None:
    with contextlib.suppress(InvalidRequest):
        normalize(raw)


@given(st.text(alphabet="0123456789+-.() []", max_size=24))
def test_normalize_phoneish_text_raises_only_invalid_request(raw: str) -> None:
    with contextlib.suppress(InvalidRequest):
        assert normalize(raw).startswith("+")


_indian = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("6789"),
    st.text(alphabet="0123456789", min_size=9, max_size=9),
)
_spellings = st.sampled_from(["{n}", "0{n}", "91{n}", "+91{n}", "+91 {a} {b}", "0091-{a}-{b}"])


@given(_indian, _spellings)
def test_indian_mobiles_round_trip(national: str, spelling: str) -> None:
    raw = spelling.format(n=national, a=national[:5], b=national[5:])
    e164 = normalize(raw)
    assert e164 == "+91" + national
    assert display(e164) == "0" + national
    assert normalize(display(e164)) == e164
