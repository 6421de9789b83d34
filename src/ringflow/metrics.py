"""Prometheus metrics: every ``ringflow_`` family, in one registry, counted where events happen.

The families are module globals so the code where an event happens counts it with one call and
no plumbing. Labels stay bounded: carriers, statuses, routes, trunks, SIP methods and codes,
account SIDs; never a call SID or a URL.

With ``ringflow serve --workers N`` each worker writes its samples to files in a directory the
supervisor makes for the run (``PROMETHEUS_MULTIPROC_DIR``, prometheus_client's multiprocess
mode, read by the library when it is imported), and a scrape of any worker merges them all.
Gauges then sum over live workers; a worker that died has its gauges dropped at the next scrape
(its counters stay: what happened, happened).

Families that are cheaper to read when scraped (queued calls, pending callbacks, trunk state)
are not here: ``api/observability.py`` reads them at scrape time.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import re
import shutil
import tempfile

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# Counters' "_created" timestamps double the series for no use here (and multiprocess mode
# has none): off, so one server looks the same with one worker or several.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Where a handler that serves several routes from one (the Exotel API) names the one it served,
# in the request's ASGI scope, for the HTTP families' route label.
ROUTE_KEY = "ringflow.route"

# Seconds: from a call's first dial to its answer (a person picks up after seconds, not ms).
SETUP_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0)
# Seconds from a callback's birth to its delivery: sub-second normally, minutes when retried.
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1800.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Seconds an RTP packet left after its deadline: a 20 ms frame late by 10 ms is audible jitter.
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)

CALLS_STARTED = Counter(
    "ringflow_calls_started_total",
    "Calls that left the queue and dialled their first leg.",
    ["carrier"],
)
CALLS_ENDED = Counter(
    "ringflow_calls_ended_total", "Calls that reached a final status.", ["status", "carrier"]
)
CALLS_IN_PROGRESS = Gauge(
    "ringflow_calls_in_progress",
    "Calls carried now (ringing or talking), per account.",
    ["account"],
    multiprocess_mode="livesum",
)
CALL_SETUP = Histogram(
    "ringflow_call_setup_seconds",
    "Seconds from a call's first dial to its answer.",
    ["carrier"],
    buckets=SETUP_BUCKETS,
)

CALLBACK_ATTEMPTS = Counter(
    "ringflow_callback_attempts_total",
    "Status callback requests sent, by result (delivered, http_error, no_answer, refused).",
    ["result"],
)
CALLBACK_DELAY = Histogram(
    "ringflow_callback_delivery_delay_seconds",
    "Seconds from a callback's creation to its delivery (retries included).",
    buckets=DELIVERY_BUCKETS,
)

HTTP_REQUESTS = Counter(
    "ringflow_http_requests_total",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "ringflow_http_request_duration_seconds",
    "Seconds to answer an HTTP request, by route.",
    ["route"],
    buckets=HTTP_BUCKETS,
)
RATE_LIMITED = Counter(
    "ringflow_rate_limit_refusals_total",
    "Requests refused with 429 by a rate limit (api, login_client, login_key, login_burst).",
    ["limit"],
)

SIP_REQUESTS = Counter(
    "ringflow_sip_requests_total",
    "SIP requests sent (out) and received (in), by method.",
    ["direction", "method"],
)
SIP_RESPONSES = Counter(
    "ringflow_sip_responses_total",
    "SIP responses sent (out) and received (in), by code.",
    ["direction", "code"],
)
SIP_RETRANSMISSIONS = Counter(
    "ringflow_sip_retransmissions_total",
    "SIP messages sent again by a transaction's timers (request or response).",
    ["kind"],
)

RTP_LATENESS = Histogram(
    "ringflow_rtp_send_lateness_seconds",
    "Seconds the last RTP packet of each 5 ms pacer tick left after its deadline.",
    buckets=LATENESS_BUCKETS,
)
RTP_LOST = Counter(
    "ringflow_rtp_packets_lost_total", "RTP packets missing from received sequences."
)

STREAMS_ACTIVE = Gauge(
    "ringflow_streams_active",
    "Streams to voice bots open now, per account.",
    ["account"],
    multiprocess_mode="livesum",
)

SIP_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "PRACK",
        "NOTIFY",
        "SUBSCRIBE",
        "REFER",
        "MESSAGE",
    }
)
_RESPONSE = re.compile(rb"SIP/2\.0 ([1-6]\d\d) ")


def count_sip(data: bytes, direction: str) -> None:
    """Count one SIP message on the wire by its first line (methods outside the standard
    ones are ``other``, so a peer cannot grow the label set)."""
    head = data[:16]
    if not head.strip():
        return  # a keep-alive (CRLF), not a message
    if head.startswith(b"SIP/2.0 "):
        match = _RESPONSE.match(head)
        _sip_counter(SIP_RESPONSES, direction, match[1].decode() if match else "other").inc()
        return
    method = head.split(b" ", 1)[0].decode("ascii", "replace")
    _sip_counter(SIP_REQUESTS, direction, method if method in SIP_METHODS else "other").inc()


@functools.cache
def _sip_counter(family: Counter, direction: str, kind: str) -> Counter:
    """``family.labels(direction, kind)``, looked up once (a few hundred label pairs at most:
    the standard methods and the response codes); ``labels`` costs more than the count."""
    return family.labels(direction, kind)


def carrier_label(carrier: object | None, account_sid: str) -> str:
    """The carrier that places ``account_sid``'s legs: sandbox or sip (a routing carrier
    sends the accounts a trunk names over SIP)."""
    if carrier is None:
        return "none"
    over_sip = getattr(carrier, "over_sip", None)
    default = getattr(carrier, "default", None)
    if over_sip is not None and default is not None:  # telephony.routing.RoutingCarrier
        return "sip" if over_sip(account_sid) else str(default.name)
    return str(getattr(carrier, "name", "unknown"))


def multiprocess_dir() -> str | None:
    """The directory the workers share samples through, when several processes serve."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir() -> str:
    """Make the run's sample directory and export it to the workers about to start.

    Called by the supervisor before it starts workers. A directory the operator set already is
    used as it is (emptied: samples of an earlier run would be summed in); one made here is
    removed when the supervisor exits.
    """
    path = multiprocess_dir()
    if path:
        os.makedirs(path, exist_ok=True)
        for name in glob.glob(os.path.join(path, "*.db")):
            os.remove(name)
        return path
    path = tempfile.mkdtemp(prefix="ringflow-metrics-")
    os.environ[MULTIPROC_ENV] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def forget_dead_workers(path: str) -> None:
    """Drop the live gauges of worker processes that are gone (a crash, a restart)."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = int(name.rsplit("_", 1)[1][:-3])
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exposition() -> bytes:
    """Every family counted in this process, or in all workers when they share a directory."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY)
    forget_dead_workers(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)
    return generate_latest(registry)
