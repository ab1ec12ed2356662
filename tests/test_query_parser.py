"""The search query parser: constraints read from free text, and never an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online.query_parser import (
    NEAR_ME_KM,
    approximate_timezone,
    parse_number,
    parse_query,
)

# Friday 1 May 2026, 15:00 in New York (UTC-4); the parser is given the zone explicitly.
NY = timezone(timedelta(hours=-4))
NOW = datetime(2026, 5, 1, 19, 0, tzinfo=UTC)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def parse(text: str):
    return parse_query(text, NOW, NY)


def test_the_issue_example() -> None:
    q = parse("spa under 50 tonight within 2 km")
    assert q.category == "spa"
    assert q.max_price == 50.0 and q.min_price is None and q.currency is None
    assert q.radius_km == 2.0
    assert q.window is not None and q.window.label == "tonight"
    assert q.window.start == local("2026-05-01T18:00") and q.window.end == local("2026-05-02T02:00")
    assert q.free_text == "spa"
    assert q.phrases == ("under 50", "tonight", "within 2 km")
    understood = q.understood()
    assert understood["category"] == "spa" and understood["max_price"] == 50.0
    assert understood["time"]["label"] == "tonight" and understood["radius_km"] == 2.0


@pytest.mark.parametrize(
    ("text", "max_price", "min_price", "currency"),
    [
        ("massage under $40", 40.0, None, "USD"),
        ("massage below 40 dollars", 40.0, None, "USD"),
        ("dinner less than €25", 25.0, None, "EUR"),
        ("pizza under ₹500", 500.0, None, "INR"),
        ("thali under rs 300", 300.0, None, "INR"),
        ("tea max 5 pounds", 5.0, None, "GBP"),
        ("facial up to 1,200 INR", 1200.0, None, "INR"),
        ("spa for 40 dollars or less", 40.0, None, "USD"),
        ("spa <= 30", 30.0, None, None),
        ("massage under fifty dollars", 50.0, None, "USD"),
        ("spa under two hundred and fifty rupees", 250.0, None, "INR"),
        ("tickets over 20 euros", None, 20.0, "EUR"),
        ("concert at least $15", None, 15.0, "USD"),
        ("jazz between $20 and $40", 40.0, 20.0, "USD"),
        ("spa 20-40$", 40.0, 20.0, "USD"),
        ("free museum", 0.0, None, None),
        ("$30 massage", 30.0, None, "USD"),
        ("watch under 2k", 2000.0, None, None),
    ],
)
def test_price_bounds_and_currencies(
    text: str, max_price: float | None, min_price: float | None, currency: str | None
) -> None:
    q = parse(text)
    assert (q.max_price, q.min_price, q.currency) == (max_price, min_price, currency)


@pytest.mark.parametrize(
    ("text", "km"),
    [
        ("coffee within 2 km", 2.0),
        ("coffee 2km", 2.0),
        ("coffee within 500 m", 0.5),
        ("coffee within 800 meters", 0.8),
        ("bar within a mile", 1.609),
        ("haircut half a mile from me", 0.805),
        ("sushi 10 min walk", 0.8),  # 10 minutes at walking speed (4.8 km/h)
        ("sushi 15 minutes drive", 5.5),  # at city speed (22 km/h)
        ("coffee within 3 blocks", 0.24),
        ("phone repair within walking distance", 1.5),
        ("gym near me", NEAR_ME_KM),
        ("gym nearby", NEAR_ME_KM),
        ("gym close by", NEAR_ME_KM),
    ],
)
def test_distances(text: str, km: float) -> None:
    assert parse(text).radius_km == pytest.approx(km, abs=1e-3)


def test_swapped_bounds_are_put_in_order() -> None:
    q = parse("dinner over 50 under 20")
    assert (q.min_price, q.max_price) == (20.0, 50.0)


def test_near_me_is_flagged_and_an_explicit_distance_wins() -> None:
    q = parse("massage near me within 1 km")
    assert q.near_me is True and q.radius_km == 1.0
    assert parse("massage").near_me is False and parse("massage").radius_km is None


def test_k_after_a_number_is_money_unless_it_is_a_radius() -> None:
    q = parse("spa under 50k")
    assert q.max_price == 50000.0 and q.radius_km is None
    assert parse("spa within 5k").radius_km == 5.0


@pytest.mark.parametrize(
    ("text", "label", "start", "end"),
    [
        ("coffee now", "now", "2026-05-01T15:00", "2026-05-01T15:00"),
        ("gym open now", "now", "2026-05-01T15:00", "2026-05-01T15:00"),
        ("spa tonight", "tonight", "2026-05-01T18:00", "2026-05-02T02:00"),
        ("spa this evening", "this evening", "2026-05-01T17:00", "2026-05-01T22:00"),
        # The morning is over: the window starts now and is empty rather than in the past.
        ("spa this morning", "this morning", "2026-05-01T15:00", "2026-05-01T15:00"),
        ("museum today", "today", "2026-05-01T15:00", "2026-05-02T00:00"),
        ("yoga tomorrow morning", "tomorrow morning", "2026-05-02T06:00", "2026-05-02T12:00"),
        ("yoga tomorrow", "tomorrow", "2026-05-02T00:00", "2026-05-03T00:00"),
        ("brunch this weekend", "this weekend", "2026-05-02T00:00", "2026-05-04T00:00"),
        ("brunch weekend", "this weekend", "2026-05-02T00:00", "2026-05-04T00:00"),
        ("jazz on saturday", "saturday", "2026-05-02T00:00", "2026-05-03T00:00"),
        ("jazz monday evening", "monday evening", "2026-05-04T17:00", "2026-05-04T22:00"),
        ("coffee in 2 hours", "in 2 hours", "2026-05-01T15:00", "2026-05-01T17:00"),
        ("massage in an hour", "in an hour", "2026-05-01T15:00", "2026-05-01T16:00"),
        ("coffee in the next 30 minutes", "the next 30 minutes", "2026-05-01T15:00", "2026-05-01T15:30"),
        ("football at 8pm", "at 8pm", "2026-05-01T20:00", "2026-05-01T21:00"),
        ("dinner at 19:30", "at 19:30", "2026-05-01T19:30", "2026-05-01T20:30"),
        # 9 am has passed today: the next 9 am.
        ("breakfast at 9 am", "at 9 am", "2026-05-02T09:00", "2026-05-02T10:00"),
        ("brunch sunday at 11:30", "sunday at 11:30", "2026-05-03T11:30", "2026-05-03T12:30"),
        ("drinks at midnight", "at midnight", "2026-05-02T00:00", "2026-05-02T01:00"),
    ],
)
def test_time_windows_in_the_users_zone(text: str, label: str, start: str, end: str) -> None:
    window = parse(text).window
    assert window is not None
    assert window.label == label
    assert window.start == local(start) and window.end == local(end)
    assert window.start.tzinfo == UTC  # handed on in UTC


def test_tonight_after_midnight_is_the_night_still_going_on() -> None:
    late = datetime(2026, 5, 2, 5, 30, tzinfo=UTC)  # 01:30 in New York
    window = parse_query("bar tonight", late, NY).window
    assert window.start == late and window.end == local("2026-05-02T05:00")


def test_weekend_said_on_a_saturday_starts_now() -> None:
    saturday = datetime(2026, 5, 2, 16, 0, tzinfo=UTC)  # Saturday noon in New York
    window = parse_query("brunch this weekend", saturday, NY).window
    assert window.start == saturday and window.end == local("2026-05-04T00:00")
    nxt = parse_query("brunch next weekend", saturday, NY).window
    assert nxt.start == local("2026-05-09T00:00")


def test_voice_transcript_fillers_and_spoken_numbers() -> None:
    q = parse("um I'd like a, uh, massage under fifty dollars tonight please")
    assert q.free_text == "massage"
    assert q.category == "spa" and q.max_price == 50.0 and q.currency == "USD"
    assert q.window.label == "tonight"


def test_cheap_is_a_preference_not_a_bound() -> None:
    q = parse("cheap massage near me this weekend")
    assert q.cheap is True and q.max_price is None
    assert q.near_me is True and q.free_text == "massage"
    assert q.window.label == "this weekend"


def test_words_that_only_look_like_constraints_stay_free_text() -> None:
    q = parse("spa under a bridge")
    assert q.max_price is None and q.free_text == "spa under bridge"
    q = parse("concert 2 hours")  # no "in": not a time window
    assert q.window is None and "concert" in q.free_text
    q = parse("best ramen in town")
    assert q.window is None and q.radius_km is None and q.free_text == "best ramen town"


def test_nothing_understood_keeps_the_whole_text() -> None:
    q = parse("ayurvedic hammam ritual")
    assert q.free_text == "ayurvedic hammam ritual"
    assert q.category == "spa"
    assert q.understood() == {"free_text": "ayurvedic hammam ritual", "category": "spa", "phrases": []}


@pytest.mark.parametrize("text", ["", "   ", "!!!", "\x00\x01"])
def test_empty_and_junk(text: str) -> None:
    q = parse(text)
    assert q.free_text == "" and q.category is None and q.window is None and q.phrases == ()


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_query("spa", datetime(2026, 5, 1, 12, 0))


def test_default_zone_is_utc() -> None:
    window = parse_query("spa tonight", NOW).window
    assert window.start == datetime(2026, 5, 1, 19, 0, tzinfo=UTC)  # already evening in UTC
    assert window.end == datetime(2026, 5, 2, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(("lon", "hours"), [(-73.98, -5), (2.35, 0), (72.88, 5), (139.7, 9), (-179.9, -12)])
def test_approximate_timezone_from_longitude(lon: float, hours: int) -> None:
    assert approximate_timezone(lon).utcoffset(None) == timedelta(hours=hours)


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12.0), ("1,200", 1200.0), ("2.5", 2.5), ("1.5k", 1500.0), ("twenty five", 25.0),
     ("a hundred", 100.0), ("two hundred and fifty", 250.0), ("three thousand", 3000.0), ("half a", 0.5),
     ("a couple of", 2.0), ("an", 1.0), ("banana", None), ("", None)],
)
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_never_raises_and_bounds_are_sane(text: str) -> None:
    q = parse(text)
    assert isinstance(q.free_text, str)
    if q.radius_km is not None:
        assert q.radius_km > 0
    if q.max_price is not None and q.min_price is not None:
        assert q.min_price <= q.max_price
    if q.window is not None:
        assert q.window.start <= q.window.end and q.window.start >= NOW


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["spa", "under", "$", "50", "tonight", "within", "2", "km", "near", "me", "fifty", "at", "8pm",
             "this", "weekend", "between", "and", "-", "€", "free", "in", "hours", "a", "mile", "now"]
        ),
        max_size=12,
    )
)
def test_never_raises_on_constraint_word_salad(words: list[str]) -> None:
    q = parse(" ".join(words))
    for phrase in q.phrases:
        assert phrase in q.text
