"""``ringflow dial``: one call through the configured carrier, its progress printed as it goes.

For operators checking a trunk: it builds the same services as ``ringflow serve`` (under its own
instance name, so it never reclaims a running server's calls), places a flow-shape call to the
number with the given app, prints each status change and applet step as it is recorded, and
returns when the call is over. ``RINGFLOW_SIP_PORT=0`` lets it run beside a server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable

from ringflow.calls.requests import CallRequest
from ringflow.calls.status import is_terminal
from ringflow.calls.steps import describe
from ringflow.config import Settings
from ringflow.errors import InvalidRequest, NotFound
from ringflow.phone import normalize
from ringflow.storage import call_views, timeline
from ringflow.storage.models import Call

POLL_SECONDS = 0.2


async def dial(
    settings: Settings,
    account_sid: str,
    number: str,
    app_id: int,
    *,
    caller_id: str | None = None,
    time_out: int = 30,
    out: Callable[[str], None] = print,
) -> Call:
    """Place the call and follow it to its end; returns the finished call."""
    from ringflow.app import Services  # the services pull in every part; load them on use

    settings = dataclasses.replace(settings, instance=f"dial-{os.getpid()}")
    services = Services.build(settings)
    await services.start()
    try:
        request = await _request(services, account_sid, number, app_id, caller_id, time_out)
        call, started = await services.dispatcher.submit(request)
        out(
            f"call {call.sid}: {number} via {services.carrier.name}"
            + ("" if started else " (queued: the account's lines are busy)")
        )
        return await _follow(services, call.id, out)
    finally:
        await services.stop()


async def _request(
    services: object,
    account_sid: str,
    number: str,
    app_id: int,
    caller_id: str | None,
    time_out: int,
) -> CallRequest:
    db = services.db  # type: ignore[attr-defined]
    accounts = services.accounts  # type: ignore[attr-defined]
    async with db.session() as session:
        try:
            account = await accounts.get(session, account_sid)
        except NotFound:
            raise NotFound(f"no account {account_sid}") from None
        try:
            await accounts.app(session, account.id, app_id)
        except NotFound:
            raise NotFound(f"account {account_sid} has no app {app_id}") from None
        numbers = [n.number for n in await accounts.numbers(session, account.id)]
    if caller_id is None:
        if not numbers:
            raise InvalidRequest(f"account {account_sid} has no ExoPhone; pass --caller-id")
        caller_id = numbers[0]
    target = number if number.lower().startswith("sip:") else normalize(number, field="number")
    return CallRequest(
        account_id=account.id,
        shape="flow",
        from_number=target,
        caller_id=normalize(caller_id, field="caller-id"),
        app_id=app_id,
        time_out=time_out,
    )


async def _follow(services: object, call_id: int, out: Callable[[str], None]) -> Call:
    """Print the call's timeline as it grows, until the call is over."""
    db = services.db  # type: ignore[attr-defined]
    seen = 0
    while True:
        async with db.session() as session:
            call = await call_views.call_now(session, call_id)
            events = await timeline.steps(session, call_id, after=seen)
        assert call is not None
        for event in events:
            seen = event.id
            out(f"  {event.at:%H:%M:%S}  {event.kind:<14} {describe(event.kind, event.data)}")
        if is_terminal(call.status):
            cause = "; ".join(f"leg {leg.leg_no}: {leg.cause}" for leg in call.legs if leg.cause)
            out(f"call {call.sid}: {call.status}" + (f" ({cause})" if cause else ""))
            return call
        await asyncio.sleep(POLL_SECONDS)
