"""Calls/connect parameters in Exotel's names, checked and translated into a CallRequest."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ringflow.api.params import Params
from ringflow.calls.requests import DEFAULT_TIME_LIMIT, DEFAULT_TIME_OUT, MAX_TIME_OUT, CallRequest
from ringflow.errors import InvalidRequest, NotFound
from ringflow.logs import bind_account
from ringflow.media.amd import parse_mode
from ringflow.phone import display, normalize
from ringflow.storage.models import Account
from ringflow.streams.target import check_stream_url
from ringflow.webhooks.http import validate_url

if TYPE_CHECKING:
    from ringflow.app import Services

# .../exoml/start_voice/{app_id} (current) and .../exoml/start/{app_id} (legacy), any host.
_APP_URL = re.compile(r"/exoml/start(?:_voice)?/([0-9]{1,100})/?$")
EVENTS = ("terminal", "answered", "ringing")
CONTENT_TYPES = {"multipart/form-data": False, "application/json": True}
STREAM_TYPES = ("bidirectional", "unidirectional")
MAX_STREAM_NAME = 32


def app_id_from_url(url: str, field: str = "Url") -> int:
    """The app id at the end of an Exotel flow URL (``field`` names it in an error)."""
    parts = urlsplit(url.strip())
    match = _APP_URL.search(parts.path)
    if parts.scheme.lower() not in ("http", "https") or match is None:
        raise InvalidRequest(
            f"{field} must look like http://my.exotel.com/{{sid}}/exoml/start_voice/{{app_id}}"
        )
    return int(match.group(1))


async def parse_connect(params: Params, account: Account, services: Services) -> CallRequest:
    """Check every Calls/connect parameter; InvalidRequest names the first one at fault."""
    bind_account(account.sid)  # the call this request creates logs its first lines here
    from_number = normalize(params.require("From"), field="From")
    caller_raw = params.require("CallerId")
    url, to = params.get("Url"), params.get("To")
    stream = _stream(params, services.settings.allow_private_urls)
    if stream is not None:
        given = [name for name, value in (("Url", url), ("To", to)) if value]
        if given:
            raise InvalidRequest(
                f"StreamUrl and {' and '.join(given)} cannot be used together: "
                "a StreamUrl call streams to the bot instead of running an app "
                "or connecting a number"
            )
    elif not url and not to:
        raise InvalidRequest("Url or To is a mandatory parameter")
    elif url and to:
        raise InvalidRequest(
            "Url and To cannot be used together: Url runs an app on the call, "
            "To connects From to that number; give one of them"
        )
    # Both are cached: the database is read only when they are not.
    caller_id = await _exophone(caller_raw, account, services)
    app_id = await app_in_account(url, account, services) if url else None
    call_type = params.get("CallType")
    if call_type is not None and call_type.lower() != "trans":
        reason = "is no longer supported" if call_type.lower() == "promo" else "must be trans"
        raise InvalidRequest(f"CallType {call_type} {reason}")
    allow_private = services.settings.allow_private_urls
    callback = params.get("StatusCallback")
    if callback:
        callback = validate_url(callback, allow_private=allow_private, field="StatusCallback")
    events = params.events("StatusCallbackEvents")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidRequest(
            f"StatusCallbackEvents: {', '.join(unknown)} is not one of {', '.join(EVENTS)}"
        )
    content_type = (params.get("StatusCallbackContentType") or "multipart/form-data").lower()
    if content_type not in CONTENT_TYPES:
        raise InvalidRequest(
            "StatusCallbackContentType must be multipart/form-data or application/json"
        )
    custom = params.get("CustomField")
    if custom is not None and len(custom) > 128:
        raise InvalidRequest("CustomField must be at most 128 characters")
    channels = (params.get("RecordingChannels") or "single").lower()
    if channels not in ("single", "dual"):
        raise InvalidRequest("RecordingChannels must be single or dual")
    fmt = (params.get("RecordingFormat") or "mp3").lower()
    if fmt not in ("mp3", "mp3-hq", "wav"):  # wav: ringflow's own, 8 kHz 16-bit PCM
        raise InvalidRequest("RecordingFormat must be mp3, mp3-hq or wav")
    wait_url = params.get("WaitUrl")
    if wait_url:
        wait_url = validate_url(wait_url, allow_private=allow_private, field="WaitUrl")
    shape = "stream" if stream is not None else "flow" if url else "numbers"
    detection = params.get("MachineDetection")
    if detection:
        detection = machine_detection(detection)
    return CallRequest(
        account_id=account.id,
        shape=shape,
        from_number=from_number,
        caller_id=caller_id,
        to_number=normalize(to, field="To") if shape == "numbers" and to else None,
        app_id=app_id,
        time_limit=params.get_int("TimeLimit", min=1, max=14400) or DEFAULT_TIME_LIMIT,
        time_out=params.get_int("TimeOut", min=1, max=MAX_TIME_OUT) or DEFAULT_TIME_OUT,
        status_callback=callback,
        callback_events=tuple(events),
        callback_json=CONTENT_TYPES[content_type],
        custom_field=custom,
        record=bool(params.get_bool("Record")),
        recording_channels=channels,
        recording_format=fmt,
        wait_url=wait_url,
        stream_url=stream[0] if stream else None,
        stream_type=stream[1] if stream else None,
        stream_name=stream[2] if stream else None,
        machine_detection=detection or None,
    )


def machine_detection(value: str) -> str:
    """``MachineDetection`` (a ringflow extension, named as Twilio names it) in its canonical
    spelling: ``Enable`` or ``DetectMessageEnd``, given in any case."""
    try:
        return parse_mode(value).value
    except ValueError:
        raise InvalidRequest("MachineDetection must be Enable or DetectMessageEnd") from None


def _stream(params: Params, allow_private: bool) -> tuple[str, str, str | None] | None:
    """StreamUrl, StreamType and StreamName checked, or None for a call without a stream."""
    url = params.get("StreamUrl")
    if url is None:
        for name in ("StreamType", "StreamName"):
            if params.get(name):
                raise InvalidRequest(f"{name} needs StreamUrl")
        return None
    url = check_stream_url(url, allow_private=allow_private)
    kind = (params.get("StreamType") or "bidirectional").strip().lower()
    if kind not in STREAM_TYPES:
        raise InvalidRequest(f"StreamType must be {' or '.join(STREAM_TYPES)}")
    stream_name = params.get("StreamName")
    if stream_name is not None and len(stream_name) > MAX_STREAM_NAME:
        raise InvalidRequest(f"StreamName must be at most {MAX_STREAM_NAME} characters")
    return url, kind, stream_name


async def _exophone(raw: str, account: Account, services: Services) -> str:
    number = normalize(raw, field="CallerId")
    if not await services.accounts.owns_number(None, account.id, number):
        raise InvalidRequest(f"CallerId {display(number)} is not an ExoPhone of this account")
    return number


async def app_in_account(url: str, account: Account, services: Services, field: str = "Url") -> int:
    """The id of the account's app that a flow URL names (``Url`` of Calls/connect or of a
    live call's redirect, ``url`` of a campaign); InvalidRequest naming ``field`` if none."""
    app_id = app_id_from_url(url, field)
    try:
        await services.accounts.app(None, account.id, app_id)
    except NotFound:
        raise InvalidRequest(f"{field}: there is no app {app_id} in this account") from None
    return app_id
