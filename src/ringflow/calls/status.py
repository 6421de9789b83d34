"""Every status a call or leg may take, and the one table of moves between them.

Pure: no I/O. ``call_next`` and ``leg_next`` raise ``IllegalTransition`` for a move the table
does not list, so a bug shows up as an error instead of a silently overwritten status.
"""

from __future__ import annotations

import enum

from ringflow.errors import IllegalTransition


class Status(enum.StrEnum):
    """Statuses as they appear on the wire."""

    NONE = ""  # a leg never attempted
    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"


class Event(enum.StrEnum):
    """What happened to a call or leg."""

    DIAL = "dial"  # a leg starts ringing; a call leaves the queue
    ANSWER = "answer"
    HANGUP = "hangup"  # an answered call or leg ends normally
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAIL = "fail"
    CANCEL = "cancel"


TERMINAL = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.BUSY, Status.NO_ANSWER, Status.CANCELED}
)
ACTIVE = frozenset({Status.RINGING, Status.IN_PROGRESS})

S, E = Status, Event

# (status, event) -> status, for the call as a whole.
CALL_TABLE: dict[tuple[Status, Event], Status] = {
    (S.QUEUED, E.DIAL): S.RINGING,
    (S.QUEUED, E.CANCEL): S.CANCELED,
    (S.QUEUED, E.FAIL): S.FAILED,
    (S.RINGING, E.ANSWER): S.IN_PROGRESS,
    (S.RINGING, E.BUSY): S.BUSY,
    (S.RINGING, E.NO_ANSWER): S.NO_ANSWER,
    (S.RINGING, E.FAIL): S.FAILED,
    (S.RINGING, E.CANCEL): S.CANCELED,
    (S.IN_PROGRESS, E.HANGUP): S.COMPLETED,
    # Two-number calls: leg 1 talks but leg 2 never does (spec section 3).
    (S.IN_PROGRESS, E.BUSY): S.BUSY,
    (S.IN_PROGRESS, E.NO_ANSWER): S.NO_ANSWER,
    (S.IN_PROGRESS, E.FAIL): S.FAILED,
}

# (status, event) -> status, for one leg.
LEG_TABLE: dict[tuple[Status, Event], Status] = {
    (S.NONE, E.DIAL): S.RINGING,
    (S.NONE, E.FAIL): S.FAILED,
    (S.RINGING, E.ANSWER): S.IN_PROGRESS,
    (S.RINGING, E.BUSY): S.BUSY,
    (S.RINGING, E.NO_ANSWER): S.NO_ANSWER,
    (S.RINGING, E.FAIL): S.FAILED,
    (S.RINGING, E.CANCEL): S.CANCELED,
    (S.IN_PROGRESS, E.HANGUP): S.COMPLETED,
    (S.IN_PROGRESS, E.FAIL): S.COMPLETED,  # the leg talked, then the call failed around it
}


def call_next(status: str, event: Event) -> Status:
    """The call's status after ``event``; IllegalTransition if the table has no such move."""
    return _next(CALL_TABLE, "call", status, event)


def leg_next(status: str, event: Event) -> Status:
    """The leg's status after ``event``; IllegalTransition if the table has no such move."""
    return _next(LEG_TABLE, "leg", status, event)


def _next(
    table: dict[tuple[Status, Event], Status], what: str, status: str, event: Event
) -> Status:
    try:
        return table[(Status(status), event)]
    except (KeyError, ValueError):
        raise IllegalTransition(f"{what} in status {status!r} cannot take event {event}") from None


def is_terminal(status: str) -> bool:
    """True once a call or leg can no longer change."""
    return status in TERMINAL


# A leg the carrier could not connect: its outcome (``telephony.carrier.Rejected``) as the
# event that moves the leg (and a call that ends with it) through the tables above.
OUTCOME_EVENTS: dict[str, Event] = {
    "busy": Event.BUSY,
    "no-answer": Event.NO_ANSWER,
    "failed": Event.FAIL,
}


def outcome_event(outcome: str) -> Event:
    """The event of a carrier outcome (busy, no-answer, failed)."""
    try:
        return OUTCOME_EVENTS[outcome]
    except KeyError:
        raise ValueError(f"unknown carrier outcome {outcome!r}") from None
