"""Graceful stop: on SIGTERM, finish the calls in progress before the server goes down.

uvicorn's own stop closes the listening socket at once and gives open connections a few
seconds; the app's shutdown then ends every running call. That is right for the calls still
running at the end, but a deploy should not cut calls that would have ended in the next minute.
So the first SIGTERM starts a drain instead:

1. ``Calls/connect`` answers 503 (``DrainGate``) and the dispatcher admits no queued call: they
   stay queued for the next start, or for another process. Every other request is still served:
   a live call may still be controlled (hung up, redirected) and read back.
2. Calls in progress run on, until none is left or ``RINGFLOW_DRAIN_SECONDS`` have passed.
3. Then uvicorn's stop runs as before: the lifespan's shutdown ends the calls still running,
   each with its reason and its status callback, and the deliverer sends those callbacks.

A second SIGTERM, or SIGINT (Ctrl-C), skips what is left of the drain.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sized
from types import FrameType
from typing import Any

import uvicorn
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ringflow.api.render import error
from ringflow.clock import Clock, wait_with_timeout

log = logging.getLogger(__name__)

READY = "/readyz"
NOT_READY = "not ready\ndraining: shutting down, calls in progress are finishing\n"
CONNECT = re.compile(r"^/v1/accounts/[^/]+/calls/connect(\.json)?/?$", re.IGNORECASE)
REFUSAL = (
    "This server is shutting down and takes no new calls; "
    "place the call again in a few seconds (another server will take it)"
)


class Drain:
    """Whether the server is draining, and whether the drain is over."""

    def __init__(self, seconds: float, running: Sized, stop_admitting: Any = None):
        self.seconds = seconds
        self.running = running  # the calls in progress (the dispatcher's tasks)
        self._stop_admitting = stop_admitting
        self.started_at: float | None = None

    @property
    def draining(self) -> bool:
        """True from the first SIGTERM on."""
        return self.started_at is not None

    def begin(self) -> None:
        """Refuse new calls from now on."""
        self.started_at = time.monotonic()
        if self._stop_admitting is not None:
            self._stop_admitting()
        log.info(
            "draining: no new calls; waiting up to %.0f s for %d calls in progress",
            self.seconds,
            len(self.running),
        )

    def over(self) -> bool:
        """True once no call is in progress or the drain's time is up."""
        if self.started_at is None:
            return False
        left = len(self.running)
        if left and time.monotonic() - self.started_at < self.seconds:
            return False
        if left:
            log.warning(
                "drain time up (%.0f s): ending the %d calls still in progress", self.seconds, left
            )
        else:
            log.info("drained: no call in progress")
        return True


class DrainGate:
    """ASGI middleware: while draining, ``Calls/connect`` is a 503 RestException."""

    def __init__(self, app: ASGIApp, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a new call while draining, and say not ready (so a load balancer sends
        elsewhere); pass everything else on."""
        if self.drain.draining and scope["type"] == "http":
            if scope["method"] == "POST" and CONNECT.match(scope["path"]):
                as_json = scope["path"].rstrip("/").lower().endswith(".json")
                response: Any = error(503, REFUSAL, as_json=as_json, headers={"Retry-After": "5"})
                await response(scope, receive, send)
                return
            if scope["path"] == READY:
                response = PlainTextResponse(NOT_READY, status_code=503)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM drains before it stops."""

    def __init__(self, config: uvicorn.Config, drain: Drain):
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM starts the drain; a second one, or SIGINT, stops at once."""
        if sig == signal.SIGTERM and not self.drain.draining and not self.should_exit:
            self.drain.begin()  # a signal handler runs between the loop's steps: no race
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s), which also ends a drain that is over."""
        if not self.should_exit and self.drain.over():
            # As if the SIGTERM came now: uvicorn stops and raises it again on its way out.
            super().handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)


Step = tuple[str, Callable[[], Awaitable[object]], float]


async def stop_in_turn(clock: Clock, steps: Iterable[Step]) -> None:
    """Run a shutdown's steps (name, step, seconds) one after the other, each bounded by its
    seconds of ``clock`` time: a step that hangs (a row lock never granted, a peer that never
    answers) or fails is logged by name and left behind, and the steps after it still run, so
    the callbacks are flushed and the connections closed whatever one part does."""
    for name, step, seconds in steps:
        finished = False

        async def run(step: Callable[[], Awaitable[object]] = step) -> None:
            nonlocal finished
            await step()
            finished = True

        try:
            await wait_with_timeout(clock, run(), seconds)
        except Exception:
            log.exception("shutdown: stopping %s failed; going on", name)
            continue
        if not finished:
            log.error("shutdown: %s did not stop within %g s; going on without it", name, seconds)
