"""Exotel's response bodies: the Call object with its 19 fields in order, lists, errors.

XML for endpoints without a suffix, JSON for ``.json`` ones; errors follow the endpoint's format.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from starlette.responses import Response

from ringflow.calls.callbacks import call_to, detection_fields, fmt_date, on_call_seconds
from ringflow.phone import display
from ringflow.storage.models import Call

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def call_fields(
    call: Call, account_sid: str, tz: str, *, json_uri: bool, status: str | None = None
) -> dict[str, Any]:
    """The Call object's 19 fields, in the order clients expect."""
    uri = f"/v1/Accounts/{account_sid}/Calls/{call.sid}" + (".json" if json_uri else "")
    return {
        "Sid": call.sid,
        "ParentCallSid": None,
        "DateCreated": fmt_date(call.created_at, tz),
        "DateUpdated": fmt_date(call.updated_at, tz),
        "AccountSid": account_sid,
        "To": display(call_to(call)),
        "From": display(call.from_number),
        "PhoneNumberSid": display(call.caller_id),
        "Status": status or call.status,
        "StartTime": fmt_date(call.start_time or call.created_at, tz),
        "EndTime": fmt_date(call.end_time, tz) or None,
        "Duration": call.duration,
        "Price": call.price,
        "Direction": call.direction,
        "AnsweredBy": _answered_by(call),
        "ForwardedFrom": None,
        "CallerName": None,
        "Uri": uri,
        "RecordingUrl": call.recording_url,
    }


def _answered_by(call: Call) -> str | None:
    return call.legs[0].answered_by if call.legs and call.legs[0].answered_by else None


def call_details(call: Call) -> dict[str, Any]:
    """The ``Details`` block of ``?details=true`` (with who answered and the time it took to
    tell, for a call placed with MachineDetection)."""
    statuses = {leg.leg_no: leg.status for leg in call.legs}
    return {
        "ConversationDuration": call.conversation_duration or 0,
        "Leg1Status": statuses.get(1, ""),
        "Leg2Status": statuses.get(2, ""),
        "Legs": [
            {"Leg": {"Id": leg.leg_no, "OnCallDuration": on_call_seconds(leg)}} for leg in call.legs
        ],
        **detection_fields(call),
    }


def _xml_value(parent: ET.Element, name: str, value: Any) -> None:
    element = ET.SubElement(parent, name)
    if isinstance(value, dict):
        for key, inner in value.items():
            _xml_value(element, key, inner)
    elif isinstance(value, list):
        for item in value:
            for key, inner in item.items():
                _xml_value(element, key, inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"  # as in JSON, not Python's True
    elif value is not None:
        element.text = str(value)


def xml_document(body: dict[str, Any]) -> str:
    """``<TwilioResponse>`` with ``body``'s keys as children, pretty-printed like Exotel's."""
    root = ET.Element("TwilioResponse")
    for key, value in body.items():
        _xml_value(root, key, value)
    ET.indent(root, space=" ")
    # Exotel writes empty elements as <ParentCallSid/>, without ElementTree's space.
    return XML_DECLARATION + ET.tostring(root, encoding="unicode").replace(" />", "/>") + "\n"


def respond(
    body: dict[str, Any], *, as_json: bool, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response in the endpoint's format."""
    if as_json:
        return Response(
            json.dumps(body, ensure_ascii=False),
            status_code=status,
            media_type="application/json",
            headers=headers,
        )
    return Response(
        xml_document(body), status_code=status, media_type="application/xml", headers=headers
    )


def error(
    status: int, message: str, *, as_json: bool, headers: dict[str, str] | None = None
) -> Response:
    """A RestException in the endpoint's format."""
    return respond(
        {"RestException": {"Status": status, "Message": message}},
        as_json=as_json,
        status=status,
        headers=headers,
    )
