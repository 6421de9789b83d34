"""Tables. Storage holds data only: no call logic, no HTTP."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UTC = dt.UTC
# The kind of timeline step that asks for a live call's hang-up or redirect (calls/control.py).
CONTROL_REQUEST = "control.request"
_CONTROL_REQUESTS = text(f"kind = '{CONTROL_REQUEST}'")  # the rows that are requests


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


# BigInteger primary keys become INTEGER on SQLite so they autoincrement there too.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64), default="Asia/Kolkata")
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent_streams: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Calls the account may have waiting for a line; None: the server's RINGFLOW_QUEUE_LIMIT.
    max_queued_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime]
    # The dashboard sign-in of the account (scrypt, see dashboard/auth.py); None: no sign-in.
    dashboard_password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Operator(Base):
    """A dashboard sign-in for the instance's operator, who sees every account."""

    __tablename__ = "operators"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    account: Mapped[Account] = relationship(lazy="joined")


class PhoneNumber(Base):
    """An ExoPhone: a company number an account may use as CallerId."""

    __tablename__ = "phone_numbers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(64), unique=True)
    friendly_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime]


class App(Base):
    """An app (flow): a validated graph of applets. ``id`` is the public app id in ``Url``."""

    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    graph: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_account_created", "account_id", "created_at", "id"),
        # Admission's count of an account's live calls, whether any wait and which first:
        # read without the account's finished calls, however many it has.
        Index("ix_calls_account_status", "account_id", "status", "created_at", "id"),
        Index("ix_calls_status_owner", "status", "owner"),
        # A campaign calls each of its numbers once per attempt, whichever process places it.
        UniqueConstraint(
            "campaign_number_id", "campaign_attempt", name="uq_calls_campaign_attempt"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    shape: Mapped[str] = mapped_column(String(16))  # "flow", "numbers" or "stream"
    from_number: Mapped[str] = mapped_column(String(128))
    to_number: Mapped[str] = mapped_column(String(128))
    caller_id: Mapped[str] = mapped_column(String(64))
    app_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(32), default="outbound-api")
    time_limit: Mapped[int] = mapped_column(Integer)
    time_out: Mapped[int] = mapped_column(Integer)
    status_callback: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_events: Mapped[list[Any]] = mapped_column(default=list)
    callback_json: Mapped[bool] = mapped_column(Boolean, default=False)
    custom_field: Mapped[str | None] = mapped_column(String(128), nullable=True)
    record: Mapped[bool] = mapped_column(Boolean, default=False)
    recording_channels: Mapped[str] = mapped_column(String(8), default="single")
    recording_format: Mapped[str] = mapped_column(String(8), default="mp3")
    wait_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A StreamUrl call (shape "stream"): the bot's URL as given (credentials included, so it
    # is never shown; the timeline has it without them), its type and name.
    stream_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    stream_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stream_name: Mapped[str | None] = mapped_column(String(32), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    start_time: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    end_time: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    duration: Mapped[int | None] = mapped_column(Integer, nullable=True)
    conversation_duration: Mapped[int | None] = mapped_column(Integer, nullable=True)
    price: Mapped[str | None] = mapped_column(String(16), nullable=True)
    recording_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A campaign's call: the campaign, the number of its list, and which attempt this is.
    campaign_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    campaign_number_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    campaign_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Answering machine detection asked for ("Enable" or "DetectMessageEnd"; None: not asked)
    # and, once it has decided (leg 1's ``answered_by``), how long that took after the answer.
    machine_detection: Mapped[str | None] = mapped_column(String(24), nullable=True)
    machine_detection_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)

    legs: Mapped[list[Leg]] = relationship(
        back_populates="call", order_by="Leg.leg_no", lazy="selectin", cascade="all"
    )


class Leg(Base):
    __tablename__ = "legs"
    __table_args__ = (UniqueConstraint("call_id", "leg_no"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    leg_no: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="")
    cause: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # human (as Exotel reports every answer), or what answering machine detection found:
    # machine_start, machine_end_beep, machine_end_silence, unknown.
    answered_by: Mapped[str | None] = mapped_column(String(24), nullable=True)
    dialed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    call: Mapped[Call] = relationship(back_populates="legs")


class CallEvent(Base):
    """One step of a call's timeline: a leg event, an applet entered, an HTTP request made."""

    __tablename__ = "call_events"
    __table_args__ = (
        # Live call control's poll, twice a second in every process: the requests written for
        # the calls it carries, not the rest of their timelines nor anyone else's.
        Index(
            "ix_call_events_control_requests",
            "call_id",
            postgresql_where=_CONTROL_REQUESTS,
            sqlite_where=_CONTROL_REQUESTS,
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Recording(Base):
    """An audio file of a call: a voicemail, or a conversation Connect recorded.

    ``path`` is relative to the data directory's ``recordings/`` folder, so the directory can
    move. ``format`` is mp3, mp3-hq or wav; ``channels`` single or dual.
    """

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(8))
    channels: Mapped[str] = mapped_column(String(8), default="single")
    duration: Mapped[float] = mapped_column(Float)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime]


class OutboxMessage(Base):
    """A webhook waiting to be delivered (or delivered). Written with the transition."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_destination", "destination", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    call_id: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), nullable=True, index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    # scheme://host:port of url: delivery limits and backs off each receiving server on its own
    destination: Mapped[str] = mapped_column(String(300), default="", server_default="")
    content_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending/delivered/failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    lease_until: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class OutboxAttempt(Base):
    """One delivery attempt and what the receiver answered."""

    __tablename__ = "outbox_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime]
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer)


class SandboxPhone(Base):
    """A scripted virtual phone on the sandbox network.

    ``scope`` is an account SID (the script applies to that account's calls) or "" (all accounts).
    """

    __tablename__ = "sandbox_phones"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[str] = mapped_column(String(128), primary_key=True)
    script: Mapped[dict[str, Any]]
    updated_at: Mapped[dt.datetime]


class Campaign(Base):
    """A list of numbers called at a pace with one app (Exotel's v2 campaigns).

    ``status``: Created, Scheduled, InProgress, Paused, Completed, Archived. A paused campaign's
    ``pause_reason`` is ``user`` (a PUT pause: only a resume moves it) or ``calling_hours``
    (it resumes by itself when its window opens). ``driver`` is the process that places its
    calls while ``lease_until`` lies ahead; another process takes it over after that.
    ``wake_at``: from when the campaign needs a driver (None: not until a request changes it);
    an idle campaign (scheduled, paused, waiting for retries) holds no driver.
    """

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_account_created", "account_id", "created_at", "id"),
        Index("ix_campaigns_wake_at", "wake_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    pause_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    caller_id: Mapped[str] = mapped_column(String(64))
    app_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stream_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    stream_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    calls_per_second: Mapped[float] = mapped_column(Float)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    # {"number_of_retries", "interval_mins", "mechanism", "on_status"}
    retries: Mapped[dict[str, Any]]
    calling_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    send_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    end_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    custom_field: Mapped[str | None] = mapped_column(String(128), nullable=True)
    machine_detection: Mapped[str | None] = mapped_column(String(16), nullable=True)
    status_callback: Mapped[str | None] = mapped_column(Text, nullable=True)
    call_status_callback: Mapped[str | None] = mapped_column(Text, nullable=True)
    call_schedule_callback: Mapped[str | None] = mapped_column(Text, nullable=True)
    numbers_total: Mapped[int] = mapped_column(Integer, default=0)
    driver: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    wake_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class CampaignNumber(Base):
    """One number of a campaign and how calling it went.

    ``state``: pending, in_progress, retrying (waits for ``next_attempt_at``), or one of the
    final completed, busy, no_answer, failed. ``attempts`` counts calls placed; ``call_id``
    is the latest.
    """

    __tablename__ = "campaign_numbers"
    __table_args__ = (
        UniqueConstraint("campaign_id", "position"),
        Index("ix_campaign_numbers_state", "campaign_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(128))
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    call_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    updated_at: Mapped[dt.datetime]


class ContactList(Base):
    """A list of numbers uploaded as CSV, for campaigns to call (``lists``)."""

    __tablename__ = "contact_lists"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime]


class Contact(Base):
    """One row of a contact list: its number and the row's other columns."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("list_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("contact_lists.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(128))
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ContactUpload(Base):
    """One CSV upload into a contact list and what became of its rows."""

    __tablename__ = "contact_uploads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sid: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    list_id: Mapped[int] = mapped_column(ForeignKey("contact_lists.id", ondelete="CASCADE"))
    file_name: Mapped[str] = mapped_column(String(200))
    total: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    failures: Mapped[list[Any]] = mapped_column(default=list)  # [{"row", "value", "reason"}]
    created_at: Mapped[dt.datetime]


class Instance(Base):
    """A running ringflow process; its heartbeat tells others whether its calls are orphaned."""

    __tablename__ = "instances"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[dt.datetime]
    heartbeat_at: Mapped[dt.datetime]


class LiveStream(Base):
    """A stream to a bot open now, in whichever process carries it (see ``storage/streams.py``).

    The rows are the account's count against its limit on concurrent streams, shared by every
    process; a row leaves when its stream ends, or when its process is found silent.
    """

    __tablename__ = "live_streams"
    __table_args__ = (Index("ix_live_streams_account", "account_id", "started_at"),)

    stream_sid: Mapped[str] = mapped_column(String(34), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    call_sid: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(200), index=True)  # the process carrying it
    url: Mapped[str] = mapped_column(Text)  # without credentials
    bidirectional: Mapped[bool] = mapped_column(Boolean)
    track: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime]
