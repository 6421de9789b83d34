"""A UAC dialog (RFC 3261 12) and how it answers the requests the far end sends inside it.

``Dialog.from_response`` builds the dialog from the 2xx to our INVITE: remote target from the
Contact, route set from Record-Route reversed, tags and CSeq. ``Dialog.request`` builds the
next in-dialog request (12.2.1.1, loose and strict routing); ``Dialog.ack`` the ACK for a 2xx
(a new transaction to the remote target through the route set, same CSeq number and
credentials as the INVITE). ``respond`` answers a request from the far end: BYE, INFO (DTMF),
OPTIONS, re-INVITE (answered with our current SDP), anything else 405.
"""

from __future__ import annotations

import dataclasses

from ringflow.numeric import as_whole
from ringflow.sip.errors import NegotiationError, SipParseError
from ringflow.sip.events import Dtmf, MediaChanged
from ringflow.sip.headers import Headers, NameAddr, Via, quote
from ringflow.sip.message import Request, Response, make_response
from ringflow.sip.sdp import MediaPlan, SessionDescription, answer_offer
from ringflow.sip.transaction import Address
from ringflow.sip.uri import SipUri

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf"
DTMF_EVENTS = "0123456789*#ABCD"
TARGET_REFRESH = {"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"}


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """How this user agent appears on the wire: Via sent-by, Contact, User-Agent."""

    host: str
    port: int
    transport: str = "UDP"
    user: str = "ringflow"
    user_agent: str = "ringflow"

    def via(self, branch: str) -> Via:
        """A Via for a request we send, asking for ``rport`` (RFC 3581)."""
        params = (("branch", branch), ("rport", None))
        return Via(self.transport.upper(), self.host, self.port, params)

    @property
    def contact(self) -> NameAddr:
        """Our Contact."""
        params = () if self.transport.upper() == "UDP" else (("transport", self.transport.lower()),)
        return NameAddr(SipUri(self.host, self.user, self.port, params))


@dataclasses.dataclass
class Dialog:
    """The state of one confirmed dialog we created with an INVITE."""

    call_id: str
    local: str  # our From value, with our tag, exactly as sent
    remote: str  # the To value, with the callee's tag, exactly as received
    local_tag: str
    remote_tag: str
    remote_target: SipUri
    route_set: list[NameAddr]
    local_seq: int
    remote_seq: int | None = None
    credentials: tuple[tuple[str, str], ...] = ()  # the INVITE's Authorization lines

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a 2xx to our INVITE creates (12.1.2)."""
        contacts = response.contacts
        if not contacts:
            raise SipParseError("Contact", "a 2xx to INVITE must carry one")
        remote_tag = response.to.tag
        if not remote_tag:
            raise SipParseError("To", "no tag in a dialog-creating response")
        creds = tuple(
            (n, v)
            for n, v in invite.headers
            if n.lower() in ("authorization", "proxy-authorization")
        )
        return cls(
            invite.call_id,
            invite.headers.get("From") or "",
            response.headers.get("To") or "",
            invite.from_.tag or "",
            remote_tag,
            contacts[0].uri,
            list(reversed(response.record_route)),
            invite.cseq.seq,
            credentials=creds,
        )

    @property
    def key(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag)."""
        return self.call_id, self.local_tag, self.remote_tag

    def next_hop(self) -> Address:
        """Where in-dialog requests go: the first route, else the remote target."""
        return (self.route_set[0].uri if self.route_set else self.remote_target).address

    def request(
        self,
        method: str,
        endpoint: Endpoint,
        branch: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The next in-dialog request; a new CSeq number except for ACK."""
        if method != "ACK":
            self.local_seq += 1
        uri, routes = self._routing()
        headers = Headers([("Via", str(endpoint.via(branch))), ("Max-Forwards", "70")])
        if routes:
            headers.add("Route", ", ".join(routes))
        headers.add("From", self.local)
        headers.add("To", self.remote)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_seq} {method}")
        if method in TARGET_REFRESH:
            headers.add("Contact", str(endpoint.contact))
        if method == "ACK":
            for name, value in self.credentials:
                headers.add(name, value)
        headers.add("User-Agent", endpoint.user_agent)
        if content_type:
            headers.add("Content-Type", content_type)
        return Request(headers=headers, body=body, method=method, uri=uri)

    def ack(self, endpoint: Endpoint, branch: str) -> Request:
        """The ACK for a 2xx to our INVITE (13.2.2.4): the INVITE's CSeq number, new branch."""
        return self.request("ACK", endpoint, branch)

    def _routing(self) -> tuple[SipUri, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        if self.route_set[0].uri.lr:
            return self.remote_target, [str(r) for r in self.route_set]
        # Strict routing (RFC 2543 proxies): the first route becomes the Request-URI.
        first = self.route_set[0].uri
        rest = [str(r) for r in self.route_set[1:]] + [f"<{self.remote_target}>"]
        return first, rest

    def accepts(self, request: Request) -> bool:
        """12.2.2: a request older than the last one seen is out of order."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        self.remote_seq = seq
        return True


@dataclasses.dataclass
class MediaState:
    """The offer/answer state a dialog answers re-INVITEs from."""

    local_sdp: SessionDescription  # the SDP we sent last
    plan: MediaPlan | None = None
    awaiting_answer: bool = False  # we offered in a 200 to an offerless re-INVITE


def respond(
    dialog: Dialog, request: Request, media: MediaState, endpoint: Endpoint
) -> tuple[Response, list[Dtmf | MediaChanged]]:
    """The response to a request from the far end inside ``dialog``, and what it means."""
    if not dialog.accepts(request):
        return make_response(request, 500, headers=(("Retry-After", "1"),)), []
    method = request.method
    if method in ("BYE", "OPTIONS"):
        extra = (("Allow", ALLOW), ("Accept", ACCEPT)) if method == "OPTIONS" else ()
        return make_response(request, 200, headers=extra), []
    if method == "INFO":
        return _info(dialog, request)
    if method == "INVITE":
        return _reinvite(dialog, request, media, endpoint)
    return make_response(request, 405, headers=(("Allow", ALLOW),)), []


def _info(dialog: Dialog, request: Request) -> tuple[Response, list[Dtmf | MediaChanged]]:
    if not request.body.strip():
        return make_response(request, 200), []  # legacy INFO used as a keep-alive
    if request.content_type not in ("application/dtmf-relay", "application/dtmf"):
        return make_response(request, 415, headers=(("Accept", ACCEPT),)), []
    try:
        digit, duration = parse_dtmf(request.content_type, request.body)
    except SipParseError as exc:
        return make_response(request, 400, headers=(("Warning", _warning(exc)),)), []
    return make_response(request, 200), [Dtmf(dialog.call_id, digit, duration)]


def _reinvite(
    dialog: Dialog, request: Request, media: MediaState, endpoint: Endpoint
) -> tuple[Response, list[Dtmf | MediaChanged]]:
    contact = (("Contact", str(endpoint.contact)), ("Allow", ALLOW))
    sdp_type = (("Content-Type", "application/sdp"),)
    if not request.body:
        media.awaiting_answer = True  # the answer comes in the ACK
        return make_response(
            request, 200, headers=contact + sdp_type, body=bytes(media.local_sdp)
        ), []
    try:
        offer = SessionDescription.parse(request.body)
        prefer = media.plan.codec if media.plan else None
        answer, plan = answer_offer(offer, media.local_sdp, prefer)
    except (SipParseError, NegotiationError) as exc:
        status = exc.status if isinstance(exc, NegotiationError) else 488
        return make_response(request, status, headers=(("Warning", _warning(exc)),)), []
    if request.contacts:
        dialog.remote_target = request.contacts[0].uri  # a re-INVITE refreshes the target
    media.local_sdp, media.plan = answer, plan
    return (
        make_response(request, 200, headers=contact + sdp_type, body=bytes(answer)),
        [MediaChanged(dialog.call_id, plan)],
    )


def _warning(exc: Exception) -> str:
    """A Warning header value (RFC 3261 20.43) explaining a refusal."""
    return f"399 ringflow {quote(str(exc)[:100])}"


def parse_dtmf(content_type: str | None, body: bytes) -> tuple[str, int | None]:
    """The digit and duration (ms) in an INFO body: ``Signal=5`` / ``Duration=160``."""
    text = body.decode("ascii", "replace").strip()
    if content_type == "application/dtmf":
        return _digit(text), None
    fields = {}
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq:
            fields[name.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise SipParseError("INFO", "no Signal= in application/dtmf-relay")
    duration = fields.get("duration")
    if duration is not None and not (
        duration.isascii() and duration.isdigit() and len(duration) < 7
    ):
        raise SipParseError("INFO", f"bad Duration {duration[:10]!r}")
    return _digit(fields["signal"]), int(duration) if duration is not None else None


def _digit(text: str) -> str:
    if (code := as_whole(text, 0, len(DTMF_EVENTS) - 1)) is not None:
        return DTMF_EVENTS[code]  # RFC 4733 event codes: 10 is *, 11 is #
    if len(text) == 1 and text.upper() in DTMF_EVENTS:
        return text.upper()
    raise SipParseError("INFO", f"bad DTMF signal {text[:10]!r}")
