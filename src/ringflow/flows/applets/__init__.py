"""The applet catalogue: one module per applet, each exporting its ``SPEC``."""

from __future__ import annotations

from collections.abc import Mapping

from ringflow.flows.applets import connect, greeting, hangup, passthru
from ringflow.flows.model import AppletSpec

REGISTRY: Mapping[str, AppletSpec] = {
    spec.name: spec for spec in (greeting.SPEC, passthru.SPEC, hangup.SPEC, connect.SPEC)
}
