"""A campaign's own callbacks (``status_callback``, ``call_schedule_callback``): JSON POSTs
written to the outbox in the caller's transaction, like a call's StatusCallback."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ringflow.storage.models import Campaign
from ringflow.storage.session import Session
from ringflow.webhooks.outbox import JSON, enqueue


async def post(
    session: Session,
    campaign: Campaign,
    event: str,
    url: str,
    payload: dict[str, Any],
    key: str,
    now: dt.datetime,
) -> None:
    """Queue a JSON POST of ``payload`` to ``url`` about ``campaign``; ``key`` makes its
    Idempotency-Key unique (``campaign:{sid}:{key}``)."""
    await enqueue(
        session,
        account_id=campaign.account_id,
        call_id=None,
        event=event,
        url=url,
        content_type=JSON,
        payload={"campaign_id": campaign.sid, **payload, "date_updated": now.isoformat()},
        idempotency_key=f"campaign:{campaign.sid}:{key}",
        now=now,
    )
