"""Log redaction: no secret reaches a log line, whoever wrote it.

A signed recording link is a bearer credential for up to a week, and the access log writes every
request's full path with its query string; customers put tokens in StatusCallback and passthru
URLs, which failure messages quote. Rather than trusting every call site, one filter on every
handler rewrites each record's final text: the values of secret-looking query and form
parameters (``Signature``, ``*token*``, ``password``, ``secret``, ``csrf``, ...), the password of
``user:password@host`` URLs, and ``Authorization``/``Cookie`` header values become
``[redacted]``. Names and the rest of the URL stay, so a log line still says what happened.

Every line, ringflow's and uvicorn's, goes through one handler on the root logger (``configure``)
in one format: text, or with ``RINGFLOW_LOG_FORMAT=json`` one JSON object a line. A line logged
while a call runs carries the call's SID and account: the dispatcher binds them to the call's
task (``bind_call``), and ``CallFilter`` copies them from that context variable onto each record,
so no function passes a SID to its logger.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterator

REDACTED = "[redacted]"

# A parameter whose name says it carries a secret: its value runs to the next separator.
_SECRET_PARAM = re.compile(
    r"(?i)((?:^|[?&;\s\"'(,])(?:signature|sig|[a-z0-9_.-]*token|password|passwd|pwd|secret|"
    r"[a-z0-9_.-]*secret|csrf|session|api[_-]?key[_-]?secret|auth)=)[^&;\s\"')<>,]*"
)
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@/\s]*(@)")
# A header as text ("Cookie: a=b; c=d") or in a repr ("'cookie': 'a=b'"): its whole value.
_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie)"
    r"(['\"]?\s*[:=]\s*['\"]?(?:(?:basic|bearer|digest)\s+)?)[^'\"\r\n]*"
)


def redact(text: str) -> str:
    """``text`` with every secret-looking value replaced by ``[redacted]``."""
    if "=" not in text and "@" not in text and ":" not in text:
        return text  # the common case: nothing that could carry a secret
    text = _SECRET_PARAM.sub(rf"\1{REDACTED}", text)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}\2", text)
    return _HEADER.sub(rf"\1\2{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's format string and string arguments through ``redact``.

    The arguments keep their shape: formatters such as uvicorn's access log unpack
    ``record.args`` themselves (client, method, path, version, status).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; only its text changes."""
        if not record.args:
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
        else:  # the format string is code, not data: only the arguments can carry a secret
            if isinstance(record.args, tuple):
                record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            elif isinstance(record.args, dict):
                record.args = {
                    k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
                }
            if not _clean(record):
                # An argument that is not a string (a URL object, an exception) rendered a
                # secret: keep the whole message, redacted, instead of its parts.
                record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _clean(record: logging.LogRecord) -> bool:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a format its own formatter applies (uvicorn's access log)
        return True
    return redact(message) == message


def redact_logs(*names: str) -> None:
    """Put the filter on every handler of the root logger and of the named loggers.

    Call it after logging is configured (uvicorn configures its own handlers when its Config is
    built). A filter on a handler sees records propagated from every child logger, which a
    filter on a logger would not.
    """
    the_filter = RedactingFilter()
    for name in ("", *names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(the_filter)


# The call a line is about, as (call SID or None, account SID or None: a task that only knows
# the call, such as a callback's delivery before its account is read): set when a call's task
# starts (its whole life runs in that task's context, and tasks it creates inherit it), read by
# CallFilter. Never passed around.
_CALL: contextvars.ContextVar[tuple[str | None, str | None] | None] = contextvars.ContextVar(
    "ringflow_call", default=None
)
# ringflow's lines about a call begin with "call <SID>": the text says which call, even where no
# call's context is set yet (the request that creates it) or another call's is (a call whose end
# lets a queued one of the same account start).
_NAMED = re.compile(r"^call ([0-9a-z]{32})\b")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind_call(call_sid: str, account_sid: str | None) -> None:
    """Mark the rest of the current task (and the tasks it starts) as about this call (of
    this account, when the task knows it)."""
    _CALL.set((call_sid, account_sid))


def bind_account(account_sid: str) -> None:
    """Mark the rest of the current task (a request) as about this account's calls."""
    _CALL.set((None, account_sid))


@contextlib.contextmanager
def call_context(call_sid: str, account_sid: str) -> Iterator[None]:
    """Lines logged inside the block (and by tasks started there) are about this call."""
    token = _CALL.set((call_sid, account_sid))
    try:
        yield
    finally:
        _CALL.reset(token)


class CallFilter(logging.Filter):
    """Adds ``instance``, and ``call_sid`` and ``account`` on a call's lines, to each record."""

    def __init__(self, instance: str):
        super().__init__()
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; it gains the fields."""
        record.instance = self.instance
        if hasattr(record, "call_sid"):
            return True  # given by the caller (``extra=``)
        call_sid, account = _CALL.get() or (None, None)
        named = _NAMED.match(_first_text(record))
        if named:
            call_sid = named[1]
        if call_sid is not None:
            record.call_sid = call_sid
        if account is not None:
            record.account = account
        return True


def _first_text(record: logging.LogRecord) -> str:
    """The start of the message: ``call %s`` with its first argument, without formatting all."""
    msg = str(record.msg)
    if msg.startswith("call %s") and isinstance(record.args, tuple) and record.args:
        return f"call {record.args[0]}"
    return msg[:40]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, instance, call_sid, account."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (newlines in messages and tracebacks escaped)."""
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "instance": getattr(record, "instance", None),
        }
        for field in ("call_sid", "account"):
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info and not record.exc_text:  # RedactingFilter normally renders it first
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str, instance: str) -> None:
    """One handler on the root logger for every line: ringflow's, uvicorn's, the libraries'.

    ``fmt`` is ``text`` or ``json``. uvicorn must then be started with ``log_config=None``, so
    its loggers keep no handlers of their own and propagate here.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(CallFilter(instance))
    handler.addFilter(RedactingFilter())  # after CallFilter: it must see the final text
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)  # a warning is a line in the same format, not raw stderr
    # httpx logs every request at INFO; ringflow logs the ones that matter with the call's SID.
    logging.getLogger("httpx").setLevel(logging.WARNING)
