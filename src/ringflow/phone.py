"""Phone numbers: what clients send, what we store (E.164), what we echo back (spec §1, §7).

Validity rule (a decision, checked against phonenumbers 9.x metadata):

- Numbers in the account's home region (India by default) must pass ``is_valid_number``.
  Every 10-digit Indian mobile in the 6/7/8/9 series, every real STD landline we tried and the
  sandbox numbers (``09999900001``) are valid, while ``is_possible_number`` for India accepts
  any length from 8 to 13 digits, so it would let a dropped or doubled digit through and the
  call would fail later, with no useful message, instead of a 400 now.
- Numbers elsewhere need only be *possible* (right length for their country). We cannot vouch
  for the freshness of 200 countries' range tables, and fictional test numbers such as
  ``+1 555 0100`` are handy on the sandbox; the carrier is the final judge of those.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from ringflow.errors import InvalidRequest

# Longer input is not a phone number; also keeps error messages short.
_MAX_RAW = 64
# Numbers recently read or echoed, with their results: parsing and formatting through
# phonenumbers' metadata is the dearest step of a request, and a call's numbers come back again
# and again (its ExoPhone on every call, each number in the response, the flow's context and
# every callback). Errors are not kept.
_REMEMBERED = 8192
# What may remain after removing the separators people type: ASCII digits only, so that
# phonenumbers' letter-to-digit (1-800-FLOWERS) and non-ASCII digit conversions never apply.
_DIGITS = re.compile(r"\+?[0-9]+")
_SEPARATORS = str.maketrans("", "", "-.()[]")
_SIP = re.compile(r"sip:[^\s<>\"]+", re.IGNORECASE)

_LENGTH_PROBLEMS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "the wrong length",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "missing its area (STD) code",
    ValidationResult.INVALID_COUNTRY_CODE: "using an unknown country code",
}


@functools.lru_cache(maxsize=_REMEMBERED)
def normalize(raw: str, region: str = "IN", *, field: str = "From") -> str:
    """Return ``raw`` as E.164 (or a ``sip:`` URI); raise InvalidRequest naming ``field``."""
    text = raw.strip()
    if not text:
        raise InvalidRequest(f"{field} must not be empty")
    if len(text) > _MAX_RAW:
        raise InvalidRequest(f"{field} is too long to be a phone number ({len(text)} characters)")
    if text[:4].lower() == "sip:":
        return _sip_uri(text, field)
    compact = "".join(c for c in text if not c.isspace()).translate(_SEPARATORS)
    if not _DIGITS.fullmatch(compact):
        raise _bad(
            field,
            text,
            "it may contain only digits, a leading '+', spaces, hyphens, dots and brackets",
        )
    if compact.startswith("00"):
        # International dialling prefix as written in India and most of the world.
        compact = "+" + compact[2:]
    try:
        number = phonenumbers.parse(compact, region)
    except NumberParseException as exc:
        raise _bad(field, text, _parse_problem(exc)) from exc
    _check(number, region, field, text)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=_REMEMBERED)
def display(e164: str, region: str = "IN") -> str:
    """Return a stored number as echoed on the wire: national digits at home, else E.164."""
    if e164[:4].lower() == "sip:":
        return e164
    if not e164.startswith("+"):
        raise ValueError(f"not an E.164 number: {e164!r}")
    number = phonenumbers.parse(e164, None)
    if number.country_code != phonenumbers.country_code_for_region(region):
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    # The national format is how the number is dialled at home: for Indian mobiles and
    # landlines that is 0 + 10 digits (spec §7); toll-free 1800 numbers take no 0.
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    return "".join(c for c in national if c.isdigit())


def _sip_uri(text: str, field: str) -> str:
    if not _SIP.fullmatch(text):
        raise _bad(field, text, "a sip: URI needs a user or host and no spaces")
    return "sip:" + text[4:]


def _check(number: phonenumbers.PhoneNumber, region: str, field: str, text: str) -> None:
    if number.national_number == 0:
        raise _bad(field, text, "it has no digits after the country code")
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != ValidationResult.IS_POSSIBLE:
        raise _bad(field, text, f"it is {_LENGTH_PROBLEMS.get(reason, 'the wrong length')}")
    home = phonenumbers.country_code_for_region(region)
    if number.country_code == home and not phonenumbers.is_valid_number(number):
        raise _bad(field, text, f"it matches no {region} numbering range")


def _parse_problem(exc: NumberParseException) -> str:
    if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        return "it has an unknown country code"
    if exc.error_type in (
        NumberParseException.TOO_SHORT_NSN,
        NumberParseException.TOO_SHORT_AFTER_IDD,
    ):
        return "it is too short"
    if exc.error_type == NumberParseException.TOO_LONG:
        return "it is too long"
    return "it does not look like a phone number"


def _bad(field: str, text: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{field} {text!r} is not a valid phone number: {why}")
