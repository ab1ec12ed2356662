"""Understand a search query or voice transcript: what, how much, when and how far.

"spa under 50 tonight within 2 km" becomes a :class:`ParsedQuery` with ``category="spa"``,
``max_price=50``, a time window for tonight, ``radius_km=2`` and ``free_text="spa"``; the API
searches with the constraints and embeds the free text. :func:`parse_query` is pure (the clock and
the time zone are arguments) and never raises on odd text: what it cannot read stays free text, and
:meth:`ParsedQuery.understood` says what it did read, so the app can show "spa · under $50 ·
tonight · within 2 km" and the user can see when we got it wrong.

Spoken numbers ("under fifty dollars", "half a mile") are read too, because voice transcripts come
through the same path.

>>> from datetime import datetime, timezone
>>> now = datetime(2026, 5, 1, 15, 0, tzinfo=timezone.utc)  # a Friday afternoon
>>> q = parse_query("spa under $50 tonight within 2 km", now)
>>> q.category, q.max_price, q.currency, q.radius_km, q.free_text
('spa', 50.0, 'USD', 2.0, 'spa')
>>> q.window.label, q.window.start.hour, q.window.end.hour
('tonight', 18, 2)
>>> parse_query("cheap massage near me this weekend", now).window.label
'this weekend'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Any

from kairos.geo import CITY_KMH, WALK_KMH, WALK_LIMIT_KM
from kairos.text_categories import category_from_text

#: Radius for "near me", "nearby", "around here" when no distance is given.
NEAR_ME_KM = 2.0
#: How far "in N hours" and "at 8 pm" windows reach past their start.
AT_TIME_SPAN = timedelta(hours=1)
KM_PER_MILE = 1.609344

#: Currency symbols and words -> ISO code.
CURRENCIES: dict[str, str] = {
    "$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD", "bucks": "USD", "buck": "USD",
    "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR",
    "£": "GBP", "gbp": "GBP", "pound": "GBP", "pounds": "GBP", "quid": "GBP",
    "₹": "INR", "inr": "INR", "rs": "INR", "rs.": "INR", "rupee": "INR", "rupees": "INR",
    "¥": "JPY", "jpy": "JPY", "yen": "JPY",
}

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}
_SCALES = {"hundred": 100, "thousand": 1000}
_WORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES], key=len, reverse=True))

# A number: digits ("1,200", "2.5", "1.5k"), spoken words ("twenty five", "a hundred"), "half a",
# "a couple of"; before a unit also a bare "a"/"an" ("an hour", "a mile"), never before money.
_NUM = (
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?:\s?k\b)?"
    rf"|(?:an?\s+)?(?:{_WORD})(?:[\s-]+(?:and\s+)?(?:{_WORD}))*\b"
    r"|half(?:\s+an?)?\b|a\s+couple(?:\s+of)?\b"
)
_NUM_BEFORE_UNIT = _NUM + r"|an?\b"
_CUR_BEFORE = r"(?P<cur1>[$€£₹¥]|usd|eur|gbp|inr|rs\.?|jpy)\s*"
_CUR_AFTER = (
    r"\s*(?P<cur2>[$€£₹¥]|(?:usd|eur|gbp|inr|rs|jpy|dollars?|bucks?|euros?|pounds?|quid|rupees?|yen)\b)"
)
_MONEY = rf"(?:{_CUR_BEFORE})?(?P<num>{_NUM})(?:{_CUR_AFTER})?"


def _money(group: str) -> str:
    """The money pattern with its named groups renamed (a pattern may hold two amounts)."""
    return _MONEY.replace("?P<cur1>", f"?P<{group}c1>").replace("?P<cur2>", f"?P<{group}c2>").replace(
        "?P<num>", f"?P<{group}>"
    )


_PRICE_MAX = re.compile(
    r"\b(?:under|below|less\s+than|cheaper\s+than|max(?:imum)?|at\s+most|up\s+to|no\s+more\s+than|"
    r"not\s+more\s+than|within\s+(?:a\s+)?budget\s+of|budget(?:\s+of)?)\s*(?:of\s+)?" + _money("hi")
    + r"|(?:<=?|≤)\s*" + _money("hi2")
    + r"|" + _money("hi3") + r"\s+(?:or\s+less|or\s+under|or\s+below|max(?:imum)?)\b",
    re.IGNORECASE,
)
_PRICE_MIN = re.compile(
    r"\b(?:over|above|more\s+than|at\s+least|min(?:imum)?|from)\s*" + _money("lo")
    + r"|(?:>=?|≥)\s*" + _money("lo2")
    + r"|" + _money("lo3") + r"\s+(?:or\s+more|and\s+up|or\s+above|plus)\b",
    re.IGNORECASE,
)
_PRICE_RANGE = re.compile(
    r"\b(?:between\s+)?" + _money("a") + r"\s*(?:-|–|to|and)\s*" + _money("b"),
    re.IGNORECASE,
)
_FREE = re.compile(r"\b(?:for\s+free|free\s+of\s+charge|free|no\s+cost|gratis)\b", re.IGNORECASE)
_CHEAP = re.compile(r"\b(?:cheap(?:est|er)?|affordable|budget|inexpensive|bargains?|deals?|discount(?:ed)?)\b",
                    re.IGNORECASE)
#: A bare amount with a currency ("$30 massage"): read as the most the user wants to pay.
_BARE_MONEY = re.compile(
    r"(?:(?P<c1>[$€£₹¥])\s*(?P<n1>\d+(?:[.,]\d+)?))"
    r"|(?:\b(?P<n2>\d+(?:[.,]\d+)?)\s*(?P<c2>[$€£₹¥]|usd|eur|gbp|inr|dollars?|bucks|euros?|pounds?|rupees?)\b)",
    re.IGNORECASE,
)

_DIST_UNIT = (
    r"(?P<unit>km|kms|kilometers?|kilometres?|k|m|meters?|metres?|mi|miles?|blocks?|min(?:ute)?s?)"
)
_DISTANCE = re.compile(
    r"\b(?:(?:with)?in|under|less\s+than|up\s+to|no\s+more\s+than|max(?:imum)?|inside|around)?\s*"
    rf"(?P<num>{_NUM_BEFORE_UNIT})[\s-]*{_DIST_UNIT}\b"
    r"(?:\s+(?P<mode>walk(?:ing)?|drive|driving|ride|by\s+car|on\s+foot|away|radius))?"
    r"(?:\s+(?:walk|drive|away|radius|(?:from|of)\s+(?:me|here)))?",
    re.IGNORECASE,
)
_WALKING_DISTANCE = re.compile(r"\b(?:within\s+)?walking\s+distance\b|\b(?:on\s+foot)\b", re.IGNORECASE)
_NEAR_ME = re.compile(
    r"\b(?:near(?:\s+(?:me|here|by|us))?|nearby|close\s+(?:by|to\s+(?:me|here))|around\s+(?:me|here)|"
    r"in\s+the\s+area|walkable|local)\b",
    re.IGNORECASE,
)

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME_OF_DAY = re.compile(
    r"\b(?:at|around|by|for)?\s*(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ap>a\.?m\.?|p\.?m\.?)"
    r"|\b(?:at|around|by|for)\s+(?P<h24>\d{1,2}):(?P<m24>\d{2})\b"
    r"|\b(?:at|around|by|for)?\s*(?P<noon>noon|midday|midnight)\b",
    re.IGNORECASE,
)
_IN_HOURS = re.compile(
    rf"\b(?:(?:with)?in(?:\s+the)?|(?:the\s+)?next|for\s+the\s+next)\s+(?P<num>{_NUM_BEFORE_UNIT})\s*"
    r"(?P<unit>hours?|hrs?|h|minutes?|mins?)\b",
    re.IGNORECASE,
)
_DAY_WORDS = re.compile(
    r"\b(?P<phrase>right\s+now|open\s+now|now|asap|immediately|at\s+the\s+moment|currently|"
    r"tonight|to-night|this\s+evening|this\s+morning|this\s+afternoon|today|later\s+today|"
    r"tomorrow\s+(?:morning|afternoon|evening|night)|tomorrow|"
    r"(?:this|next|on\s+the|the)?\s*weekend|"
    r"(?:this|next|on)?\s*(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"(?:\s+(?:morning|afternoon|evening|night))?)\b",
    re.IGNORECASE,
)

#: Words that carry no meaning for retrieval once constraints are out ("find me a ... please").
_FILLER_WORDS = """
    a an the me my i i'm im i'd id i'll let's we us our you for to of in on at with and or any some something somewhere
    find show search looking look get give want wanna need would like please can could is are there
    where what which place places option options um uh erm hmm ok okay hey hi so just also
"""
_FILLER = frozenset(_FILLER_WORDS.split())


@dataclass(frozen=True)
class TimeWindow:
    """When the user wants it: items live at some moment of ``[start, end]`` qualify (UTC)."""

    start: datetime
    end: datetime
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class ParsedQuery:
    """What :func:`parse_query` read from a query; ``None`` means "not said"."""

    text: str
    free_text: str
    category: str | None = None
    max_price: float | None = None
    min_price: float | None = None
    currency: str | None = None
    #: "cheap", "deals", "budget": the user cares about price more than usual.
    cheap: bool = False
    window: TimeWindow | None = None
    radius_km: float | None = None
    near_me: bool = False
    #: The phrases that were read as constraints, in the order they appear.
    phrases: tuple[str, ...] = field(default_factory=tuple)

    def understood(self) -> dict[str, Any]:
        """JSON-friendly summary for the API response (only what was actually understood)."""
        out: dict[str, Any] = {"free_text": self.free_text}
        if self.category is not None:
            out["category"] = self.category
        if self.max_price is not None:
            out["max_price"] = self.max_price
        if self.min_price is not None:
            out["min_price"] = self.min_price
        if self.currency is not None:
            out["currency"] = self.currency
        if self.cheap:
            out["cheap"] = True
        if self.window is not None:
            out["time"] = self.window.as_dict()
        if self.radius_km is not None:
            out["radius_km"] = self.radius_km
        if self.near_me:
            out["near_me"] = True
        out["phrases"] = list(self.phrases)
        return out


def approximate_timezone(lon: float) -> timezone:
    """A fixed-offset zone from the longitude (solar time, 15° per hour) when no zone is known.

    Daylight saving and political borders make it up to an hour or two off; callers that know
    the user's IANA zone pass it instead.
    """
    if not math.isfinite(lon):
        return timezone.utc
    hours = max(-12, min(14, round(lon / 15.0)))
    return timezone(timedelta(hours=hours))


def parse_number(text: str) -> float | None:
    """``"1,200"`` 1200, ``"1.5k"`` 1500, ``"twenty five"`` 25, ``"a hundred"`` 100, ``"half a"`` 0.5.

    >>> parse_number("two hundred and fifty"), parse_number("1.5k"), parse_number("an")
    (250.0, 1500.0, 1.0)
    """
    raw = text.strip().lower()
    if not raw:
        return None
    if raw.startswith("half"):
        return 0.5
    if raw.startswith("a couple"):
        return 2.0
    if raw in ("a", "an"):
        return 1.0
    digits = re.fullmatch(r"(\d[\d,]*(?:\.\d+)?)\s?(k)?", raw)
    if digits:
        try:
            value = float(digits.group(1).replace(",", ""))
        except ValueError:
            return None
        return value * 1000 if digits.group(2) else value
    words = [w for w in re.split(r"[\s-]+", raw) if w and w != "and"]
    if words and words[0] in ("a", "an"):
        words[0] = "one"
    total = current = 0
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word == "thousand":
            total += max(current, 1) * 1000
            current = 0
        else:
            return None
    return float(total + current)


def parse_query(text: str, now: datetime, tz: tzinfo | None = None) -> ParsedQuery:
    """Read the constraints of ``text`` as of ``now`` (aware) in the user's zone ``tz`` (default UTC)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = tz or timezone.utc
    original = text if isinstance(text, str) else ""
    reader = _Reader(original)
    radius_km = _read_distance(reader)
    window = _read_time(reader, now.astimezone(tz))
    max_price, min_price, currency = _read_price(reader)
    if max_price is not None and min_price is not None and min_price > max_price:
        max_price, min_price = min_price, max_price  # "over 50 under 20": the bounds were swapped
    near_me = reader.take(_NEAR_ME.search(reader.work)) is not None
    if reader.take(_WALKING_DISTANCE.search(reader.work)) is not None and radius_km is None:
        radius_km = WALK_LIMIT_KM
    if near_me and radius_km is None:
        radius_km = NEAR_ME_KM
    cheap = False
    for match in list(_CHEAP.finditer(reader.work)):
        cheap = True
        reader.take(match)

    category = category_from_text(original)
    free_words = [w for w in re.findall(r"[\w'&]+", reader.work) if w not in _FILLER]
    free_text = " ".join(free_words)
    phrases = tuple(phrase for _, phrase in sorted(reader.found) if phrase)
    return ParsedQuery(
        text=original,
        free_text=free_text,
        category=category,
        max_price=max_price,
        min_price=min_price,
        currency=currency,
        cheap=cheap,
        window=window,
        radius_km=radius_km,
        near_me=near_me,
        phrases=phrases,
    )


class _Reader:
    """The query being read: a lower-cased copy in which every phrase read is blanked out (same
    length, so spans stay valid), so no later pattern reads it twice and the rest is free text."""

    def __init__(self, original: str) -> None:
        self.original = original
        # Character by character: a few characters change length when lower-cased (İ).
        self.work = "".join(c.lower() if len(c.lower()) == 1 else c for c in original)
        self.found: list[tuple[int, str]] = []

    def take(self, match: re.Match[str] | None) -> re.Match[str] | None:
        if match is None:
            return None
        start, end = match.span()
        self.found.append((start, self.original[start:end].strip()))
        self.work = self.work[:start] + " " * (end - start) + self.work[end:]
        return match


# -- distance --------------------------------------------------------------------------------------


def _read_distance(reader: _Reader) -> float | None:
    for match in _DISTANCE.finditer(reader.work):
        number = parse_number(match.group("num"))
        unit = match.group("unit").lower()
        if number is None or number <= 0:
            continue
        if unit == "k" and not re.search(r"\b(?:within|in|radius)\b", match.group(0)):
            continue  # "50k" alone is money, not distance
        if unit.startswith("min"):
            # "10 min walk" / "15 minutes drive": a travel time, only with a mode of travel.
            mode = (match.group("mode") or "").lower()
            said = match.group(0).lower()
            if mode in ("", "away", "radius") and "walk" not in said and "driv" not in said:
                continue
            speed = CITY_KMH if ("driv" in mode or "ride" in mode or "car" in mode) else WALK_KMH
            km = number / 60.0 * speed
        elif unit in ("m", "meter", "meters", "metre", "metres"):
            km = number / 1000.0
        elif unit.startswith("mi"):
            km = number * KM_PER_MILE
        elif unit.startswith("block"):
            km = number * 0.08  # a Manhattan street block is about 80 m
        else:
            km = number
        reader.take(match)
        return round(km, 3)
    return None


# -- price -----------------------------------------------------------------------------------------


def _currency(match: re.Match[str], *groups: str) -> str | None:
    for group in groups:
        value = match.groupdict().get(group)
        if value:
            return CURRENCIES.get(value.lower().strip())
    return None


def _read_price(reader: _Reader) -> tuple[float | None, float | None, str | None]:
    max_price = min_price = None
    currency = None
    ranged = _PRICE_RANGE.search(reader.work)
    if ranged:
        low, high = parse_number(ranged.group("a")), parse_number(ranged.group("b"))
        has_money_hint = any(ranged.group(g) for g in ("ac1", "ac2", "bc1", "bc2")) or "between" in ranged.group(0)
        if low is not None and high is not None and has_money_hint and low <= high:
            reader.take(ranged)
            return high, low, _currency(ranged, "ac1", "ac2", "bc1", "bc2")
    for pattern, names in ((_PRICE_MAX, ("hi", "hi2", "hi3")), (_PRICE_MIN, ("lo", "lo2", "lo3"))):
        match = pattern.search(reader.work)
        if not match:
            continue
        name = next(n for n in names if match.group(n))
        value = parse_number(match.group(name))
        if value is None:
            continue
        reader.take(match)
        currency = currency or _currency(match, f"{name}c1", f"{name}c2")
        if pattern is _PRICE_MAX:
            max_price = value
        else:
            min_price = value
    if max_price is None:
        free = _FREE.search(reader.work)
        if free:
            reader.take(free)
            max_price = 0.0
    if max_price is None and min_price is None:
        bare = _BARE_MONEY.search(reader.work)
        if bare:
            value = parse_number(bare.group("n1") or bare.group("n2") or "")
            if value is not None:
                reader.take(bare)
                max_price = value
                currency = CURRENCIES.get((bare.group("c1") or bare.group("c2") or "").lower())
    return max_price, min_price, currency


# -- time ------------------------------------------------------------------------------------------


def _day_start(local: datetime, days: int = 0) -> datetime:
    day = (local + timedelta(days=days)).date()
    return datetime.combine(day, time(0), tzinfo=local.tzinfo)


def _window(start: datetime, end: datetime, now_local: datetime, label: str) -> TimeWindow:
    """A window clipped so it never starts in the past; both ends in UTC."""
    start = max(start, now_local)
    end = max(end, start)
    return TimeWindow(start.astimezone(timezone.utc), end.astimezone(timezone.utc), label)


_PARTS_OF_DAY = {"morning": (6, 12), "afternoon": (12, 17), "evening": (17, 22), "night": (18, 26)}


def _read_time(reader: _Reader, now: datetime) -> TimeWindow | None:
    """The first time expression in the query; ``now`` is local time in the user's zone."""
    match = _IN_HOURS.search(reader.work)
    if match:
        number = parse_number(match.group("num"))
        if number is not None and number > 0:
            reader.take(match)
            unit = match.group("unit").lower()
            span = timedelta(hours=number) if unit.startswith("h") else timedelta(minutes=number)
            label = " ".join(match.group(0).split())
            return _window(now, now + span, now, label)

    day_match = _DAY_WORDS.search(reader.work)
    clock = _TIME_OF_DAY.search(reader.work)
    day_window: TimeWindow | None = None
    base_day: datetime | None = None
    if day_match:
        phrase = " ".join(day_match.group("phrase").lower().split())
        day_window, base_day = _day_phrase(phrase, now)
        if day_window is not None:
            reader.take(day_match)
    if clock:
        at = _clock_time(clock, now, base_day)
        if at is not None:
            reader.take(clock)
            label = " ".join(clock.group(0).split())
            if day_window is not None:
                label = f"{day_window.label} {label}"
            return _window(at, at + AT_TIME_SPAN, now, label)
    return day_window


def _day_phrase(phrase: str, now: datetime) -> tuple[TimeWindow | None, datetime | None]:
    """(window, day it refers to) for a day phrase; the day anchors a following "at 8 pm"."""
    today = _day_start(now)
    if phrase in ("now", "right now", "open now", "asap", "immediately", "at the moment", "currently"):
        return _window(now, now, now, "now"), today
    if phrase in ("today", "later today"):
        return _window(now, _day_start(now, 1), now, phrase), today
    if phrase in ("tonight", "to-night"):
        if now.hour < 5:  # "tonight" said after midnight is the night still going on
            return _window(now, today + timedelta(hours=5), now, "tonight"), today - timedelta(days=1)
        return _window(today + timedelta(hours=18), today + timedelta(hours=26), now, "tonight"), today
    for part, (lo, hi) in _PARTS_OF_DAY.items():
        if phrase == f"this {part}":
            return _window(today + timedelta(hours=lo), today + timedelta(hours=hi), now, phrase), today
    if phrase.startswith("tomorrow"):
        tomorrow = _day_start(now, 1)
        part = phrase.split()[1] if " " in phrase else None
        lo, hi = _PARTS_OF_DAY[part] if part else (0, 24)
        return _window(tomorrow + timedelta(hours=lo), tomorrow + timedelta(hours=hi), now, phrase), tomorrow
    if phrase.endswith("weekend"):
        weekday = now.weekday()
        saturday = _day_start(now, (5 - weekday) % 7 if weekday < 5 else -(weekday - 5))
        if phrase.startswith("next") and weekday >= 5:
            saturday += timedelta(days=7)
        label = "next weekend" if phrase.startswith("next") else "this weekend"
        return _window(saturday, saturday + timedelta(days=2), now, label), None
    words = phrase.split()
    day_name = next((w for w in words if w in _WEEKDAYS), None)
    if day_name is not None:
        ahead = (_WEEKDAYS.index(day_name) - now.weekday()) % 7
        if words[0] == "next" and ahead == 0:
            ahead = 7
        day = _day_start(now, ahead)
        part = words[-1] if words[-1] in _PARTS_OF_DAY else None
        lo, hi = _PARTS_OF_DAY[part] if part else (0, 24)
        label = day_name if part is None else f"{day_name} {part}"
        return _window(day + timedelta(hours=lo), day + timedelta(hours=hi), now, label), day
    return None, None


def _clock_time(match: re.Match[str], now: datetime, base_day: datetime | None) -> datetime | None:
    """The local datetime of "8 pm", "20:30", "noon"; the next such time unless a day was named."""
    if match.group("noon"):
        word = match.group("noon").lower()
        hour, minute = (0, 0) if word == "midnight" else (12, 0)
    elif match.group("h24"):
        hour, minute = int(match.group("h24")), int(match.group("m24"))
    else:
        hour, minute = int(match.group("h")), int(match.group("m") or 0)
        suffix = match.group("ap").replace(".", "").lower()
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if suffix == "pm" else 0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    day = base_day if base_day is not None else _day_start(now)
    at = day + timedelta(hours=hour, minutes=minute)
    if base_day is None and at < now - timedelta(minutes=30):
        at += timedelta(days=1)  # "at 8 am" said at 10 am means tomorrow
    return at


__all__ = [
    "CURRENCIES",
    "NEAR_ME_KM",
    "ParsedQuery",
    "TimeWindow",
    "approximate_timezone",
    "parse_number",
    "parse_query",
]
