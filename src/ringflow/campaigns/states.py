"""The states of a campaign and of each of its numbers, and how a call's end settles a number.

A campaign: ``Created`` -> ``Scheduled`` (its ``send_at`` lies ahead) -> ``InProgress`` <->
``Paused`` -> ``Completed`` -> ``Archived``. A number: ``pending`` -> ``in_progress`` ->
``retrying`` (waits for its next attempt) -> ... -> one of the final states.
"""

from __future__ import annotations

from ringflow.calls.status import Status

CREATED = "Created"
SCHEDULED = "Scheduled"
IN_PROGRESS = "InProgress"
PAUSED = "Paused"
COMPLETED = "Completed"
ARCHIVED = "Archived"
STATUSES = (CREATED, SCHEDULED, IN_PROGRESS, PAUSED, COMPLETED, ARCHIVED)
LIVE = (CREATED, SCHEDULED, IN_PROGRESS, PAUSED)  # a driver places or waits to place calls
NOT_STARTED = (CREATED, SCHEDULED)

# Why a campaign is paused: a PUT (only a resume moves it) or its calling hours (it resumes
# by itself when its next window opens).
BY_USER = "user"
BY_HOURS = "calling_hours"

PENDING = "pending"
CALLING = "in_progress"
RETRYING = "retrying"
ANSWERED = "completed"
BUSY = "busy"
NO_ANSWER = "no_answer"
FAILED = "failed"
NUMBER_STATES = (PENDING, CALLING, RETRYING, ANSWERED, BUSY, NO_ANSWER, FAILED)
FINAL = (ANSWERED, BUSY, NO_ANSWER, FAILED)
WAITING = (PENDING, RETRYING)  # not called yet, or waiting for the next attempt

# A call's final status -> the number's state if it is not called again.
SETTLED_AS = {
    Status.COMPLETED: ANSWERED,
    Status.BUSY: BUSY,
    Status.NO_ANSWER: NO_ANSWER,
    Status.FAILED: FAILED,
    Status.CANCELED: FAILED,
}


def parse_status(value: str) -> str:
    """A campaign status as a client may spell it (``inprogress``, ``in_progress``)."""
    wanted = value.strip().lower().replace("_", "").replace("-", "")
    for status in STATUSES:
        if status.lower() == wanted:
            return status
    raise ValueError(value)
