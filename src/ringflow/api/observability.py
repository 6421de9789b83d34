"""``/metrics``, ``/readyz`` and the middleware that counts HTTP requests.

``/metrics`` answers every family of ``ringflow.metrics`` plus the ones read when scraped
(queued calls per account, pending callbacks, trunk channels and registrations), which are
cheaper to read on demand than to keep counted. With ``RINGFLOW_METRICS_TOKEN`` set, a scrape
must carry ``Authorization: Bearer <token>``; the token is compared in constant time and never
logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ringflow import metrics
from ringflow.calls.status import Status
from ringflow.health import CHECK_TIMEOUT, sip_side
from ringflow.storage import gauges

if TYPE_CHECKING:
    from ringflow.app import Services

log = logging.getLogger(__name__)


class Observability:
    """The two operator endpoints."""

    def __init__(self, services: Services):
        self.s = services
        token = services.settings.metrics_token
        self._token = f"Bearer {token}".encode() if token else None

    def routes(self) -> list[Route]:
        """``GET /metrics`` and ``GET /readyz``."""
        return [
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]

    async def metrics(self, request: Request) -> Response:
        """The Prometheus text exposition of every worker's samples."""
        if self._token is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._token):
                return PlainTextResponse(
                    "a metrics token is required\n",
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        families = await self._scraped()
        registry = CollectorRegistry()
        registry.register(_Fixed(families))
        body = metrics.exposition() + generate_latest(registry)
        return Response(body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def readyz(self, request: Request) -> Response:
        """200 when every dependency works; 503 naming the ones that do not."""
        problems = await self.s.readiness.problems()
        if problems:
            return PlainTextResponse(
                "not ready\n" + "".join(f"{p}\n" for p in problems), status_code=503
            )
        return PlainTextResponse("ready\n")

    async def _scraped(self) -> list[Metric]:
        """The families read now; one that cannot be read is left out (and logged)."""
        queued = GaugeMetricFamily(
            "ringflow_calls_queued", "Calls waiting in the queue, per account.", labels=["account"]
        )
        pending = GaugeMetricFamily(
            "ringflow_callbacks_pending", "Callbacks not delivered yet and still to be tried."
        )
        found: list[Metric] = []
        stored, trunks = await asyncio.gather(
            asyncio.wait_for(self._from_database(), CHECK_TIMEOUT),
            asyncio.wait_for(trunk_families(self.s.carrier), CHECK_TIMEOUT),
            return_exceptions=True,
        )
        if isinstance(stored, BaseException):
            log.warning("metrics: could not read queued calls and callbacks: %r", stored)
        else:
            by_account, waiting = stored
            for account, count in sorted(by_account.items()):
                queued.add_metric([account], count)
            pending.add_metric([], waiting)
            found += [queued, pending]
        if isinstance(trunks, BaseException):
            log.warning("metrics: could not read the trunks: %r", trunks)
        else:
            found += trunks
        return found

    async def _from_database(self) -> tuple[dict[str, int], int]:
        async with self.s.db.session() as session:
            return (
                await gauges.queued_by_account(session, Status.QUEUED),
                await gauges.callbacks_pending(session),
            )


async def trunk_families(carrier: Any) -> list[Metric]:
    """Channels in use and registration state per trunk, when calls go over SIP."""
    sip = sip_side(carrier)
    if sip is None:
        return []
    in_use = GaugeMetricFamily(
        "ringflow_trunk_channels_in_use",
        "Trunk channels held by calls now (all processes sharing it).",
        labels=["trunk"],
    )
    state = GaugeMetricFamily(
        "ringflow_trunk_registration_state",
        "1 for the state each registering trunk is in (as this process sees it), 0 for the others.",
        labels=["trunk", "state"],
    )
    for trunk in sip.trunks:
        in_use.add_metric([trunk.name], await sip.gates[trunk.name].active())
    from ringflow.sip.registration import RegState

    for name, registration in sip.registrations.items():
        for each in RegState:
            state.add_metric([name, str(each)], 1.0 if registration.state == each else 0.0)
    return [in_use, state]


class _Fixed:
    """A collector of families already read (for one scrape)."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class CountRequests:
    """ASGI middleware: counts each HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = _route(scope)
            metrics.HTTP_REQUESTS.labels(route, _method(scope["method"]), str(status)).inc()
            metrics.HTTP_DURATION.labels(route).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method(method: str) -> str:
    return method if method in _METHODS else "other"


def _route(scope: Scope) -> str:
    """The route's template (never the path itself: SIDs would make the labels unbounded)."""
    named = scope.get(metrics.ROUTE_KEY)
    if named:
        return str(named)
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
