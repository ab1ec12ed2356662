"""The market model: what the business side has learned from the event stream (DESIGN §5).

:class:`MarketModel` folds canonical events in, one at a time and in event time
(:meth:`MarketModel.learn_event`):

* item lifecycle events keep each item's state (business, category, place, price, original
  price, validity, capacity) and its price changes;
* views, clicks and purchases of an item are counted, per hour, for the item and for its *area*
  (the item's H3 cell coarsened to ``area_resolution``) × category; searches and voice queries
  count for the area the user was in.

When an hour is over (event time, ``lateness`` after its end), its counts are revealed to the
learners, and never before: the area's traffic to a :class:`DemandForecaster` per (area,
category) with the active supply as context, each active item's views to one per item, and each
active item's sales, against the area's traffic that hour and the price it had, to
:class:`PriceElasticity`. Every tracked series gets its hour, zero included: a quiet hour is data.

The model answers the questions of the pricing feed: how busy the coming hour will be against the
usual for that time of week (:meth:`demand_outlook`), and what the item would sell at its current
price (:meth:`pricing_input`, which :class:`PriceRecommender` turns into a price and a reason).

It is a plain picklable object: the API builds it by replaying the offline log
(:func:`build_market_model`) or loads the checkpoint the flow writes (:meth:`save`/:meth:`load`).

>>> from datetime import datetime, timedelta, timezone
>>> from kairos.schema import Event
>>> t0 = datetime(2026, 5, 4, 9, tzinfo=timezone.utc)
>>> model = MarketModel()
>>> model.learn_event(Event("o1", t0, "business", "b1", "offer", item_id="latte", category="coffee",
...     lat=40.7265, lon=-73.9815, cell="882a100d35fffff", price=4.0, original_price=5.0,
...     valid_from=t0, valid_to=t0 + timedelta(days=3)))
>>> for minute in range(0, 180, 10):  # three hours of views and a few purchases
...     ts = t0 + timedelta(minutes=minute)
...     model.learn_event(Event(f"v{minute}", ts, "user", "u1", "view", item_id="latte"))
...     if minute % 30 == 0:
...         model.learn_event(Event(f"p{minute}", ts, "user", "u1", "purchase", item_id="latte", price=4.0))
>>> model.hours_closed  # the third hour is still open (it closes when later events arrive)
2
>>> model.items["latte"].list_price, model.items["latte"].area
(5.0, '872a100d3ffffff')
>>> outlook = model.demand_outlook("872a100d3ffffff", "coffee", t0 + timedelta(hours=2))
>>> outlook.forecast is not None, outlook.hours_seen
(True, 2)
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kairos import geo
from kairos.schema import Event
from online.demand_forecaster import DemandForecaster
from online.price_elasticity import ElasticityEstimate, PriceElasticity
from online.price_recommender import PricingInput

log = logging.getLogger(__name__)

HOUR_S = 3600.0
#: Bumped when the pickled layout changes; a checkpoint of another version is rebuilt, not loaded.
MODEL_VERSION = 1
#: Engagement kinds counted for an item; purchases and bookings are sales.
SALE_KINDS = ("purchase", "booking")
SEARCH_KINDS = ("search", "voice")
#: Item document fields (kept in ``attrs`` by the decoder) that state units sellable per hour.
CAPACITY_ATTRS = ("capacity_per_hour", "capacity", "seats", "slots")
#: How many price changes an item keeps (the newest).
PRICE_HISTORY = 64
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def hour_floor(epoch: float) -> float:
    return math.floor(epoch / HOUR_S) * HOUR_S


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


@dataclass
class MarketItem:
    """The state of one item as the market model knows it."""

    item_id: str
    business_id: str = "unknown"
    kind: str = "offer"
    category: str | None = None
    cell: str | None = None
    area: str | None = None
    lat: float | None = None
    lon: float | None = None
    title: str | None = None
    currency: str | None = None
    price: float | None = None
    original_price: float | None = None
    #: What the price is compared with: the original price, else the first price seen.
    list_price: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    deleted: bool = False
    capacity: float | None = None
    created_ts: float | None = None
    updated_ts: float | None = None
    #: (epoch, price), oldest first: the first price and every change since.
    prices: list[tuple[float, float]] = field(default_factory=list)
    #: Exponentially weighted share of the area's hourly traffic that is not the item's own views.
    others_share: float = 1.0
    views: int = 0
    sales: int = 0
    units: float = 0.0
    revenue: float = 0.0

    def active_during(self, start: float, end: float) -> bool:
        if self.deleted:
            return False
        if self.valid_from is not None and self.valid_from >= end:
            return False
        return not (self.valid_to is not None and self.valid_to <= start)

    def active_at(self, at: float) -> bool:
        return self.active_during(at, at + 1e-6)

    def price_at(self, at: float) -> float | None:
        """The price in force at ``at`` (the first price before the first change)."""
        price = self.prices[0][1] if self.prices else self.price
        for ts, value in self.prices:
            if ts > at:
                break
            price = value
        return price

    @property
    def price_changes(self) -> int:
        return max(0, len(self.prices) - 1)


@dataclass(frozen=True)
class DemandOutlook:
    """The coming hour's demand in an area for a category, against the usual for that time."""

    area: str
    category: str
    hour: datetime
    #: Expected traffic (views and searches) in the hour; None when the area has no history.
    forecast: float | None
    #: The usual traffic at this time of week (None until that time slot has been seen).
    usual: float | None
    #: forecast / usual (None when either is unknown or the usual is ~0).
    ratio: float | None
    #: Hours of this area's series revealed so far.
    hours_seen: int
    #: The model's data ends well before ``hour``: the forecast is the usual level only.
    stale: bool


@dataclass
class _Hour:
    traffic: dict[tuple[str, str], float] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    units: dict[str, float] = field(default_factory=dict)


class MarketModel:
    """Item states, hourly demand forecasters, price elasticities (see the module docstring).

    Parameters
    ----------
    area_resolution
        H3 resolution of an area (7: about 5 km², a neighbourhood).
    lateness_s
        How long after its end an hour stays open for late events.
    track_days
        An area series with no activity for this long stops getting zero hours.
    forecaster_lr
        Learning rate of the hourly forecasters.
    prior_elasticity
        Elasticity of a category before any price change has been seen.
    """

    def __init__(
        self,
        area_resolution: int = 7,
        lateness_s: float = 300.0,
        track_days: float = 7.0,
        forecaster_lr: float = 0.05,
        prior_elasticity: float = -1.5,
    ) -> None:
        self.version = MODEL_VERSION
        self.area_resolution = area_resolution
        self.lateness_s = lateness_s
        self.track_days = track_days
        # Hourly counts are noisy and often zero: a mean forecast (squared loss) starting from
        # "mostly the usual level for the hour" beats persistence until the weights have learned.
        prior = {"usual_change": 0.3, "gap_to_usual": 0.6}
        self.area_forecaster = DemandForecaster(
            horizon=timedelta(hours=1), slot_minutes=60, context=("supply",), loss="squared",
            lr=forecaster_lr, prior=prior, shrink=2.0, decay=0.05,
        )
        self.item_forecaster = DemandForecaster(
            horizon=timedelta(hours=1), slot_minutes=60, context=("price_ratio",), loss="squared",
            lr=forecaster_lr, prior=prior, shrink=2.0, decay=0.05,
        )
        self.elasticity = PriceElasticity(prior_elasticity=prior_elasticity)
        self.items: dict[str, MarketItem] = {}
        self.by_business: dict[str, set[str]] = {}
        self._open: dict[float, _Hour] = {}
        self._area_last_seen: dict[tuple[str, str], float] = {}
        self._area_hours: dict[tuple[str, str], int] = {}
        self._live: set[str] = set()
        self._recent_ids: dict[str, float] = {}
        #: Every hour before this epoch is closed (its counts were revealed to the learners).
        self.closed_until: float | None = None
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.n_events = 0
        self.n_late = 0
        self.n_duplicates = 0
        self.hours_closed = 0

    # ---- learning ----------------------------------------------------------------------------

    def learn_event(self, event: Event) -> None:
        """Fold one canonical event in (event-time order; late ones within ``lateness_s`` count)."""
        ts = event.ts.timestamp()
        if event.event_id in self._recent_ids:
            self.n_duplicates += 1  # a replay after a restart: already counted
            return
        self._recent_ids[event.event_id] = ts
        self.n_events += 1
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if self.closed_until is None:
            self.closed_until = hour_floor(ts)
        self.advance(ts - self.lateness_s)
        if event.is_item:
            self._apply_item(event, ts)  # item state is kept even when late: it is state, not a count
            return
        if event.actor_type != "user":
            return
        if ts < self.closed_until:
            self.n_late += 1  # its hour was already revealed; the count stays as it was
            return
        self._count(event, ts)

    def learn_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.learn_event(event)

    def advance(self, watermark: float) -> None:
        """Close every hour that ended at or before ``watermark`` (epoch seconds)."""
        if self.closed_until is None:
            return
        while self.closed_until + HOUR_S <= watermark:
            if not self._open and not self._tracked(self.closed_until) and not self._live:
                # Nothing to reveal (a long quiet gap): jump ahead instead of looping hour by hour.
                self.closed_until = hour_floor(watermark)
                break
            self._close(self.closed_until)
            self.closed_until += HOUR_S

    def _apply_item(self, event: Event, ts: float) -> None:
        item_id = event.item_id
        if not item_id:
            return
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = MarketItem(item_id=item_id, created_ts=ts)
        op = event.op
        if op == "delete":
            item.deleted = True
            item.updated_ts = ts
            self._live.discard(item_id)
            return
        if op == "create":
            item.deleted = False
        if event.actor_id and event.actor_id != "unknown":
            if item.business_id != event.actor_id:
                self.by_business.get(item.business_id, set()).discard(item_id)
            item.business_id = event.actor_id
            self.by_business.setdefault(event.actor_id, set()).add(item_id)
        item.kind = event.kind
        for name in ("category", "cell", "lat", "lon", "currency"):
            value = getattr(event, name)
            if value is not None:
                setattr(item, name, value)
        if event.text:
            item.title = event.text.split(" — ", 1)[0]
        if item.cell:
            item.area = geo.parent_cell(item.cell, self.area_resolution)
        if event.valid_from is not None:
            item.valid_from = event.valid_from.timestamp()
        if event.valid_to is not None:
            item.valid_to = event.valid_to.timestamp()
        if event.original_price is not None and event.original_price > 0:
            item.original_price = event.original_price
        elif op == "update" and event.price is not None and item.original_price is not None \
                and event.price >= item.original_price:
            item.original_price = None  # back at (or above) the old original: no longer a discount
        if event.price is not None and event.price >= 0:
            if item.price is None or abs(event.price - item.price) > 1e-9 or not item.prices:
                item.prices.append((ts, float(event.price)))
                item.prices.sort()
                del item.prices[:-PRICE_HISTORY]
            item.price = float(event.price)
        if item.list_price is None or item.original_price is not None:
            item.list_price = item.original_price or item.price
        capacity = _capacity(event.attrs)
        if capacity is not None:
            item.capacity = capacity
        item.updated_ts = ts
        if not item.deleted:
            self._live.add(item_id)

    def _count(self, event: Event, ts: float) -> None:
        hour = self._open.get(hour_floor(ts))
        if hour is None:
            hour = self._open[hour_floor(ts)] = _Hour()
        kind = event.kind
        if event.item_id and kind in ("view", "click", "save", *SALE_KINDS):
            item = self.items.get(event.item_id)
            key = self._area_key(item.category, item.cell) if item else self._area_key(event.category, event.cell)
            if kind == "view":
                hour.views[event.item_id] = hour.views.get(event.item_id, 0) + 1
                if item:
                    item.views += 1
                if key:
                    hour.traffic[key] = hour.traffic.get(key, 0.0) + 1.0
                    self._area_last_seen[key] = ts
            elif kind in SALE_KINDS:
                units = _units(event.attrs)
                hour.units[event.item_id] = hour.units.get(event.item_id, 0.0) + units
                if item:
                    item.sales += 1
                    item.units += units
                    item.revenue += event.price or 0.0
        elif kind in SEARCH_KINDS:
            key = self._area_key(event.category, event.cell)
            if key:
                hour.traffic[key] = hour.traffic.get(key, 0.0) + 1.0
                self._area_last_seen[key] = ts

    def _area_key(self, category: str | None, cell: str | None) -> tuple[str, str] | None:
        if not category or not cell:
            return None
        return geo.parent_cell(cell, self.area_resolution), category

    def _tracked(self, start: float) -> list[tuple[str, str]]:
        horizon = start - self.track_days * 86400.0
        return [key for key, seen in self._area_last_seen.items() if seen >= horizon]

    def _close(self, start: float) -> None:
        end = start + HOUR_S
        hour = self._open.pop(start, None) or _Hour()
        moment = utc(start)
        active = []
        for item_id in sorted(self._live):  # sorted: learning order must not depend on hashing
            item = self.items[item_id]
            if item.valid_to is not None and item.valid_to <= start:
                self._live.discard(item_id)  # expired for good (a later update re-adds it)
                continue
            if item.active_during(start, end) and item.category and item.area:
                active.append(item)
        supply: dict[tuple[str, str], int] = {}
        for item in active:
            key = (item.area or "", item.category or "")
            supply[key] = supply.get(key, 0) + 1
        for key in self._tracked(start):
            x = {"key": key, "moment": moment, "supply": float(supply.get(key, 0))}
            self.area_forecaster.learn_one(x, hour.traffic.get(key, 0.0))
            self._area_hours[key] = self._area_hours.get(key, 0) + 1
        for item in active:
            price = item.price_at(start)
            ratio = price / item.list_price if price and item.list_price else None
            x_item = {"key": item.item_id, "moment": moment, "price_ratio": ratio}
            self.item_forecaster.learn_one(x_item, float(hour.views.get(item.item_id, 0)))
            traffic = hour.traffic.get((item.area or "", item.category or ""), 0.0)
            own = float(hour.views.get(item.item_id, 0))
            if traffic > 0:
                # The item's own views follow its price: they are part of the response, not of the
                # demand it faces. Exposure is the rest of the area's traffic.
                item.others_share += 0.05 * ((traffic - own) / traffic - item.others_share)
            exposure = traffic - own
            if price and item.list_price and exposure > 0:
                units = hour.units.get(item.item_id, 0.0)
                censored = item.capacity is not None and units >= item.capacity
                self.elasticity.learn_one(self._elasticity_x(item, price), units, exposure, censored)
        # Ids older than anything still open can no longer be replayed into an open hour.
        cutoff = start - self.lateness_s - HOUR_S
        if len(self._recent_ids) > 10000:
            self._recent_ids = {k: v for k, v in self._recent_ids.items() if v >= cutoff}
        self.hours_closed += 1

    @staticmethod
    def _elasticity_x(item: MarketItem, price: float) -> dict[str, Any]:
        return {"item": item.item_id, "category": item.category, "area": item.area, "price": price,
                "reference": item.list_price}

    # ---- questions ---------------------------------------------------------------------------

    def items_of(self, business_id: str) -> list[MarketItem]:
        return [self.items[i] for i in sorted(self.by_business.get(business_id, ()))]

    def area_of(self, cell: str) -> str:
        return geo.parent_cell(cell, self.area_resolution)

    def demand_outlook(self, area: str, category: str, at: datetime) -> DemandOutlook:
        """Expected traffic in the hour containing ``at`` for (area, category)."""
        start = hour_floor(at.timestamp())
        moment = utc(start)
        key = (area, category)
        seen = self._area_hours.get(key, 0)
        usual = self.area_forecaster.usual(key, moment) if seen else None
        stale = self.closed_until is None or start - self.closed_until > 3 * HOUR_S
        if not seen:
            forecast = None
        elif stale:
            forecast = usual  # the last revealed hours are too old to say anything about now
        else:
            supply = sum(1 for i in self._active_items(start) if (i.area, i.category) == key)
            forecast = self.area_forecaster.predict_one({"key": key, "moment": moment, "supply": float(supply)})
        ratio = forecast / usual if forecast is not None and usual is not None and usual > 0.05 else None
        return DemandOutlook(area, category, moment, forecast, usual, ratio, seen, stale)

    def item_views_forecast(self, item_id: str, at: datetime) -> float | None:
        """Expected views of an item in the hour containing ``at`` (None before any history)."""
        item = self.items.get(item_id)
        if item is None or item_id not in set(self.item_forecaster.keys()):
            return None
        start = hour_floor(at.timestamp())
        price = item.price_at(start)
        ratio = price / item.list_price if price and item.list_price else None
        moment = utc(start)
        if self.closed_until is None or start - self.closed_until > 3 * HOUR_S:
            return self.item_forecaster.usual(item_id, moment)
        return self.item_forecaster.predict_one({"key": item_id, "moment": moment, "price_ratio": ratio})

    def elasticity_estimate(self, item_id: str, category: str, area: str, price: float,
                            list_price: float) -> ElasticityEstimate:
        x = {"item": item_id, "category": category, "area": area, "price": price, "reference": list_price}
        return self.elasticity.estimate(x)

    def pricing_input(
        self,
        item_id: str,
        category: str,
        area: str,
        price: float,
        list_price: float,
        at: datetime,
        *,
        original_price: float | None = None,
        capacity: float | None = None,
        cost_floor: float | None = None,
        competitor_prices: tuple[float, ...] = (),
        competitor_radius_km: float = 1.0,
        utc_offset_h: float = 0.0,
    ) -> tuple[PricingInput, DemandOutlook, list[str]]:
        """Everything :class:`PriceRecommender` needs for one item in the hour of ``at``, the
        demand outlook it rests on, and what is missing (empty when the model knows enough)."""
        outlook = self.demand_outlook(area, category, at)
        x = {"item": item_id, "category": category, "area": area, "price": price, "reference": list_price}
        estimate = self.elasticity.estimate(x)
        missing: list[str] = []
        expected: float | None = None
        if outlook.forecast is None:
            missing.append(f"demand history for {category} in this area")
        else:
            item = self.items.get(item_id)
            share = item.others_share if item is not None else 1.0
            expected = self.elasticity.predict_one(x, exposure=max(outlook.forecast, 0.0) * share)
        if estimate.source == "prior":
            missing.append(f"sales at different prices for {category} (no price response learned yet)")
        item = self.items.get(item_id)
        if capacity is None and item is not None:
            capacity = item.capacity
        label = slot_label(outlook.hour, utc_offset_h)
        pricing = PricingInput(
            item_id=item_id,
            price=price,
            list_price=list_price,
            expected_sales=expected,
            elasticity=estimate.elasticity,
            elasticity_source=estimate.source,
            # Without a demand forecast, a capacity cannot be weighed against anything.
            capacity=capacity if expected is not None else None,
            original_price=original_price,
            cost_floor=cost_floor,
            demand_ratio=outlook.ratio,
            slot_label=label,
            competitor_prices=tuple(competitor_prices),
            competitor_radius_km=competitor_radius_km,
        )
        return pricing, outlook, missing

    def _active_items(self, at: float) -> list[MarketItem]:
        return [self.items[i] for i in self._live if self.items[i].active_at(at)]

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.n_events,
            "late_events": self.n_late,
            "duplicate_events": self.n_duplicates,
            "items": len(self.items),
            "businesses": len(self.by_business),
            "hours_learned": self.hours_closed,
            "area_series": len(self._area_hours),
            "first_event": utc(self.first_ts).isoformat() if self.first_ts is not None else None,
            "last_event": utc(self.last_ts).isoformat() if self.last_ts is not None else None,
            "learned_until": utc(self.closed_until).isoformat() if self.closed_until is not None else None,
        }

    # ---- persistence -------------------------------------------------------------------------

    def save(self, path: Path | str) -> Path:
        """Pickle to ``path`` atomically (a reader sees the old file or the new one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: Path | str) -> MarketModel:
        """Unpickle a checkpoint written by :meth:`save` (internal files only: pickle runs code)."""
        with open(path, "rb") as handle:
            model = pickle.load(handle)
        if not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a MarketModel")
        if getattr(model, "version", None) != MODEL_VERSION:
            raise ValueError(f"{path} is a market model of version {getattr(model, 'version', None)}, "
                             f"this code reads version {MODEL_VERSION}")
        return model


def slot_label(hour: datetime, utc_offset_h: float = 0.0) -> str:
    """"Friday 18:00": the local weekday and hour of an hour start.

    >>> slot_label(datetime(2026, 5, 8, 22, tzinfo=timezone.utc), -4)
    'Friday 18:00'
    """
    local = hour + timedelta(hours=utc_offset_h)
    return f"{WEEKDAYS[local.weekday()]} {local.hour:02d}:{local.minute:02d}"


def _capacity(attrs: dict[str, Any]) -> float | None:
    for name in CAPACITY_ATTRS:
        value = attrs.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value):
            return float(value)
    return None


def _units(attrs: dict[str, Any]) -> float:
    qty = attrs.get("qty", attrs.get("quantity"))
    if isinstance(qty, (int, float)) and not isinstance(qty, bool) and 0 < qty < 1e6:
        return float(qty)
    return 1.0


def market_model_path(settings: Any) -> Path:
    """Where the flow checkpoints the market model: ``$KAIROS_HOME/models/market.pkl``."""
    return Path(settings.home) / "models" / "market.pkl"


def new_market_model(settings: Any) -> MarketModel:
    """An empty market model configured from settings (KAIROS_MARKET_AREA_RESOLUTION < 0: one level
    coarser than the event cells)."""
    resolution = int(getattr(settings, "market_area_resolution", -1))
    if resolution < 0:
        resolution = max(0, int(getattr(settings, "h3_resolution", 8)) - 1)
    return MarketModel(
        area_resolution=resolution,
        lateness_s=float(getattr(settings, "market_lateness_s", 300.0)),
        prior_elasticity=float(getattr(settings, "pricing_prior_elasticity", -1.5)),
    )


def build_market_model(settings: Any, model: MarketModel | None = None) -> MarketModel:
    """A market model learned by replaying the offline event log in event-time order."""
    from kairos.stores.offline_log import OfflineLog

    if model is None:
        model = new_market_model(settings)
    frame = OfflineLog(settings.offline_dir).read_events()
    if frame.empty:
        return model
    # At-least-once delivery may have written an event twice; ties keep the log's own order.
    frame = frame.drop_duplicates("event_id").sort_values("ts", kind="stable")
    for row in frame.to_dict("records"):
        model.learn_event(Event.from_row(row))
    return model


__all__ = [
    "DemandOutlook",
    "MarketItem",
    "MarketModel",
    "build_market_model",
    "hour_floor",
    "market_model_path",
    "slot_label",
]
