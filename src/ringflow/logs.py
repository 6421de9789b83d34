"""Log redaction: no secret reaches a log line, whoever wrote it.

A signed recording link is a bearer credential for up to a week, and the access log writes every
request's full path with its query string; customers put tokens in StatusCallback and passthru
URLs, which failure messages quote. Rather than trusting every call site, one filter on every
handler rewrites each record's final text: the values of secret-looking query and form
parameters (``Signature``, ``*token*``, ``password``, ``secret``, ``csrf``, ...), the password of
``user:password@host`` URLs, and ``Authorization``/``Cookie`` header values become
``[redacted]``. Names and the rest of the URL stay, so a log line still says what happened.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# A parameter whose name says it carries a secret: its value runs to the next separator.
_SECRET_PARAM = re.compile(
    r"(?i)((?:^|[?&;\s\"'(,])(?:signature|sig|[a-z0-9_.-]*token|password|passwd|pwd|secret|"
    r"[a-z0-9_.-]*secret|csrf|session|api[_-]?key[_-]?secret|auth)=)[^&;\s\"')<>,]*"
)
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@/\s]*(@)")
# A header as text ("Cookie: a=b; c=d") or in a repr ("'cookie': 'a=b'"): its whole value.
_HEADER = re.compile(r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie)"
                     r"(['\"]?\s*[:=]\s*['\"]?(?:(?:basic|bearer|digest)\s+)?)[^'\"\r\n]*")


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
                record.args = {k: redact(v) if isinstance(v, str) else v
                               for k, v in record.args.items()}
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
