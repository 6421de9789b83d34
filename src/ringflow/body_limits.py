"""Request body limits: every route's body is capped as it streams, before anything parses it.

``BodyLimits`` is ASGI middleware in front of every route. Each path has a rule: the largest body
it takes and whether it takes multipart. A body that declares a larger Content-Length is refused
with 413 before a byte of it is read; a body that grows past the cap while streaming (chunked, or
lying about its length) is refused with 413 the moment it does; multipart where no form of that
route needs it gets 415. The app never sees the rest of a refused body: the server drops what the
client still sends for a moment and then closes the connection (``http_connections``).

The caps follow what each route needs: the Exotel API takes form, multipart or JSON parameters
(``api.params.MAX_BODY``), the admin API JSON documents (``api.admin.MAX_BODY``) and raw audio
uploads (``audio_files.MAX_AUDIO_BYTES``); the dashboard's forms are small url-encoded ones.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ringflow.api import admin, campaigns, params
from ringflow.audio_files import MAX_AUDIO_BYTES
from ringflow.errors import InvalidRequest
from ringflow.numeric import whole_number

DASHBOARD_MAX_BODY = 512 * 1024  # the app editor's form carries a whole app as YAML or JSON


@dataclasses.dataclass(frozen=True)
class BodyRule:
    """How large a request body may be on the paths ``pattern`` matches, and in which form."""

    pattern: str
    max_bytes: int
    accepts: str  # what the route takes, for the 415 message
    multipart: bool = False  # whether multipart bodies are accepted
    json_errors: bool = False  # refusals as the APIs' JSON errors rather than text

    def matches(self, path: str) -> bool:
        return re.match(self.pattern, path) is not None


RULES = (
    BodyRule(
        r"/admin/v1/accounts/[^/]+/audio$",
        MAX_AUDIO_BYTES,
        "the audio file as the body",
        json_errors=True,
    ),
    BodyRule(r"/admin/", admin.MAX_BODY, "JSON", json_errors=True),
    # Exotel clients send parameters as multipart, so the Exotel edge takes it (and its own
    # parser keeps only the fields, never file contents).
    BodyRule(
        r"/v1/", params.MAX_BODY, "a form, multipart or JSON", multipart=True, json_errors=True
    ),
    BodyRule(
        r"/v2/accounts/[^/]+/contacts/csv-upload/?$",
        campaigns.MAX_CSV_BODY,
        "multipart with the CSV file",
        multipart=True,
        json_errors=True,
    ),
    BodyRule(r"/v2/", campaigns.MAX_JSON_BODY, "JSON", json_errors=True),
    # The dashboard's campaign form carries the CSV of numbers, as the v2 upload does.
    BodyRule(
        r"/a/[^/]+/campaigns/new$",
        campaigns.MAX_CSV_BODY,
        "multipart with the CSV file",
        multipart=True,
    ),
    BodyRule(r"/", DASHBOARD_MAX_BODY, "the form url-encoded"),
)


class BodyLimits:
    """ASGI middleware: refuses a body past its route's cap (413), or multipart where the route
    never takes it (415)."""

    def __init__(self, app: ASGIApp, rules: tuple[BodyRule, ...] = RULES):
        self.app = app
        self.rules = rules

    def rule(self, path: str) -> BodyRule:
        """The first rule whose pattern matches ``path``."""
        return next(rule for rule in self.rules if rule.matches(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule(scope["path"])
        headers = Headers(scope=scope)
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media.startswith("multipart/") and not rule.multipart:
            await _refuse(
                send, rule, 415, f"multipart bodies are not accepted here: send {rule.accepts}"
            )
            return
        declared = headers.get("content-length")
        # uvicorn has already refused a malformed Content-Length; a huge one is refused unread.
        if declared and _length(declared) > rule.max_bytes:
            await _refuse(send, rule, 413, _too_large(rule))
            return
        guard = _StreamGuard(rule, receive, send)
        try:
            await self.app(scope, guard.receive, guard.send)
        except ClientDisconnect:
            # The body ended in a disconnect: the guard's refusal, the connection's (a 408 or 431
            # from ``http_connections``) or the client's own. Nobody is left to answer, and
            # uvicorn would log a traceback for what is no error of the app's.
            pass


class _StreamGuard:
    """Counts a body's bytes as the app reads them and cuts it off past the cap."""

    def __init__(self, rule: BodyRule, receive: Receive, send: Send):
        self.rule = rule
        self._receive = receive
        self._send = send
        self.size = 0
        self.started = False
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.rule.max_bytes:
                self.refused = True
                if not self.started:
                    await _refuse(self._send, self.rule, 413, _too_large(self.rule))
                # To the app the client is gone: it stops reading and its answer is dropped.
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _length(declared: str) -> int:
    """A Content-Length header's value; one that is not a sane length counts as too large."""
    try:
        return whole_number(declared, "Content-Length", low=0, high=2**62)
    except InvalidRequest:
        return 2**62 + 1


def _too_large(rule: BodyRule) -> str:
    return f"request body too large: at most {rule.max_bytes} bytes"


async def _refuse(send: Send, rule: BodyRule, status: int, message: str) -> None:
    """Answer ``status``; the server drops the rest of the upload (http_connections.LINGER)."""
    if rule.json_errors:
        body = json.dumps({"error": {"status": status, "message": message}}).encode()
        media = b"application/json"
    else:
        body = (message + "\n").encode()
        media = b"text/plain; charset=utf-8"
    headers: list[Any] = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
