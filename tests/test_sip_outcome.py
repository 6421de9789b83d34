"""The one table from SIP endings to call outcomes."""

from __future__ import annotations

import pytest

from ringflow.sip.message import Response
from ringflow.sip.outcome import OUTCOMES, Ending, Outcome, Status, outcome_of
from tests.test_sip_dialog import golden


def _response(status: int, reason: str) -> Response:
    msg = Response.parse(golden("487_sipp.sip"))
    msg.status, msg.reason = status, reason
    return msg


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (200, "OK", Status.ANSWERED),
        (202, "Accepted", Status.ANSWERED),
        (486, "Busy Here", Status.BUSY),
        (600, "Busy Everywhere", Status.BUSY),
        (603, "Decline", Status.BUSY),
        (408, "Request Timeout", Status.NO_ANSWER),
        (480, "Temporarily Unavailable", Status.NO_ANSWER),
        (404, "Not Found", Status.FAILED),
        (487, "Request Terminated", Status.FAILED),  # a 487 we did not ask for
        (503, "Service Unavailable", Status.FAILED),
        (604, "Does Not Exist Anywhere", Status.FAILED),
        (302, "Moved Temporarily", Status.FAILED),
    ],
)
def test_final_responses(status: int, reason: str, expected: Status) -> None:
    outcome = outcome_of(_response(status, reason))
    assert outcome == Outcome(expected, f"{status} {reason}", status)


def test_our_cancel_decides_whatever_the_callee_answered() -> None:
    r487 = _response(487, "Request Terminated")
    assert outcome_of(r487, Ending.RING_TIMEOUT) == Outcome(
        Status.NO_ANSWER, "487 Request Terminated", 487
    )
    assert outcome_of(r487, Ending.CANCELED).status is Status.CANCELED
    assert outcome_of(_response(486, "Busy Here"), Ending.CANCELED).status is Status.CANCELED


def test_endings_without_a_response() -> None:
    assert outcome_of(None, Ending.TIMEOUT) == Outcome(Status.FAILED, "no final response")
    assert outcome_of(None, Ending.CANCELED).status is Status.CANCELED
    assert outcome_of(None, Ending.RING_TIMEOUT).status is Status.NO_ANSWER


def test_the_table_covers_every_class_and_ending() -> None:
    assert {"2xx", "3xx", "4xx", "5xx", "6xx", *Ending} <= set(OUTCOMES)
    assert {s.value for s in Status} == {"answered", "busy", "no-answer", "failed", "canceled"}
