"""create_app(settings): builds every part of ringflow and wires them in the ASGI lifespan."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ringflow import __version__
from ringflow.accounts import Accounts
from ringflow.api.admin import AdminApi
from ringflow.api.auth import FailedLogins
from ringflow.api.campaigns import CampaignsApi
from ringflow.api.exotel import ExotelApi
from ringflow.api.observability import CountRequests, Observability
from ringflow.audio_files import MAX_AUDIO_BYTES, AudioStore, FlowHttp
from ringflow.body_limits import BodyLimits
from ringflow.calls.control import CallControl
from ringflow.calls.dispatcher import Dispatcher
from ringflow.calls.housekeeping import Housekeeper
from ringflow.calls.runner import CallRunner
from ringflow.campaigns.service import Campaigns
from ringflow.clock import Clock, make_clock
from ringflow.config import Settings
from ringflow.dashboard.site import Dashboard
from ringflow.drain import stop_in_turn
from ringflow.errors import InvalidRequest
from ringflow.health import Readiness
from ringflow.media.audio import Prompt
from ringflow.media.cache import PromptCache
from ringflow.media.tts import TextToSpeech, TtsError
from ringflow.ratelimit import RateLimiter, make_rate_limiter
from ringflow.recordings import RecordingStore
from ringflow.storage.cache import Lookups
from ringflow.storage.db import Database
from ringflow.streams.service import SharedPlaces, Streams
from ringflow.telephony.carrier import Carrier
from ringflow.telephony.routing import RoutingCarrier
from ringflow.telephony.sandbox import PhoneScript, SandboxCarrier
from ringflow.telephony.sandbox.network import ScriptLookup, Speech
from ringflow.webhooks.deliverer import Deliverer
from ringflow.webhooks.http import OutboundHttp

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Services:
    """Everything a request handler may need, built once per process."""

    settings: Settings
    clock: Clock
    db: Database
    accounts: Accounts
    rate_limiter: RateLimiter
    failed_logins: FailedLogins
    http: OutboundHttp
    deliverer: Deliverer
    carrier: Carrier
    runner: CallRunner
    dispatcher: Dispatcher
    tts: TextToSpeech
    housekeeper: Housekeeper
    recordings: RecordingStore
    audio: AudioStore
    control: CallControl
    streams: Streams
    readiness: Readiness
    campaigns: Campaigns

    @classmethod
    def build(
        cls, settings: Settings, clock: Clock | None = None, carrier: Carrier | None = None
    ) -> Services:
        """Construct (but do not start) every part."""
        clock = clock or make_clock(settings.clock_scale)
        db = Database(settings.database_url, clock, pool_size=settings.database_pool)
        http = OutboundHttp(settings, clock)
        deliverer = Deliverer(db, clock, http, settings)
        prompts = PromptCache(Path(settings.data_dir) / "media")
        tts = TextToSpeech(prompts)
        # Audio files are larger than the answers applets read, so they get their own size cap.
        audio_http = OutboundHttp(settings, clock, max_body=MAX_AUDIO_BYTES)
        audio = AudioStore(settings, db, prompts, audio_http, clock)
        accounts = Accounts(db, clock, tts, Lookups(clock, settings.redis_url))
        carrier = carrier or _carrier(settings, clock, accounts, tts)
        recordings = RecordingStore(settings, db, clock)
        control = CallControl(
            db,
            clock,
            settings.instance_name,
            settings.redis_url,
            deliverer.wake,
            lease=settings.instance_lease,
        )
        streams = Streams(settings, clock, http, SharedPlaces(db, settings.instance_name))
        runner = CallRunner(
            db,
            clock,
            carrier,
            FlowHttp(http, audio),
            deliverer.wake,
            recordings,
            control,
            streams,
            deliverer=deliverer,
            find_app=accounts.find_app,
        )
        dispatcher = Dispatcher(db, clock, settings, runner.run, deliverer.wake, carrier)
        rate_limiter = make_rate_limiter(settings.redis_url, clock)
        return cls(
            settings=settings,
            clock=clock,
            db=db,
            accounts=accounts,
            rate_limiter=rate_limiter,
            failed_logins=FailedLogins(
                rate_limiter, settings.auth_failures_per_client, settings.auth_failures_per_key
            ),
            http=http,
            deliverer=deliverer,
            carrier=carrier,
            runner=runner,
            dispatcher=dispatcher,
            tts=tts,
            housekeeper=Housekeeper(
                db, clock, settings, dispatcher.release, deliverer.wake, prompts
            ),
            recordings=recordings,
            audio=audio,
            control=control,
            streams=streams,
            readiness=Readiness(db, carrier, deliverer, settings.redis_url),
            campaigns=Campaigns(db, clock, settings, dispatcher, deliverer.wake),
        )

    async def start(self) -> None:
        """Resume pending callbacks and reclaim calls a previous run left behind."""
        await self.readiness.warn_if_redis_unreachable()
        if not await self.tts.ready():
            log.warning("text to speech is unavailable: prompts get estimated durations")
        await self.carrier.start()  # a carrier with sockets binds them before any call is placed
        self.accounts.lookups.start()
        self.deliverer.start()
        await self.dispatcher.recover()
        self.control.start()
        self.housekeeper.start()
        self.campaigns.start()

    def stop_admitting(self) -> None:
        """A drain begins: start no more calls, and hand this process's campaigns to others
        (their drivers stop and give up their leases) rather than queue their calls here."""
        self.dispatcher.stop_admitting()
        self.campaigns.hand_over()

    async def stop(self) -> None:
        """End running calls, flush callbacks, close connections: in turn, each step bounded
        (``stop_in_turn``), so one part that hangs cannot keep the others from stopping."""
        await stop_in_turn(
            self.clock,
            (
                ("campaigns", self.campaigns.stop, 10),
                ("housekeeping", self.housekeeper.stop, 10),
                ("calls", self.dispatcher.stop, 30),
                ("call control", self.control.close, 10),
                ("carrier", self.carrier.close, 15),
                # The deliverer bounds its own flush by the callback timeout: this is a backstop.
                ("callbacks", self.deliverer.stop, 2 * self.settings.callback_timeout + 10),
                ("outbound HTTP", self.http.aclose, 5),
                ("audio HTTP", self.audio.http.aclose, 5),
                ("rate limiter", self.rate_limiter.close, 5),
                ("lookups", self.accounts.close, 5),
                ("readiness", self.readiness.close, 5),
            ),
        )
        self.tts.close()
        await self.db.close()


def _carrier(settings: Settings, clock: Clock, accounts: Accounts, tts: TextToSpeech) -> Carrier:
    """The sandbox, SIP, or the sandbox with SIP for the accounts a trunk names."""
    sandbox = SandboxCarrier(clock, _script_lookup(accounts), _speech(tts))
    if not settings.sip_trunks:
        return sandbox
    from ringflow.telephony.sip.carrier import SipCarrier  # loads the media engine: only on use
    from ringflow.telephony.sip.trunks import load_trunks

    sip = SipCarrier(
        clock,
        load_trunks(settings.sip_trunks),
        sip_host=settings.sip_host,
        sip_port=settings.sip_port,
        rtp_ports=(settings.rtp_port_min, settings.rtp_port_max),
        speech=_speech(tts),
        redis_url=settings.redis_url,
    )
    return sip if settings.carrier == "sip" else RoutingCarrier(sandbox, sip)


def _script_lookup(accounts: Accounts) -> ScriptLookup:
    async def lookup(account_sid: str, number: str) -> PhoneScript | None:
        script = await accounts.script_for(account_sid, number)
        return PhoneScript.from_dict(script) if script is not None else None

    return lookup


def _speech(tts: TextToSpeech) -> Speech:
    async def speak(text: str, voice: str | None) -> Prompt | None:
        if not tts.available():
            return None
        try:
            return await tts.speak(text, voice)
        except (TtsError, InvalidRequest) as exc:
            log.warning("cannot speak %r: %s", text[:40], exc)
            return None

    return speak


async def health(request: Request) -> Response:
    """Liveness: answers without touching the database (also the benchmark's baseline)."""
    return PlainTextResponse(f"ringflow {__version__} ok\n")


async def demo_passthru(request: Request) -> Response:
    """The demo app's Passthru target: logs what it got and answers 200."""
    log.info("demo passthru received: %s", dict(request.query_params))
    return PlainTextResponse("ok")


def create_app(
    settings: Settings, *, clock: Clock | None = None, carrier: Carrier | None = None
) -> Starlette:
    """The ASGI application; ``clock`` and ``carrier`` are injectable for tests."""
    services = Services.build(settings, clock, carrier)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        log.info(
            "ringflow %s serving (carrier %s, instance %s)",
            __version__,
            services.carrier.name,
            settings.instance_name,
        )
        try:
            yield
        finally:
            await services.stop()

    routes = [
        Route("/healthz", health),
        *Observability(services).routes(),
        Route("/demo/passthru", demo_passthru),
        *ExotelApi(services).routes(),
        *CampaignsApi(services).routes(),
        *AdminApi(services).routes(),
        *Dashboard(services).routes(),
    ]
    # Bodies are capped as they stream, before any route reads or parses them; requests are
    # counted outside that, so a refused body is counted too.
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(CountRequests), Middleware(BodyLimits)],
    )
    app.state.services = services
    return app
