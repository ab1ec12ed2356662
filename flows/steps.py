"""Pure, separately tested steps of the feature flow.

Each ``*State`` class is the keyed state of one stateful step: ``update(event)`` folds one event in
(event time, any arrival order) and returns what the step emits. States are plain picklable
objects so Bytewax can snapshot them for recovery. Windows are ``(as_of - w, as_of]`` where
``as_of`` is the newest event time the state has seen; :mod:`offline.batch_features` recomputes the
same definitions from the offline log, independently, to prove stream and batch agree.
"""

from __future__ import annotations

import bisect
import json
import math
import operator
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kairos import geo
from kairos.features import (
    AFFINITY_WEIGHTS,
    DEMAND_COUNT_KINDS,
    DEMAND_WINDOWS,
    DISCOUNT_THRESHOLD,
    ITEM_COUNT_KINDS,
    ITEM_WINDOWS,
    USER_COUNT_KINDS,
    USER_WINDOWS,
    WINDOWS,
    count_kind,
)
from kairos.schema import ITEM_KINDS, Event
from kairos.stores.catalog import CatalogItem

X = TypeVar("X")
V = TypeVar("V")

WINDOW_S = {name: w.total_seconds() for name, w in WINDOWS.items()}
USER_MAX_S = max(WINDOW_S[w] for w in USER_WINDOWS)
ITEM_MAX_S = max(WINDOW_S[w] for w in ITEM_WINDOWS)
DEMAND_MAX_S = max(WINDOW_S[w] for w in DEMAND_WINDOWS)

#: Kinds that express demand in a place for a category, and the bucket each is counted in.
DEMAND_BUCKETS = {"search": "search", "voice": "search", "view": "view", "click": None, "save": None,
                  "purchase": "purchase", "booking": "purchase"}
USER_FEATURE_KINDS = (*USER_COUNT_KINDS, "booking")
ITEM_ENGAGEMENT_KINDS = ("view", "click", "save", "purchase", "booking")


@dataclass(frozen=True)
class FeatureParams:
    """The settings the steps need (kept small so it pickles into every worker)."""

    home_resolution: int = 6
    travel_km: float = 100.0

    @classmethod
    def from_settings(cls, settings: Any) -> FeatureParams:
        return cls(home_resolution=settings.home_resolution, travel_km=settings.travel_km)


def epoch(event: Event) -> float:
    return event.ts.timestamp()


_TIME = operator.itemgetter(0)
_ORDER = operator.itemgetter(0, 1)


def _window_start(records: list[tuple[Any, ...]], cutoff: float) -> int:
    """Index of the first record strictly after ``cutoff`` (records sorted by time)."""
    if not records or records[0][0] > cutoff:  # the usual case: nothing has left the window
        return 0
    return bisect.bisect_right(records, cutoff, key=_TIME)


def _insert(records: list[tuple[Any, ...]], record: tuple[Any, ...], as_of: float, max_s: float) -> None:
    """Insert in event-time order, then forget what no window can see any more."""
    if record[0] > as_of - max_s:
        if not records or _ORDER(record) >= _ORDER(records[-1]):
            records.append(record)  # in order, as most events come: where insort would put it
        else:
            bisect.insort(records, record, key=_ORDER)
    del records[: _window_start(records, as_of - max_s)]


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolation quantile (the definition NumPy and pandas use by default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def group_by_key(batch: Iterable[X], signal: Callable[[X], tuple[str, V] | None]) -> list[tuple[str, list[V]]]:
    """A batch's ``signal``s grouped by key, in arrival order within each key (items whose signal
    is None are left out): what a keyed step is sent, one list per key and batch.

    >>> group_by_key(["a1", "b2", "a3", "-"], lambda s: (s[0], s[1]) if s != "-" else None)
    [('a', ['1', '3']), ('b', ['2'])]
    """
    groups: dict[str, list[V]] = {}
    for item in batch:
        keyed = signal(item)
        if keyed is not None:
            key, value = keyed
            group = groups.get(key)
            if group is None:
                groups[key] = [value]
            else:
                group.append(value)
    return list(groups.items())


# ----------------------------------------------------------------------------------- user_activity
def is_user_feature_event(event: Event) -> bool:
    return event.actor_type == "user" and event.kind in USER_FEATURE_KINDS


#: (user id, window record, location or None): all the user step needs of an event. The flow sends
#: this, not the event, to the worker that owns the user — a small tuple pickles ~10x cheaper.
UserSignal = tuple[str, tuple[Any, ...], tuple[float, str, float, float, str | None] | None]


def user_signal(event: Event, params: FeatureParams) -> UserSignal:
    """The user step's slice of an event: its window record
    (ts, event_id, bucket, category, price, discounted, home_cell) and its location, if any."""
    ts = epoch(event)
    bucket = count_kind(event.kind)
    home = None
    if bucket == "location" and event.cell is not None:
        home = geo.parent_cell(event.cell, params.home_resolution)
    discounted = (event.discount or 0.0) >= DISCOUNT_THRESHOLD
    record = (ts, event.event_id, bucket, event.category, event.price, discounted, home)
    location = None
    if event.lat is not None and event.lon is not None:
        location = (ts, event.event_id, event.lat, event.lon, event.cell)
    return event.actor_id, record, location


@dataclass
class UserActivityState:
    """Keyed by user id. Records: (ts, event_id, bucket, category, price, discounted, home_cell)."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    last_location: tuple[float, str, float, float, str | None] | None = None
    as_of: float = -math.inf

    def update(self, event: Event, params: FeatureParams) -> dict[str, Any]:
        self.add(event, params)
        return self.row(event.actor_id, params)

    def add(self, event: Event, params: FeatureParams) -> None:
        """Fold an event in without computing the row (a batch of events costs one row)."""
        self.add_signal(user_signal(event, params))

    def add_signal(self, signal: UserSignal) -> None:
        """Fold in what :func:`user_signal` kept of an event."""
        _, record, location = signal
        self.as_of = max(self.as_of, record[0])
        _insert(self.records, record, self.as_of, USER_MAX_S)
        if location is not None and (self.last_location is None or location[:2] > self.last_location[:2]):
            self.last_location = location

    def row(self, user_id: str, params: FeatureParams) -> dict[str, Any]:
        row: dict[str, Any] = {"user_id": user_id, "as_of": self.as_of}
        for w in USER_WINDOWS:
            counts = Counter(r[2] for r in self.records[_window_start(self.records, self.as_of - WINDOW_S[w]):])
            for kind in USER_COUNT_KINDS:
                row[f"{kind}_count_{w}"] = counts.get(kind, 0)
        week = self.records[_window_start(self.records, self.as_of - WINDOW_S["7d"]):]
        weights: Counter[str] = Counter()
        for r in week:
            if r[3] is not None and r[2] in AFFINITY_WEIGHTS:
                weights[r[3]] += AFFINITY_WEIGHTS[r[2]]
        total = sum(weights.values())
        row["category_affinity"] = json.dumps(
            {c: round(v / total, 6) for c, v in sorted(weights.items())}) if total else None
        row["top_category"] = min(weights, key=lambda c: (-weights[c], c)) if weights else None
        paid = [r[4] for r in week if r[2] == "purchase" and r[4] is not None]
        row["spend_7d"] = float(sum(paid))
        row["typical_price_paid"] = _median(paid)
        engaged = [r[5] for r in week if r[2] in ("click", "save", "purchase")]
        row["discount_sensitivity"] = sum(engaged) / len(engaged) if engaged else None
        homes = Counter(r[6] for r in week if r[6] is not None)
        home_cell = min(homes, key=lambda c: (-homes[c], c)) if homes else None
        row["home_cell"] = home_cell
        last = self.last_location
        row["last_lat"], row["last_lon"], row["last_cell"] = (last[2], last[3], last[4]) if last else (None,) * 3
        distance = None
        if last is not None and home_cell is not None:
            distance = geo.haversine_km(last[2], last[3], *geo.cell_center(home_cell))
        row["distance_from_home_km"] = distance
        row["travelling"] = bool(distance is not None and distance > params.travel_km)
        return row


# -------------------------------------------------------------------------------------- item_stats
def is_item_event(event: Event) -> bool:
    """Lifecycle events of items and engagements that name an item."""
    if event.item_id is None:
        return False
    return event.kind in ITEM_KINDS or event.kind in ITEM_ENGAGEMENT_KINDS


ITEM_ATTRS = ("business_id", "kind", "category", "text", "lat", "lon", "cell", "price", "original_price",
              "currency", "valid_from", "valid_to")


def lifecycle_attrs(event: Event) -> dict[str, Any]:
    """The item attributes an item event sets (None means "not given", not "cleared")."""
    return {
        "business_id": event.actor_id if event.actor_id not in ("", "unknown") else None,
        "kind": event.kind,
        "category": event.category,
        "text": event.text,
        "lat": event.lat,
        "lon": event.lon,
        "cell": event.cell,
        "price": event.price,
        "original_price": event.original_price,
        "currency": event.currency,
        "valid_from": event.valid_from.timestamp() if event.valid_from else None,
        "valid_to": event.valid_to.timestamp() if event.valid_to else None,
    }


def merge_lifecycle(lifecycle: list[tuple[float, str, str, dict[str, Any]]]) -> dict[str, Any]:
    """Fold (ts, event_id, op, attrs) in event-time order: later non-null values win; a delete hides
    the item until it is created again (MongoDB semantics of delete then insert of the same _id)."""
    merged: dict[str, Any] = {k: None for k in ITEM_ATTRS}
    merged["deleted"] = False
    for _ts, _eid, op, attrs in lifecycle:
        if op == "delete":
            merged["deleted"] = True
            continue
        if op == "create":
            merged["deleted"] = False
        for key, value in attrs.items():
            if value is not None:
                merged[key] = value
    return merged


def title_of(text: str | None) -> str | None:
    return text.split(" — ", 1)[0] if text else None


@dataclass
class ItemState:
    """Keyed by item id: lifecycle history (small) and engagements of the last 24 h."""

    lifecycle: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)
    engagements: list[tuple[float, str, str]] = field(default_factory=list)
    as_of: float = -math.inf
    supply_key: tuple[str, str] | None = None

    def update(self, event: Event) -> list[tuple[str, Any]]:
        """Returns tagged outputs: ("item_stats", row), ("catalog", CatalogItem), ("supply", ...)."""
        ts = epoch(event)
        self.as_of = max(self.as_of, ts)
        out: list[tuple[str, Any]] = []
        if event.kind in ITEM_KINDS:
            op = event.op if event.op in ("create", "update", "delete") else "update"
            bisect.insort(self.lifecycle, (ts, event.event_id, op, lifecycle_attrs(event)), key=lambda r: r[:2])
        else:
            _insert(self.engagements, (ts, event.event_id, count_kind(event.kind)), self.as_of, ITEM_MAX_S)
        merged = merge_lifecycle(self.lifecycle)
        item_id = event.item_id or ""
        out.append(("item_stats", self.row(item_id, merged)))
        if event.kind in ITEM_KINDS:
            updated = max(r[0] for r in self.lifecycle)
            out.append(("catalog", catalog_item(item_id, merged, updated)))
            key = (merged["cell"], merged["category"]) if merged["cell"] and merged["category"] else None
            if self.supply_key is not None and self.supply_key != key:
                # The item moved cell or category: the old cell × category no longer supplies it.
                out.append(("supply", (self.supply_key, SupplyUpdate(item_id, updated, removed=True))))
            if key is not None:
                out.append(("supply", (key, SupplyUpdate.from_merged(item_id, updated, merged))))
            self.supply_key = key
        return out

    def update_batch(self, events: list[Event]) -> list[tuple[str, Any]]:
        """Fold several events of this item; emit its final row and catalog state once, and every
        supply change (cells and categories can move within a batch)."""
        outputs = [out for event in events for out in self.update(event)]
        last: dict[str, Any] = {}
        supply = []
        for tag, payload in outputs:
            if tag == "supply":
                supply.append((tag, payload))
            else:
                last[tag] = payload
        return [(tag, payload) for tag, payload in last.items()] + supply

    def row(self, item_id: str, merged: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"item_id": item_id, "as_of": self.as_of}
        for w in ITEM_WINDOWS:
            counts = Counter(r[2] for r in self.engagements[_window_start(self.engagements, self.as_of - WINDOW_S[w]):])
            for kind in ITEM_COUNT_KINDS:
                row[f"{kind}_count_{w}"] = counts.get(kind, 0)
        views = row["view_count_24h"]
        row["ctr_24h"] = row["click_count_24h"] / views if views else None
        row["conversion_24h"] = row["purchase_count_24h"] / views if views else None
        price, original = merged["price"], merged["original_price"]
        row["price"], row["original_price"] = price, original
        row["discount"] = max(0.0, 1.0 - price / original) if price is not None and original else None
        row["active"] = bool(self.lifecycle) and is_active(merged, self.as_of)
        row["time_left_s"] = max(0.0, merged["valid_to"] - self.as_of) if merged["valid_to"] is not None else None
        row["category"], row["business_id"], row["cell"] = merged["category"], merged["business_id"], merged["cell"]
        return row


def is_active(merged: dict[str, Any], at: float) -> bool:
    if merged["deleted"]:
        return False
    if merged["valid_from"] is not None and at < merged["valid_from"]:
        return False
    return not (merged["valid_to"] is not None and at >= merged["valid_to"])


def catalog_item(item_id: str, merged: dict[str, Any], updated_ts: float) -> CatalogItem:
    return CatalogItem(
        item_id=item_id, business_id=merged["business_id"] or "unknown", kind=merged["kind"] or "offer",
        category=merged["category"], title=title_of(merged["text"]), text=merged["text"],
        lat=merged["lat"], lon=merged["lon"], cell=merged["cell"], price=merged["price"],
        original_price=merged["original_price"], currency=merged["currency"],
        valid_from=merged["valid_from"], valid_to=merged["valid_to"], deleted=merged["deleted"],
        updated_ts=updated_ts,
    )


# ------------------------------------------------------------------------------------- cell_supply
@dataclass(frozen=True)
class SupplyUpdate:
    item_id: str
    ts: float
    price: float | None = None
    original_price: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    deleted: bool = False
    removed: bool = False

    @classmethod
    def from_merged(cls, item_id: str, ts: float, merged: dict[str, Any]) -> SupplyUpdate:
        return cls(item_id, ts, merged["price"], merged["original_price"], merged["valid_from"],
                   merged["valid_to"], merged["deleted"])


def supply_key(cell: str, category: str) -> str:
    return f"{cell}|{category}"


def split_key(key: str) -> tuple[str, str]:
    cell, category = key.split("|", 1)
    return cell, category


@dataclass
class CellSupplyState:
    """Keyed by cell|category: the latest state of every item there."""

    items: dict[str, SupplyUpdate] = field(default_factory=dict)
    as_of: float = -math.inf

    def update(self, key: str, change: SupplyUpdate) -> dict[str, Any]:
        self.apply(change)
        return self.row(key)

    def apply(self, change: SupplyUpdate) -> None:
        self.as_of = max(self.as_of, change.ts)
        current = self.items.get(change.item_id)
        if current is None or change.ts >= current.ts:
            if change.removed:
                self.items.pop(change.item_id, None)
            else:
                self.items[change.item_id] = change

    def row(self, key: str) -> dict[str, Any]:
        cell, category = split_key(key)
        active = [u for u in self.items.values() if is_active(
            {"deleted": u.deleted, "valid_from": u.valid_from, "valid_to": u.valid_to}, self.as_of)]
        prices = [u.price for u in active if u.price is not None]
        discounts = [max(0.0, 1.0 - u.price / u.original_price) for u in active
                     if u.price is not None and u.original_price]
        return {
            "cell": cell, "category": category, "as_of": self.as_of,
            "active_items": len(active),
            "median_price": _median(prices),
            "p25_price": _quantile(prices, 0.25),
            "mean_discount": sum(discounts) / len(discounts) if discounts else None,
        }


# ------------------------------------------------------------------------------------- cell_demand
def demand_key(event: Event) -> str | None:
    """cell|category of a demand signal, or None when the event is not one (or lacks a place)."""
    if event.actor_type != "user" or event.kind not in DEMAND_BUCKETS:
        return None
    if event.cell is None or event.category is None:
        return None
    return supply_key(event.cell, event.category)


def demand_record(event: Event) -> tuple[float, str, str | None, str]:
    """(ts, event_id, bucket or None, user_id): all the demand step keeps of an event, and what the
    flow sends to the worker owning its cell|category instead of the whole event."""
    return epoch(event), event.event_id, DEMAND_BUCKETS[event.kind], event.actor_id


@dataclass
class CellDemandState:
    """Keyed by cell|category. Records: (ts, event_id, bucket or None, user_id)."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    as_of: float = -math.inf

    def update(self, key: str, event: Event) -> dict[str, Any]:
        self.add(event)
        return self.row(key)

    def add(self, event: Event) -> None:
        self.add_record(demand_record(event))

    def add_record(self, record: tuple[float, str, str | None, str]) -> None:
        """Fold in a :func:`demand_record`."""
        self.as_of = max(self.as_of, record[0])
        _insert(self.records, record, self.as_of, DEMAND_MAX_S)

    def row(self, key: str) -> dict[str, Any]:
        cell, category = split_key(key)
        row: dict[str, Any] = {"cell": cell, "category": category, "as_of": self.as_of}
        for w in DEMAND_WINDOWS:
            window = self.records[_window_start(self.records, self.as_of - WINDOW_S[w]):]
            counts = Counter(r[2] for r in window)
            for kind in DEMAND_COUNT_KINDS:
                row[f"{kind}_count_{w}"] = counts.get(kind, 0)
            row[f"distinct_users_{w}"] = len({r[3] for r in window})
        return row
