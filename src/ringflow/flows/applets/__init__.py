"""The applet catalogue: one module per applet, each exporting its ``SPEC``."""

from __future__ import annotations

from collections.abc import Mapping

from ringflow.flows.applets import (
    connect,
    exoml,
    gather,
    greeting,
    hangup,
    ivr_menu,
    passthru,
    stream,
    switch_case,
    timing,
    transfer,
    voicebot,
    voicemail,
)
from ringflow.flows.model import AppletSpec

_SPECS = [
    greeting.SPEC,
    passthru.SPEC,
    hangup.SPEC,
    connect.SPEC,
    ivr_menu.SPEC,
    gather.SPEC,
    timing.SPEC,
    transfer.SPEC,
    exoml.SPEC,
    voicemail.SPEC,
    switch_case.SPEC,
    voicebot.SPEC,
    stream.SPEC,
]

REGISTRY: Mapping[str, AppletSpec] = {spec.name: spec for spec in _SPECS}
