"""Real servers on loopback for tests: run an ASGI app with uvicorn, record a customer's side."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.conftest import free_port


@contextlib.asynccontextmanager
async def serve(app: Any, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in this event loop; yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        task.result() if task.done() else task.cancel()
        raise RuntimeError("server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@dataclasses.dataclass
class Seen:
    """One request the recorder received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: list[tuple[str, str]]
    json: Any
    status: int

    def fields(self) -> dict[str, str]:
        """The form body as a dict (last value wins)."""
        return dict(self.form)


class Recorder:
    """A customer's server: records every request, answers from a script (then 200 forever).

    Script entries are status codes, ``(status, content_type, body)`` tuples, or "hang" (never
    answer until the test ends).
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: list[Any] = []
        self.url = ""
        self._release = asyncio.Event()
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "HEAD"])]
        )

    async def _handle(self, request: Request) -> Response:
        answer = self.script.pop(0) if self.script else 200
        status, content_type, body = (
            answer if isinstance(answer, tuple) else (answer, "text/plain", "ok")
        )
        ctype = request.headers.get("content-type", "")
        form: list[tuple[str, str]] = []
        payload: Any = None
        if ctype.startswith(("multipart/form-data", "application/x-www")):
            form = [(k, str(v)) for k, v in (await request.form()).multi_items()]
        elif ctype.startswith("application/json"):
            payload = json.loads(await request.body())
        self.seen.append(
            Seen(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                headers=dict(request.headers),
                form=form,
                json=payload,
                status=status if answer != "hang" else 0,
            )
        )
        if answer == "hang":
            await self._release.wait()
            return Response(status_code=200)
        return PlainTextResponse(body, status_code=status, media_type=content_type)

    def to(self, path: str) -> list[Seen]:
        """Requests received on ``path``."""
        return [s for s in self.seen if s.path == path]

    def release(self) -> None:
        self._release.set()


@contextlib.asynccontextmanager
async def recorder() -> AsyncIterator[Recorder]:
    """A running Recorder; its base URL is ``.url``."""
    rec = Recorder()
    async with serve(rec.app, lifespan="off") as url:
        rec.url = url
        try:
            yield rec
        finally:
            rec.release()
