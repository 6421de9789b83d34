"""The transition table: every legal move, and illegal ones refused."""

import pytest

from ringflow.calls.status import (
    CALL_TABLE,
    LEG_TABLE,
    TERMINAL,
    Event,
    Status,
    call_next,
    leg_next,
)
from ringflow.errors import IllegalTransition


def test_terminal_statuses_have_no_way_out():
    for status, _event in [*CALL_TABLE, *LEG_TABLE]:
        assert status not in TERMINAL


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize("event", list(Event))
def test_nothing_moves_a_finished_call(status, event):
    with pytest.raises(IllegalTransition):
        call_next(status, event)


def test_a_flow_call_lifecycle():
    status = Status.QUEUED
    for event, expected in [
        (Event.DIAL, "ringing"),
        (Event.ANSWER, "in-progress"),
        (Event.HANGUP, "completed"),
    ]:
        status = call_next(status, event)
        assert status == expected


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (Event.BUSY, "busy"),
        (Event.NO_ANSWER, "no-answer"),
        (Event.FAIL, "failed"),
        (Event.CANCEL, "canceled"),
    ],
)
def test_unanswered_outcomes(event, status):
    assert call_next("ringing", event) == status
    assert leg_next("ringing", event) == status


def test_a_leg_cannot_answer_before_it_rings():
    with pytest.raises(IllegalTransition, match="leg in status '' cannot take event answer"):
        leg_next("", Event.ANSWER)


def test_unknown_status_is_refused_not_guessed():
    with pytest.raises(IllegalTransition):
        call_next("talking", Event.HANGUP)
