"""What businesses publish: offers, events and service slots, their lifecycle (create, price
update, delete) and the document shapes each business style writes.

Styles (one per business; the packaged ``collections.yaml`` decodes all of them):

* ``A``: ``title``/``description``/``price``/``original_price``/``currency``, GeoJSON ``location``,
  ISO-8601 ``Z`` times (``starts``, ``ends``, ``created_at``, ``event_start``).
* ``B``: ``name``/``details``/``amount``/``was``/``ccy``, ``merchant: {id, name}``,
  ``geo: {lat, lon}``, epoch-millisecond ``valid: {from, to}``, ``ts`` and ``when``.
* ``C``: ``headline``/``blurb``/``tags``, ``cost`` as text, ``list_price``, ``position`` as
  ``{lat, lng}`` or ``"lat,lon"``, ISO-8601 times with the local UTC offset in ``window``.
* ``D``: ``label``/``price``/``regular_price``/``cur``, top-level ``latitude``/``longitude``,
  epoch-second ``from``/``until``/``epoch``/``start_time``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from kairos.simulate.docs import Emitted, epoch_ms, epoch_s, iso_local, iso_z
from kairos.simulate.model import BASE_PRICES, CITIES
from kairos.simulate.world import DAY_S, HOUR_S, Business

#: Canonical item kind -> source collection.
COLLECTION_OF_KIND = {"offer": "offers", "event": "events", "service": "services"}
#: Category -> (probability the business posts services rather than offers), events for sport
#: and culture. Kind mix follows what such businesses sell.
SERVICE_SHARE = {"spa": 0.7, "fitness": 0.6, "services": 0.8}
EVENT_CATEGORIES = ("sport", "culture")
#: Mean posts per business per day, by kind.
POSTS_PER_DAY = {"offer": 1.3, "event": 0.7, "service": 2.0}
#: Local start hours of events (evenings) and of service slots (opening hours, on the half hour).
EVENT_HOURS = (18.0, 19.0, 19.5, 20.0, 21.0)
SLOT_HOURS = tuple(9.0 + 0.5 * k for k in range(22))
UPDATE_SHARE = 0.15
DELETE_SHARE = 0.05
DELETE_SHAPES = ("deleted_at", "epoch-ms", "with-business")

_TITLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("coffee", "offer"): ("{pct}% off all lattes", "2-for-1 cold brew", "Morning espresso deal",
                          "{pct}% off pastries with any coffee"),
    ("food", "offer"): ("{pct}% off the lunch menu", "Happy hour: {pct}% off", "Dinner for two deal",
                        "{pct}% off pizza night"),
    ("retail", "offer"): ("{pct}% off sneakers", "Flash sale: {pct}% off jackets", "Weekend fashion deal",
                          "{pct}% off books"),
    ("spa", "offer"): ("{pct}% off facials", "Couples massage deal", "{pct}% off manicure + pedicure"),
    ("spa", "service"): ("60-min deep tissue massage", "Express facial", "Manicure slot",
                         "Ayurvedic massage", "Haircut & blowout"),
    ("fitness", "offer"): ("First yoga class {pct}% off", "{pct}% off a 10-class pass"),
    ("fitness", "service"): ("Vinyasa yoga class", "HIIT bootcamp", "Pilates reformer session", "Spin class"),
    ("services", "offer"): ("{pct}% off phone screen repair", "{pct}% off home cleaning"),
    ("services", "service"): ("Phone repair slot", "Home cleaning (2 h)", "Tailoring appointment",
                              "Laptop repair slot"),
    ("sport", "event"): ("Football watch party", "Basketball: {home} vs {away}", "Amateur football match",
                         "Cricket screening", "Boxing night"),
    ("culture", "event"): ("Jazz night", "Stand-up comedy night", "Museum late opening",
                           "Poetry & live music", "Theatre: one-night show", "Gallery opening"),
}
_TEAMS = {
    "new-york": ("Knicks", "Nets", "Celtics", "Bulls"),
    "mumbai": ("Mumbai", "Pune", "Delhi", "Chennai"),
}
_NOTES = ("Walk-ins welcome.", "Limited places.", "Book ahead.", "While stocks last.", "Bring a friend.")


@dataclass
class Item:
    """One offer, event or service slot and its hidden lifecycle."""

    id: str
    business: Business
    kind: str
    category: str
    created: float
    valid_from: float
    valid_to: float
    starts_at: float | None
    price: float
    original_price: float | None
    title: str
    description: str
    update_at: float | None = None
    updated_price: float | None = None
    deleted_at: float | None = None
    delete_shape: str = "deleted_at"

    @property
    def collection(self) -> str:
        return COLLECTION_OF_KIND[self.kind]

    @property
    def currency(self) -> str:
        return CITIES[self.business.city].currency

    def price_at(self, ts: float) -> float:
        if self.update_at is not None and self.updated_price is not None and ts >= self.update_at:
            return self.updated_price
        return self.price


def round_price(value: float, currency: str) -> float:
    """Prices as shops write them: quarters below $10, whole dollars above; rupees in fives/tens."""
    if currency == "INR":
        step = 5.0 if value < 200 else 10.0
        return max(step, round(value / step) * step)
    if value < 10:
        return max(0.25, round(value * 4) / 4)
    return float(round(value))


def build_items(rng: np.random.Generator, businesses: list[Business], start: float, end: float) -> list[Item]:
    """Every business posts items from a day before the period (so there is a catalogue at the
    start) until its end, with at least one posted on the last day and valid past the end."""
    items: list[Item] = []
    for business in businesses:
        count = 0
        # Local post days from the day before the period to its last day.
        first_day = start - DAY_S
        n_days = int(round((end - first_day) / DAY_S))
        for day in range(n_days):
            day_start = first_day + day * DAY_S
            kind = _kind_for(rng, business.category)
            n_posts = int(rng.poisson(POSTS_PER_DAY[kind]))
            if day == n_days - 1:
                n_posts = max(n_posts, 1)
            for post in range(n_posts):
                if post > 0:
                    kind = _kind_for(rng, business.category)
                count += 1
                last_day = day == n_days - 1 and post == 0
                posted = day_start + float(rng.uniform(7.0, 19.0)) * HOUR_S
                item = _make_item(rng, business, kind, f"{business.id}-{count:03d}", posted, last_day, end)
                _plan_lifecycle(rng, item)
                items.append(item)
    return items


def _kind_for(rng: np.random.Generator, category: str) -> str:
    if category in EVENT_CATEGORIES:
        return "event"
    return "service" if rng.random() < SERVICE_SHARE.get(category, 0.0) else "offer"


def _make_item(
    rng: np.random.Generator, business: Business, kind: str, item_id: str, posted: float,
    outlast_end: bool, end: float,
) -> Item:
    city = CITIES[business.city]
    base = BASE_PRICES[business.city][business.category] * business.price_level
    list_price = round_price(base * float(rng.lognormal(0.0, 0.2)), city.currency)
    discount = 0.0
    starts_at = None
    valid_from = posted
    if kind == "offer":
        if rng.random() < 0.25:  # starts a little later ("from 5 pm")
            valid_from = posted + float(rng.uniform(0.5, 3.0)) * HOUR_S
        hours = float(rng.choice([3, 6, 12, 24, 48]))
        valid_to = valid_from + hours * HOUR_S
        discount = float(rng.choice([0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]))
    elif kind == "event":
        # Evenings, from the same day to two days ahead.
        starts_at = _next_local_hour(posted + float(rng.uniform(2.0, 40.0)) * HOUR_S, business.city,
                                     float(rng.choice(EVENT_HOURS)))
        valid_to = starts_at + float(rng.uniform(2.0, 4.0)) * HOUR_S
        roll = rng.random()
        discount = float(rng.choice([0.15, 0.25])) if roll < 0.3 else 0.0  # early-bird
        if roll > 0.9:
            list_price = 0.0  # free community events exist too
    else:
        # Slots on the half hour in opening hours, a couple of hours to a day ahead.
        starts_at = _next_local_hour(posted + float(rng.uniform(1.5, 24.0)) * HOUR_S, business.city,
                                     float(rng.choice(SLOT_HOURS)))
        valid_to = starts_at  # bookable until the slot begins
        if rng.random() < 0.35:
            discount = float(rng.choice([0.1, 0.2, 0.3]))  # last-minute deals
    if outlast_end and valid_to <= end:
        # Something is always on sale around "now": this one lasts into the next day.
        if kind == "offer":
            valid_to = end + float(rng.uniform(2.0, 20.0)) * HOUR_S
        else:
            hours = EVENT_HOURS if kind == "event" else SLOT_HOURS
            starts_at = _next_local_hour(end, business.city, float(rng.choice(hours)))
            valid_to = starts_at + (float(rng.uniform(2.0, 4.0)) * HOUR_S if kind == "event" else 0.0)
    price = min(list_price, round_price(list_price * (1 - discount), city.currency)) if list_price else 0.0
    original = list_price if discount > 0 and price < list_price else None
    title, description = _texts(rng, business, kind, discount)
    return Item(
        id=item_id, business=business, kind=kind, category=business.category, created=posted,
        valid_from=valid_from, valid_to=valid_to, starts_at=starts_at, price=price,
        original_price=original, title=title, description=description,
    )


def _next_local_hour(after: float, city_name: str, hour: float) -> float:
    """The first time at or after ``after`` whose local clock reads ``hour`` (fractional)."""
    zone = CITIES[city_name].zone
    local = datetime.fromtimestamp(after, timezone.utc).astimezone(zone)
    for days in range(3):
        day = (local + timedelta(days=days)).date()
        candidate = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(hours=hour)
        if candidate.timestamp() >= after:
            return candidate.timestamp()
    raise AssertionError("unreachable: a local hour recurs every day")


def _texts(rng: np.random.Generator, business: Business, kind: str, discount: float) -> tuple[str, str]:
    templates = _TITLES[(business.category, kind)]
    template = templates[int(rng.integers(len(templates)))]
    teams = _TEAMS[business.city]
    home, away = rng.choice(len(teams), size=2, replace=False)
    pct = round(discount * 100) or 10
    title = template.format(pct=pct, home=teams[int(home)], away=teams[int(away)])
    note = _NOTES[int(rng.integers(len(_NOTES)))]
    return title, f"{business.name}, {business.neighbourhood}. {note}"


def _plan_lifecycle(rng: np.random.Generator, item: Item) -> None:
    """Some items get one price change, a few are withdrawn; never both, never in the first hour."""
    span = item.valid_to - item.created
    if span < 2 * HOUR_S:
        return
    roll = rng.random()
    if roll < UPDATE_SHARE:
        item.update_at = item.created + max(HOUR_S, float(rng.uniform(0.25, 0.75)) * span)
        new_price = round_price(item.price * float(rng.uniform(0.8, 1.08)), item.currency)
        if item.original_price is not None:
            new_price = min(new_price, item.original_price)
        item.updated_price = new_price if item.price else 0.0
    elif roll < UPDATE_SHARE + DELETE_SHARE:
        item.deleted_at = item.created + max(HOUR_S, float(rng.uniform(0.3, 0.9)) * span)
        item.delete_shape = DELETE_SHAPES[int(rng.integers(len(DELETE_SHAPES)))]


# ---- document shapes ---------------------------------------------------------------------------


def render_item(item: Item, ts: float, price: float, update: bool) -> dict[str, Any]:
    """The document a business of ``item``'s style writes on create (``update=False``) or on a
    price change at ``ts`` (full document, as a Mongo replace would carry)."""
    b = item.business
    currency = CITIES[b.city].currency
    original = item.original_price
    if b.style == "A":
        doc: dict[str, Any] = {
            "_id": item.id, "business_id": b.id, "title": item.title, "description": item.description,
            "category": b.label.lower(), "price": price, "original_price": original, "currency": currency,
            "location": {"type": "Point", "coordinates": [b.lon, b.lat]},
            "starts": iso_z(item.valid_from), "ends": iso_z(item.valid_to), "created_at": iso_z(item.created),
            "media": [f"https://cdn.example.com/{b.id}/{item.id}.jpg"],
        }
        if original is None:
            del doc["original_price"]
        if item.starts_at is not None:
            doc["event_start"] = iso_z(item.starts_at)
        if update:
            doc["updated_at"] = iso_z(ts)
    elif b.style == "B":
        doc = {
            "_id": item.id, "merchant": {"id": b.id, "name": b.name}, "name": item.title,
            "details": item.description, "segment": b.label, "amount": price, "ccy": currency,
            "geo": {"lat": b.lat, "lon": b.lon},
            "valid": {"from": epoch_ms(item.valid_from), "to": epoch_ms(item.valid_to)},
            "ts": epoch_ms(ts),
        }
        if original is not None:
            doc["was"] = original
        if item.starts_at is not None:
            doc["when"] = epoch_ms(item.starts_at)
    elif b.style == "C":
        # Half of style-C shops type their position as text.
        position: Any = (
            f"{b.lat},{b.lon}" if int(b.id[1:]) % 2 else {"lat": b.lat, "lng": b.lon}
        )
        doc = {
            "_id": item.id, "biz": b.id, "headline": item.title, "blurb": item.description,
            "tags": [b.label, "deal" if original else "new"], "cost": f"{price:.2f}",
            "currency": currency, "position": position,
            "window": {"start": iso_local(item.valid_from, b.city), "end": iso_local(item.valid_to, b.city)},
            "created": iso_local(item.created, b.city),
        }
        if original is not None:
            doc["list_price"] = original
        if item.starts_at is not None:
            doc["begins"] = iso_local(item.starts_at, b.city)
        if update:
            doc["modified"] = iso_local(ts, b.city)
    else:
        doc = {
            "_id": item.id, "owner_id": b.id, "label": item.title, "category": b.label.lower(),
            "price": price, "cur": currency, "latitude": b.lat, "longitude": b.lon,
            "from": epoch_s(item.valid_from), "until": epoch_s(item.valid_to), "epoch": epoch_s(ts),
        }
        if original is not None:
            doc["regular_price"] = original
        if item.starts_at is not None:
            doc["start_time"] = epoch_s(item.starts_at)
    return doc


def render_delete(item: Item) -> dict[str, Any]:
    """A delete. Real change streams may carry only the ``_id`` (the decoder then falls back to
    the store's receive time); simulated deletes always say when, because a run appends days of
    history at once and a receive-time fallback would place the delete at the wall-clock time of
    the run, far from the simulated period."""
    assert item.deleted_at is not None
    if item.delete_shape == "deleted_at":
        return {"_id": item.id, "deleted_at": iso_z(item.deleted_at)}
    if item.delete_shape == "epoch-ms":
        return {"_id": item.id, "ts": epoch_ms(item.deleted_at)}
    return {"_id": item.id, "business_id": item.business.id, "deleted_at": iso_z(item.deleted_at)}


def render_business(business: Business) -> dict[str, Any]:
    return {
        "_id": business.id, "name": business.name, "category": business.label,
        "location": {"type": "Point", "coordinates": [business.lon, business.lat]},
        "neighbourhood": business.neighbourhood, "city": business.city,
        "currency": CITIES[business.city].currency, "created_at": iso_z(business.created),
    }


def item_documents(items: list[Item], end: float) -> list[Emitted]:
    """Create, update and delete documents of every item, for changes made before ``end``."""
    emitted: list[Emitted] = []
    for item in items:
        if item.created >= end:
            continue
        emitted.append(Emitted(item.created, item.collection, "insert",
                               render_item(item, item.created, item.price, update=False)))
        if item.update_at is not None and item.updated_price is not None and item.update_at < end:
            emitted.append(Emitted(item.update_at, item.collection, "update",
                                   render_item(item, item.update_at, item.updated_price, update=True)))
        if item.deleted_at is not None and item.deleted_at < end:
            emitted.append(Emitted(item.deleted_at, item.collection, "delete", render_delete(item)))
    return emitted
