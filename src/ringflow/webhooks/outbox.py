"""Callbacks as the outbox keeps them: ``enqueue`` writes one (in the caller's transaction,
with the transition that causes it), ``encode`` makes its body. The statements are in
``storage/outbox.py``; the deliverer sends the rows.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx

from ringflow.storage.models import OutboxMessage
from ringflow.storage.outbox import Lease, add_message
from ringflow.storage.session import Session
from ringflow.webhooks.destinations import destination_of

FORM = "multipart/form-data"
JSON = "application/json"
CONTENT_TYPES = (FORM, JSON)
LEGS = "Legs"


def outbox_row(
    *,
    account_id: int,
    call_id: int | None,
    event: str,
    url: str,
    content_type: str,
    payload: dict[str, Any],
    idempotency_key: str,
    now: dt.datetime,
    lease: Lease | None = None,
) -> dict[str, Any]:
    """A pending webhook's row, checked as ``enqueue`` checks it, for a writer to insert."""
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"unsupported callback content type {content_type!r}")
    encode(payload, content_type)  # a payload that cannot be sent fails now, not when sent
    return {
        "account_id": account_id,
        "call_id": call_id,
        "event": event,
        "url": url,
        "destination": destination_of(url),
        "content_type": content_type,
        "payload": payload,
        "idempotency_key": idempotency_key,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "lease_owner": lease.owner if lease is not None else None,
        "lease_until": lease.until if lease is not None else None,
    }


async def enqueue(session: Session, **fields: Any) -> OutboxMessage:
    """Add a pending webhook (``fields`` as ``outbox_row`` takes them) in the caller's
    transaction: it commits with the transition that causes it.

    With ``lease``, the row is born leased to that deliverer, which sends it once the
    transaction has committed (``Deliverer.take``); if that process dies first, any deliverer
    sends it when the lease runs out.
    """
    return await add_message(session, outbox_row(**fields))


def encode(payload: dict[str, Any], content_type: str) -> tuple[bytes, str]:
    """The request body and its Content-Type header for a callback payload."""
    if content_type == JSON:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return body, JSON
    if content_type == FORM:
        return _multipart(form_fields(payload))
    raise ValueError(f"unsupported callback content type {content_type!r}")


def form_fields(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Flatten a payload to form fields; ``Legs`` becomes ``Legs[i][Name]`` bracket keys."""
    fields: list[tuple[str, str]] = []
    for name, value in payload.items():
        if name == LEGS:
            for index, leg in enumerate(value or []):
                if not isinstance(leg, dict):
                    raise TypeError(f"{LEGS}[{index}] must be a dict, not {type(leg).__name__}")
                fields.extend((f"{LEGS}[{index}][{k}]", _text(k, v)) for k, v in leg.items())
        else:
            fields.append((name, _text(name, value)))
    return fields


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    # Form bodies are flat: anything nested besides Legs is a bug in the payload builder.
    raise TypeError(f"form field {name!r} must be a scalar, not {type(value).__name__}")


def _multipart(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    if not fields:
        raise ValueError("a multipart callback needs at least one field")
    # httpx writes form fields without files as multipart when each is (None, value).
    request = httpx.Request(
        "POST", "http://outbox.invalid/", files=[(name, (None, value)) for name, value in fields]
    )
    return request.read(), request.headers["Content-Type"]
