"""How a SIP call attempt ended, in the call status words the API uses.

``OUTCOMES`` is the one table: a final response's exact code first, then its class (``4xx``),
then the ways an attempt ends on our side (``Ending``). When we canceled, our reason decides,
whatever final response the callee sent (487, or a 200 that crossed the CANCEL). The cause
keeps the SIP words (``486 Busy Here``) for call details.
"""

from __future__ import annotations

import dataclasses
import enum

from ringflow.sip.message import Response


class Status(enum.StrEnum):
    """Call outcomes in the words of the call status table."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"


class Ending(enum.StrEnum):
    """Ways an attempt ends that are not just a final response."""

    TIMEOUT = "no final response"  # transaction timer B (or C) expired
    RING_TIMEOUT = "ring timeout"  # we sent CANCEL: nobody answered in time
    CANCELED = "canceled"  # we sent CANCEL: the API or the other party gave up


OUTCOMES: dict[int | str | Ending, Status] = {
    "2xx": Status.ANSWERED,
    486: Status.BUSY,
    600: Status.BUSY,
    603: Status.BUSY,
    408: Status.NO_ANSWER,
    480: Status.NO_ANSWER,
    Ending.RING_TIMEOUT: Status.NO_ANSWER,
    Ending.CANCELED: Status.CANCELED,
    Ending.TIMEOUT: Status.FAILED,
    "3xx": Status.FAILED,
    "4xx": Status.FAILED,
    "5xx": Status.FAILED,
    "6xx": Status.FAILED,
}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A call's result: ``status`` for the API, ``cause`` in SIP words, ``code`` if any."""

    status: Status
    cause: str
    code: int | None = None


def outcome_of(response: Response | None = None, ending: Ending | None = None) -> Outcome:
    """Look the attempt's end up in ``OUTCOMES``; a cancel of ours outranks the response."""
    code = response.status if response is not None else None
    cause = response.cause if response is not None else (ending.value if ending else "")
    if ending in (Ending.RING_TIMEOUT, Ending.CANCELED) or (ending and code is None):
        return Outcome(OUTCOMES[ending], cause, code)
    if code is None or code < 200:
        raise ValueError("an outcome needs a final response or an ending")
    status = OUTCOMES.get(code) or OUTCOMES[f"{code // 100}xx"]
    return Outcome(status, cause, code)
