"""What users do: a 15-minute timeline per user (asleep, at home, at work, out, travelling) that
emits location pings and app sessions; a session is a search, a voice query or a browse of the
feed, followed by views, clicks, saves, dismissals and orders of nearby active items, decided by
:func:`kairos.simulate.model.engagement_probability`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from kairos.schema import CATEGORIES
from kairos.simulate.docs import Emitted, ObjectIds, epoch_ms, epoch_s, iso_local, iso_z, iso_z_ms
from kairos.simulate.items import Item
from kairos.simulate.model import (
    BASE_PRICES,
    CITIES,
    TRAVEL_BLEND,
    TRAVEL_INTERESTS,
    demand_curves,
    engagement_probability,
)
from kairos.simulate.world import Business, User, offset_km

STEP_S = 900.0
CITY_CODES = {name: i for i, name in enumerate(CITIES)}
CATEGORY_CODES = {name: i for i, name in enumerate(CATEGORIES)}

#: Chance of a location ping per 15-minute step, by state: phones report more when moving.
PING_RATE = {"asleep": 0.01, "home": 0.10, "work": 0.12, "out": 0.45}
#: Chance of opening the app per step (times the user's activity).
SESSION_RATE = {"asleep": 0.002, "home": 0.045, "work": 0.02, "out": 0.07}
TRAVEL_SESSION_BOOST = 1.5
SEARCH_SHARE = 0.33
VOICE_SHARE = 0.04
FEED_SIZE = 8
RADIUS_KM = 4.0
DISMISS_RATE = 0.04

SEARCH_KEYWORDS: dict[str, tuple[str, ...]] = {
    "spa": ("spa", "massage", "facial", "nail salon"),
    "coffee": ("coffee", "latte", "cafe", "cold brew"),
    "food": ("pizza", "sushi", "brunch", "restaurant", "dinner"),
    "fitness": ("yoga", "gym", "pilates", "spin class"),
    "sport": ("football match", "basketball", "cricket match", "watch party"),
    "culture": ("jazz", "comedy", "museum", "concert", "theatre"),
    "retail": ("sneakers", "fashion", "bookstore", "shopping"),
    "services": ("phone repair", "cleaning", "tailor", "laundry"),
}
SEARCH_TEMPLATES = (
    "cheap {kw} near me", "{kw}", "{kw} tonight", "best {kw} deals", "{kw} open now",
    "{kw} under {price}", "{kw} near {hood}",
)
GENERIC_SEARCHES = ("things to do tonight", "deals near me", "what's open now", "something fun")
VOICE_TEMPLATES = (
    "hey kairos find me a {kw} nearby", "where can I get {kw} right now", "book a {kw} for tonight",
    "any {kw} deals around here", "I need a {kw}",
)


class ItemIndex:
    """Column arrays over all items, for fast "active items near here now" queries."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        inf = math.inf
        self.lat = np.array([i.business.lat for i in items])
        self.lon = np.array([i.business.lon for i in items])
        self.city = np.array([CITY_CODES[i.business.city] for i in items], dtype=int)
        self.category = np.array([CATEGORY_CODES[i.category] for i in items], dtype=int)
        self.created = np.array([i.created for i in items])
        self.valid_from = np.array([i.valid_from for i in items])
        self.valid_to = np.array([i.valid_to for i in items])
        self.deleted = np.array([i.deleted_at if i.deleted_at is not None else inf for i in items])

    def near(
        self, ts: float, city: str, lat: float, lon: float, radius_km: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances in km) of items active at ``ts`` within ``radius_km``."""
        if not self.items:
            return np.zeros(0, dtype=int), np.zeros(0)
        active = (
            (self.city == CITY_CODES[city]) & (self.created <= ts) & (self.valid_from <= ts)
            & (ts < self.valid_to) & (ts < self.deleted)
        )
        idx = np.flatnonzero(active)
        dy = (self.lat[idx] - lat) * 110.57
        dx = (self.lon[idx] - lon) * 111.32 * math.cos(math.radians(lat))
        dist = np.hypot(dx, dy)
        keep = dist <= radius_km
        return idx[keep], dist[keep]


@dataclass
class _Clock:
    """Local time of every simulation step in one city."""

    hour: np.ndarray  # fractional local hour
    weekday: np.ndarray  # Monday = 0
    how: np.ndarray  # hour of week
    day: np.ndarray  # local calendar day ordinal


def _clock(steps: np.ndarray, city: str) -> _Clock:
    zone = CITIES[city].zone
    local = [datetime.fromtimestamp(float(t), timezone.utc).astimezone(zone) for t in steps]
    hour = np.array([d.hour + d.minute / 60.0 for d in local])
    weekday = np.array([d.weekday() for d in local], dtype=int)
    return _Clock(
        hour=hour,
        weekday=weekday,
        how=weekday * 24 + hour.astype(int),
        day=np.array([d.toordinal() for d in local], dtype=int),
    )


class UserSimulator:
    """Runs every user's timeline over ``[start, end)`` and collects the documents they cause."""

    def __init__(
        self,
        rng: np.random.Generator,
        users: list[User],
        businesses: list[Business],
        items: list[Item],
        start: float,
        end: float,
        ids: ObjectIds,
    ) -> None:
        self.rng = rng
        self.users = users
        self.index = ItemIndex(items)
        self.start, self.end = start, end
        self.ids = ids
        curves = demand_curves()
        self.demand = np.array([curves[c] for c in CATEGORIES])  # (category, hour of week)
        self.steps = np.arange(start, end, STEP_S)
        self.clocks = {city: _clock(self.steps, city) for city in CITIES}
        self.travel_interests = np.array([TRAVEL_INTERESTS[c] for c in CATEGORIES])
        # Business places per (city, category): outings go where the shops are.
        self.places: dict[tuple[str, str], np.ndarray] = {}
        for city in CITIES:
            for category in CATEGORIES:
                points = [(b.lat, b.lon) for b in businesses if b.city == city and b.category == category]
                self.places[(city, category)] = np.array(points).reshape(-1, 2)
        self.out: list[Emitted] = []

    # ---- timeline ----

    def run(self) -> list[Emitted]:
        for user in self.users:
            self._run_user(user)
        return self.out

    def _run_user(self, user: User) -> None:
        rng = self.rng
        draws = rng.random((len(self.steps), 4))
        plans: dict[int, dict[str, bool]] = {}
        destinations: dict[tuple[int, str], tuple[float, float]] = {}
        for s, t in enumerate(self.steps):
            ts = float(t)
            trip = user.trip_at(ts)
            city = trip.city if trip else user.city
            clock = self.clocks[city]
            hour, weekday = float(clock.hour[s]), int(clock.weekday[s])
            how, day = int(clock.how[s]), int(clock.day[s])
            interests = user.interests
            if trip is not None:
                interests = (1 - TRAVEL_BLEND) * interests + TRAVEL_BLEND * self.travel_interests
            state, block = self._state(user, trip is not None, hour, weekday, day, plans)
            if state in ("asleep", "home"):
                anchor = trip.hotel if trip else user.home
            elif state == "work":
                anchor = user.work or user.home
            else:
                key = (day, block)
                if key not in destinations:
                    if trip is not None:
                        origin = trip.hotel
                    else:
                        origin = user.work if block == "lunch" and user.work else user.home
                    destinations[key] = self._destination(city, origin, interests, how)
                anchor = destinations[key]
            sigma = 0.08 if state == "out" else 0.02
            north, east = rng.normal(0.0, sigma, 2)
            lat, lon = offset_km(anchor[0], anchor[1], float(north), float(east))
            lat, lon = round(lat, 6), round(lon, 6)
            at = ts + float(draws[s, 2]) * STEP_S
            if draws[s, 0] < PING_RATE[state]:
                self._ping(user, at, lat, lon)
            rate = SESSION_RATE[state] * user.activity * (TRAVEL_SESSION_BOOST if trip else 1.0)
            if draws[s, 1] < rate:
                session_at = ts + float(draws[s, 3]) * STEP_S
                self._session(user, session_at, city, lat, lon, interests, how, trip is not None)

    def _state(
        self, user: User, travelling: bool, hour: float, weekday: int, day: int,
        plans: dict[int, dict[str, bool]],
    ) -> tuple[str, str]:
        """(state, outing block) at a local hour: night at home, workdays at work, outings."""
        sleep = user.sleep_hour
        awake = (user.wake_hour <= hour < sleep) or (sleep > 24 and hour < sleep - 24)
        if not awake:
            return "asleep", ""
        if travelling:
            return "out", f"trip-{int(hour // 2)}"  # sightseeing, a new place every two hours
        if day not in plans:
            weekend = weekday >= 5
            r = self.rng.random(4)
            plans[day] = {
                "lunch": not weekend and r[0] < 0.45,
                "midday": weekend and r[1] < 0.6,
                "afternoon": weekend and r[2] < 0.5,
                "evening": r[3] < (0.6 if weekend else 0.35),
            }
        plan = plans[day]
        if weekday < 5 and user.work is not None and 9.0 <= hour < 17.5:
            if plan["lunch"] and 12.0 <= hour < 13.25:
                return "out", "lunch"
            return "work", ""
        if plan["midday"] and 11.0 <= hour < 14.0:
            return "out", "midday"
        if plan["afternoon"] and 15.0 <= hour < 18.0:
            return "out", "afternoon"
        if plan["evening"] and 19.0 <= hour < 22.5:
            return "out", "evening"
        return "home", ""

    def _destination(
        self, city: str, origin: tuple[float, float], interests: np.ndarray, how: int
    ) -> tuple[float, float]:
        """Where an outing goes: a place of a category the user wants at this hour, near-ish."""
        rng = self.rng
        weights = interests * self.demand[:, how]
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=weights / weights.sum()))]
        places = self.places[(city, category)]
        if len(places) == 0:
            city_info = CITIES[city]
            _, lat, lon = city_info.hubs[int(rng.integers(len(city_info.hubs)))]
            return lat, lon
        dy = (places[:, 0] - origin[0]) * 110.57
        dx = (places[:, 1] - origin[1]) * 111.32 * math.cos(math.radians(origin[0]))
        closeness = np.exp(-np.hypot(dx, dy) / 3.0) + 1e-9
        lat, lon = places[int(rng.choice(len(places), p=closeness / closeness.sum()))]
        return float(lat), float(lon)

    # ---- documents ----

    def _emit(self, ts: float, collection: str, doc: dict[str, Any]) -> None:
        self.out.append(Emitted(ts, collection, "insert", doc))

    def _ping(self, user: User, ts: float, lat: float, lon: float) -> None:
        # Two client families, two shapes: Android sends GeoJSON-ordered arrays and epoch ms.
        if int(user.id[1:]) % 3:
            doc = {"_id": self.ids(ts), "uid": user.id, "device": "android", "coords": [lon, lat],
                   "ts": epoch_ms(ts), "battery": int(self.rng.integers(5, 100))}
        else:
            doc = {"_id": self.ids(ts), "user_id": user.id, "device": "ios", "lat": lat, "lon": lon,
                   "accuracy_m": int(self.rng.integers(5, 60)), "timestamp": epoch_s(ts)}
        self._emit(ts, "pings", doc)

    def _session(
        self, user: User, ts: float, city: str, lat: float, lon: float,
        interests: np.ndarray, how: int, travelling: bool,
    ) -> None:
        rng = self.rng
        weights = interests * self.demand[:, how]
        intent = int(rng.choice(len(CATEGORIES), p=weights / weights.sum()))
        roll = rng.random()
        source = "search" if roll < SEARCH_SHARE else "voice" if roll < SEARCH_SHARE + VOICE_SHARE else "feed"
        filter_category: int | None = None
        if source == "search":
            text, filter_category = self._query(city, intent, lat, lon)
            self._emit(ts, "searches", {
                "_id": self.ids(ts), "user_id": user.id, "query": text, "created_at": iso_local(ts, city),
                "location": {"lat": lat, "lng": lon},
                "platform": "android" if int(user.id[1:]) % 3 else "ios",
            })
        elif source == "voice":
            keyword = _pick(rng, SEARCH_KEYWORDS[CATEGORIES[intent]])
            text = _pick(rng, VOICE_TEMPLATES).format(kw=keyword)
            filter_category = intent
            self._emit(ts, "voice", {
                "_id": self.ids(ts), "user": {"id": user.id}, "transcript": text,
                "recorded_at": {"$date": iso_z_ms(ts)}, "position": {"latitude": lat, "longitude": lon},
                "lang": user.lang, "duration_s": round(float(rng.uniform(1.5, 6.0)), 1),
            })
        idx, dist = self.index.near(ts, city, lat, lon, RADIUS_KM * (1.25 if travelling else 1.0))
        if len(idx) == 0:
            return
        if filter_category is not None:
            keep = self.index.category[idx] == filter_category
            idx, dist = idx[keep], dist[keep]
            order = np.argsort(dist + rng.exponential(0.3, len(dist)))[:FEED_SIZE]
        else:
            weight = np.exp(-dist / 1.5) * np.where(self.index.category[idx] == intent, 2.5, 1.0)
            size = min(FEED_SIZE, len(idx))
            order = rng.choice(len(idx), size=size, replace=False, p=weight / weight.sum())
        web = rng.random() < 0.3
        at = ts
        for rank, pick in enumerate(order):
            at += float(rng.uniform(5.0, 40.0))
            item = self.index.items[int(idx[pick])]
            self._engage(user, item, at, float(dist[pick]), lat, lon, interests, how, web, rank, source)

    def _query(self, city: str, intent: int, lat: float, lon: float) -> tuple[str, int | None]:
        rng = self.rng
        if rng.random() < 0.1:
            return _pick(rng, GENERIC_SEARCHES), None
        category = CATEGORIES[intent]
        template = _pick(rng, SEARCH_TEMPLATES)
        price = BASE_PRICES[city][category]
        hood = min(CITIES[city].hubs, key=lambda h: (h[1] - lat) ** 2 + (h[2] - lon) ** 2)[0]
        text = template.format(kw=_pick(rng, SEARCH_KEYWORDS[category]), price=int(round(price)), hood=hood)
        return text, intent

    def _engage(
        self, user: User, item: Item, ts: float, distance: float, lat: float, lon: float,
        interests: np.ndarray, how: int, web: bool, rank: int, source: str,
    ) -> None:
        rng = self.rng
        b = item.business
        price = item.price_at(ts)
        discount = 1.0 - price / item.original_price if item.original_price else 0.0
        factors = dict(
            interest=float(interests[CATEGORY_CODES[item.category]]),
            distance_km=distance,
            price=price,
            reference_price=BASE_PRICES[b.city][item.category],
            discount=discount,
            price_sensitivity=user.price_sensitivity,
            demand=float(self.demand[CATEGORY_CODES[item.category], how]),
        )
        common = {
            "business_id": b.id, "category": item.category, "price_seen": price, "currency": item.currency,
        }

        def interaction(action: str, at: float) -> None:
            if web:
                doc = {"_id": self.ids(at), "uid": user.id, "item": item.id, "event": action,
                       "timestamp": iso_z(at), "position": f"{lat},{lon}", **common, "rank": rank}
            else:
                doc = {"_id": self.ids(at), "user_id": user.id, "item_id": item.id, "action": action,
                       "ts": epoch_ms(at), "loc": {"type": "Point", "coordinates": [lon, lat]},
                       **common, "rank": rank, "source": source}
            self._emit(at, "interactions", doc)

        if rng.random() >= engagement_probability("view", **factors):
            if rng.random() < DISMISS_RATE:
                interaction("dismiss", ts)
            return
        interaction("view", ts)
        if rng.random() >= engagement_probability("click", **factors):
            return
        ts += float(rng.uniform(5.0, 60.0))
        interaction("click", ts)
        if rng.random() < engagement_probability("save", **factors):
            ts += float(rng.uniform(2.0, 20.0))
            interaction("save", ts)
        if rng.random() < engagement_probability("purchase", **factors):
            ts += float(rng.uniform(30.0, 240.0))
            self._order(user, item, ts, price, lat, lon)

    def _order(self, user: User, item: Item, ts: float, price: float, lat: float, lon: float) -> None:
        qty = int(self.rng.integers(1, 3)) if item.category in ("food", "coffee") else 1
        list_price = item.original_price if item.original_price else price
        self._emit(ts, "orders", {
            "_id": self.ids(ts), "user_id": user.id, "item_id": item.id, "business_id": item.business.id,
            "category": item.category, "type": "purchase" if item.kind == "offer" else "booking",
            "amount": round(price * qty, 2), "list_price": round(list_price * qty, 2),
            "currency": item.currency, "qty": qty, "created_at": iso_z(ts),
            "location": {"lat": lat, "lon": lon},
            "payment": _pick(self.rng, ("card", "upi") if item.currency == "INR" else ("card", "apple_pay")),
        })


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]
