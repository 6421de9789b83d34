"""Campaign settings without a server: retries, calling hours, pacing and the body's forms."""

from __future__ import annotations

import datetime as dt

import pytest

from ringflow.campaigns.hours import CallingHours
from ringflow.campaigns.spec import Retries, parse_create, unwrap
from ringflow.errors import InvalidRequest

KOLKATA = "Asia/Kolkata"
BODY = {"from": "09810000001", "caller_id": "08039591234", "url": "http://x/exoml/start/1"}


def ist(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """A moment of December 2026 in Kolkata (the 7th is a Monday), as UTC."""
    local = dt.datetime(2026, 12, day, hour, minute, tzinfo=dt.timezone(dt.timedelta(hours=5.5)))
    return local.astimezone(dt.UTC)


def test_linear_waits_the_same_after_each_attempt_and_exponential_doubles_it():
    linear = Retries.parse({"number_of_retries": 3, "interval_mins": 10})
    exponential = Retries.parse(
        {"number_of_retries": 3, "interval_mins": 10, "mechanism": "exponential"}
    )
    minutes = dt.timedelta(minutes=1)
    assert [linear.wait_after(n) / minutes for n in (1, 2, 3)] == [10, 10, 10]
    assert [exponential.wait_after(n) / minutes for n in (1, 2, 3)] == [10, 20, 40]


def test_a_number_is_called_again_only_for_the_statuses_asked_and_the_retries_left():
    retries = Retries.parse({"number_of_retries": 2, "on_status": "busy, no_answer"})
    assert retries.on_status == ("busy", "no-answer")
    assert retries.again(1, "busy") and retries.again(2, "no-answer")
    assert not retries.again(3, "busy")  # the first call and two retries are over
    assert not retries.again(1, "failed") and not retries.again(1, "completed")
    assert not Retries.parse(None).again(1, "busy")  # no retries unless asked


def test_calling_hours_take_days_ranges_lists_and_daily():
    hours = CallingHours.parse(
        {"mon-fri": "09:00-18:00", "sat,sun": ["10:00-12:00", "15:00-16:00"]}
    )
    assert hours.to_json() == {
        **{day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        "sat": ["10:00-12:00", "15:00-16:00"],
        "sun": ["10:00-12:00", "15:00-16:00"],
    }
    assert hours.is_open(ist(7, 9), KOLKATA) and not hours.is_open(ist(7, 18), KOLKATA)
    assert not hours.is_open(ist(12, 13), KOLKATA) and hours.is_open(ist(12, 15, 30), KOLKATA)
    assert CallingHours.parse({"daily": "00:00-24:00"}).is_open(ist(13, 23, 59), KOLKATA)
    assert CallingHours.parse({"fri-mon": "09:00-10:00"}).is_open(ist(13, 9), KOLKATA)  # Sunday


def test_the_next_change_is_the_windows_end_or_the_next_windows_start():
    hours = CallingHours.parse({"mon-fri": "09:00-18:00"})
    assert hours.next_change(ist(7, 12), KOLKATA) == ist(7, 18)  # open: it closes at 18:00
    assert hours.next_change(ist(7, 19), KOLKATA) == ist(8, 9)  # closed: Tuesday 09:00
    assert hours.next_change(ist(11, 19), KOLKATA) == ist(14, 9)  # Friday night: Monday
    # A window to midnight that goes on from midnight the next day does not close at 24:00.
    nights = CallingHours.parse({"mon": "20:00-24:00", "tue": "00:00-02:00"})
    assert nights.next_change(ist(7, 21), KOLKATA) == ist(8, 2)


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"mon-fri": "18:00-09:00"}, "must end after it starts"),
        ({"mon": ["09:00-12:00", "11:00-13:00"]}, "overlap"),
        ({"mon": "9-5"}, "is not a window"),
        ({"mon": "09:00-25:00"}, "is not a time of day"),
        ({"funday": "09:00-10:00"}, "is not a day"),
        ([], "must be an object"),
    ],
)
def test_bad_calling_hours_say_what_is_wrong(hours, message):
    with pytest.raises(InvalidRequest, match=message):
        CallingHours.parse(hours)


def test_pace_comes_from_calls_per_second_or_a_custom_throttle_a_minute():
    assert parse_create(BODY, allow_private=False).calls_per_second == 1.0
    assert (
        parse_create({**BODY, "calls_per_second": 20}, allow_private=False).calls_per_second == 20
    )
    custom = parse_create({**BODY, "mode": "custom", "throttle": 30}, allow_private=False)
    assert custom.calls_per_second == 0.5
    with pytest.raises(InvalidRequest, match="mode custom needs throttle"):
        parse_create({**BODY, "mode": "custom"}, allow_private=False)


def test_numbers_come_as_a_list_or_a_comma_separated_string_and_a_body_wrapped_or_bare():
    spec = parse_create({**BODY, "from": "09810000001, +91 98100 00002"}, allow_private=False)
    assert spec.numbers == ("+919810000001", "+919810000002")
    assert unwrap({"campaigns": [BODY]}) == unwrap(BODY) == BODY
    with pytest.raises(InvalidRequest, match="exactly one"):
        unwrap({"campaigns": [BODY, BODY]})
