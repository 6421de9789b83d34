"""The sandbox phone network under a ManualClock: ringing, outcomes, keys, prompt durations."""

from __future__ import annotations

import asyncio

import pytest

from ringflow.clock import ManualClock
from ringflow.errors import InvalidRequest
from ringflow.telephony.carrier import Answered, DialRequest, Outcome, Rejected, Ringing
from ringflow.telephony.sandbox import PhoneScript, SandboxCarrier
from ringflow.telephony.sandbox.network import speech_seconds


def request(number: str) -> DialRequest:
    return DialRequest(number, "+918039591234", "acme", "sid", 1)


async def events_until_final(clock: ManualClock, attempt, horizon: float = 30.0):
    seen = []
    while True:
        task = asyncio.ensure_future(attempt.next_event())
        await clock.run_until(task.done, limit=horizon)
        seen.append((clock.now(), task.result()))
        if not isinstance(task.result(), Ringing):
            return seen


async def test_unknown_numbers_ring_one_second_then_answer(clock):
    carrier = SandboxCarrier(clock)
    seen = await events_until_final(clock, carrier.dial(request("+919812345678")))
    assert [type(e).__name__ for _, e in seen] == ["Ringing", "Answered"]
    assert seen[-1][0] == 1.0


@pytest.mark.parametrize(
    ("number", "outcome", "at"),
    [("+919999900001", Outcome.BUSY, 1.0), ("+919999900003", Outcome.FAILED, 0.0)],
)
async def test_magic_numbers_reject(clock, number, outcome, at):
    seen = await events_until_final(clock, SandboxCarrier(clock).dial(request(number)))
    when, final = seen[-1]
    assert isinstance(final, Rejected) and final.outcome is outcome and when == at


async def test_never_answering_number_rings_until_canceled(clock):
    attempt = SandboxCarrier(clock).dial(request("+919999900002"))
    assert isinstance(await attempt.next_event(), Ringing)
    nxt = asyncio.ensure_future(attempt.next_event())
    await clock.advance(3600)
    assert not nxt.done()
    nxt.cancel()
    await attempt.cancel()


async def answered(clock: ManualClock, script: PhoneScript):
    async def lookup(account: str, number: str) -> PhoneScript:
        return script

    seen = await events_until_final(
        clock, SandboxCarrier(clock, lookup).dial(request("+919812345678"))
    )
    final = seen[-1][1]
    assert isinstance(final, Answered)
    return final.channel


async def test_prompts_take_their_spoken_time(clock):
    channel = await answered(clock, PhoneScript(ring=0.5))
    text = "one two three four five six seven eight nine ten"
    start = clock.now()
    say = asyncio.ensure_future(channel.say(text))
    await clock.run_until(say.done)
    assert clock.now() - start == pytest.approx(speech_seconds(text))
    assert channel.heard == [text]


async def test_scripted_keys_are_pressed_one_entry_per_input(clock):
    channel = await answered(clock, PhoneScript(keys=("2", "1234#")))
    first = asyncio.ensure_future(channel.collect_digits(1, 5, "#"))
    await clock.run_until(first.done)
    second = asyncio.ensure_future(channel.collect_digits(6, 5, "#"))
    await clock.run_until(second.done)
    third = asyncio.ensure_future(channel.collect_digits(4, 5, "#"))
    before = clock.now()
    await clock.run_until(third.done)
    assert (first.result(), second.result(), third.result()) == ("2", "1234", "")
    assert clock.now() - before == 5  # nothing pressed: the input timeout runs out


async def test_scripted_hangup_cuts_a_prompt_short(clock):
    channel = await answered(clock, PhoneScript(hangup_after=2))
    say = asyncio.ensure_future(channel.say(" ".join(["word"] * 60)))
    await clock.run_until(say.done)
    assert clock.now() == 3.0  # 1 s ringing + 2 s on the line
    assert channel.closed and await channel.wait_closed() == "remote"


def test_scripts_are_validated():
    assert PhoneScript.from_dict({"outcome": "busy", "ring": 2}).outcome == "busy"
    for bad, message in [
        ({"outcome": "maybe"}, "outcome must be one of"),
        ({"ring": -1}, "ring must be between"),
        ({"keys": ["12a"]}, "keys may hold only"),
        ({"colour": 1}, "unknown phone script fields: colour"),
        ({"hangup_after": "soon"}, "hangup_after must be a number"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            PhoneScript.from_dict(bad)
