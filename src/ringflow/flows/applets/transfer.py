"""Transfer: continue the call in another app of the same account.

Fields:

- ``app_id``: the app to continue in (a positive whole number). It must belong to the call's
  account when the call reaches this node; the app's current version runs from its start.

Exits: none. The engine follows the transfer (at most ``engine.MAX_TRANSFERS`` in one call);
a transfer it cannot follow (no such app in the account, too many transfers) ends the flow with
``flow.aborted`` and the reason on the call's timeline.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ringflow.flows.actions import TransferTo
from ringflow.flows.context import FlowContext
from ringflow.flows.model import AppletSpec, Node

MAX_APP_ID = 2**63 - 1  # the apps table's id column


def _app_id(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_APP_ID
    return None if ok else "must be the id of an app of this account (a positive whole number)"


def run(node: Node, ctx: FlowContext) -> Generator[Any, Any, TransferTo]:
    """Hand the call to the other app."""
    return TransferTo(node.config["app_id"])
    yield  # a generator like every applet, though it asks for nothing


SPEC = AppletSpec(
    name="transfer",
    exits=(),
    required={"app_id": _app_id},
    optional={},
    run=run,
    waits=False,
)
