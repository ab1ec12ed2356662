"""The business side's services: the market model the API serves from, local time, and the pricing
feed (``GET /v1/businesses/{id}/pricing`` and its stream).

Where the market model comes from: the flow checkpoints it to ``$KAIROS_HOME/models/market.pkl``;
:class:`MarketModelSource` loads that file and reloads it when its modification time changes.
Without a checkpoint it replays the offline event log once (:func:`build_market_model`), and
again when the log has grown, at most every ``rebuild_interval_s``.

Pricing reads the *catalog* for each item's current state (price, validity), since the business
may have changed its price a second ago, and the market model for what was learned (demand,
elasticity). Competitors are the other businesses' active items of the same category within the
radius, from the catalog too.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kairos.geo import haversine_km
from kairos.stores.catalog import CatalogItem
from online.market_model import MarketModel, build_market_model, market_model_path
from online.price_recommender import PriceRecommender
from serving.deps import Services
from serving.errors import ApiError

log = logging.getLogger(__name__)

#: Name of the model source in :meth:`Services.extra`.
MARKET_MODEL = "market_model"


class MarketModelSource:
    """The market model for the API: the flow's checkpoint when there is one, else the offline log.

    The first build from the log happens in the request that needs it; later rebuilds (the log
    grew) run in a background thread while requests keep the model they have.
    """

    def __init__(self, settings: Any, rebuild_interval_s: float = 60.0) -> None:
        self.settings = settings
        self.path = market_model_path(settings)
        self.rebuild_interval_s = rebuild_interval_s
        self._lock = threading.Lock()
        self._model: MarketModel | None = None
        self._loaded_mtime: float | None = None
        self._built_at = 0.0
        self._built_log_mtime: float | None = None
        self._rebuilding: threading.Thread | None = None
        self.origin = "none"

    def get(self) -> MarketModel:
        with self._lock:
            mtime = _mtime(self.path)
            if mtime is not None:
                if mtime != self._loaded_mtime:
                    try:
                        self._model = MarketModel.load(self.path)
                        self._loaded_mtime, self.origin = mtime, "checkpoint"
                    except Exception:
                        # A half-written or foreign file must not take pricing down: keep what we have.
                        log.warning("could not load the market model at %s", self.path, exc_info=True)
                        self._loaded_mtime = mtime
                        if self._model is None:
                            self._rebuild(_latest_mtime(self.settings.offline_dir / "events"))
                assert self._model is not None
                return self._model
            log_mtime = _latest_mtime(self.settings.offline_dir / "events")
            if self._model is None or self.origin == "checkpoint":
                self._rebuild(log_mtime)
            elif log_mtime != self._built_log_mtime and time.monotonic() - self._built_at >= self.rebuild_interval_s \
                    and (self._rebuilding is None or not self._rebuilding.is_alive()):
                self._built_at = time.monotonic()  # one rebuild per interval, even if it fails
                self._rebuilding = threading.Thread(target=self._rebuild_in_background, args=(log_mtime,),
                                                    name="market-model-rebuild", daemon=True)
                self._rebuilding.start()
            assert self._model is not None
            return self._model

    def _rebuild(self, log_mtime: float | None) -> None:
        began = time.perf_counter()
        self._model = build_market_model(self.settings)
        self._built_at, self._built_log_mtime, self.origin = time.monotonic(), log_mtime, "offline log"
        log.info("market model built from the offline log in %.1f s", time.perf_counter() - began)

    def _rebuild_in_background(self, log_mtime: float | None) -> None:
        try:
            model = build_market_model(self.settings)
        except Exception:
            log.warning("rebuilding the market model from the offline log failed", exc_info=True)
            return
        with self._lock:
            if self.origin != "checkpoint":  # a checkpoint that appeared meanwhile wins
                self._model, self._built_log_mtime, self.origin = model, log_mtime, "offline log"

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for a background rebuild to finish (tests, shutdown)."""
        thread = self._rebuilding
        if thread is not None:
            thread.join(timeout)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _latest_mtime(folder: Path) -> float | None:
    try:
        return max((p.stat().st_mtime for p in folder.glob("part-*.parquet")), default=None)
    except OSError:
        return None


def setting(settings: Any, name: str, default: Any) -> Any:
    """A ``Settings`` field this module asks the lead to add (see docs/business.md), or its default
    while ``kairos/config.py`` does not have it yet."""
    return getattr(settings, name, default)


def market_source(services: Services) -> MarketModelSource:
    return services.extra(MARKET_MODEL, lambda s: MarketModelSource(
        s.settings, rebuild_interval_s=float(setting(s.settings, "market_rebuild_interval_s", 60.0))))


def market_model(services: Services) -> MarketModel:
    try:
        return market_source(services).get()
    except Exception:
        log.error("the market model could not be built", exc_info=True)
        raise ApiError(503, "the market model is not available; try again shortly") from None


# ---- local time ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalTime:
    """How hours are shown: a named zone, or an offset estimated from the longitude."""

    label: str
    zone: ZoneInfo | None
    fixed_offset_h: float

    def offset_h(self, at: datetime) -> float:
        if self.zone is not None:
            offset = at.astimezone(self.zone).utcoffset()
            return offset.total_seconds() / 3600.0 if offset else 0.0
        return self.fixed_offset_h

    def local(self, at: datetime) -> datetime:
        return at + timedelta(hours=self.offset_h(at))


def local_time(tz: str | None, lon: float | None) -> LocalTime:
    """The zone ``tz`` (IANA name) when given, else solar time from the longitude, to the hour.

    Longitude gives the right hour in most places, but may be an hour off under daylight saving
    time or in zones drawn far from their meridian: clients that know the zone should pass it.
    """
    if tz:
        try:
            return LocalTime(tz, ZoneInfo(tz), 0.0)
        except (ZoneInfoNotFoundError, ValueError):
            raise ApiError(
                422, f"tz: unknown time zone {tz!r}; use an IANA name such as America/New_York",
                [{"field": "tz", "message": "unknown time zone", "type": "value_error"}],
            ) from None
    offset = float(max(-12, min(14, round((lon or 0.0) / 15.0))))
    return LocalTime(f"UTC{offset:+.0f} (estimated from longitude; pass tz for the exact zone)", None, offset)


# ---- pricing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricingOptions:
    capacity: float | None = None
    floor_ratio: float | None = None
    max_step: float | None = None
    radius_km: float = 1.0
    tz: str | None = None


def business_items(services: Services, business_id: str) -> list[CatalogItem]:
    """The business's items from the catalog; 404 when it has none and the model never saw it."""
    items = services.catalog.by_business(business_id)
    if not items and not market_model(services).by_business.get(business_id):
        raise ApiError(404, f"unknown business {business_id!r}: no items of it have been seen")
    return items


def check_item(services: Services, business_id: str, items: list[CatalogItem], item_id: str) -> CatalogItem:
    """The business's item ``item_id``; a clear 404 when it is someone else's or nobody's."""
    for item in items:
        if item.item_id == item_id:
            return item
    if services.catalog.get(item_id) is not None:
        # Said without naming the owner: one business must not learn about another's items.
        raise ApiError(404, f"item {item_id!r} is not an item of business {business_id!r}")
    raise ApiError(404, f"unknown item {item_id!r}")


def pricing_feed(
    services: Services, business_id: str, at: datetime, options: PricingOptions, item_id: str | None = None
) -> dict[str, Any]:
    """The pricing feed of a business at ``at``: a recommendation per active item, or what is missing."""
    items = business_items(services, business_id)
    if item_id is not None:
        chosen = check_item(services, business_id, items, item_id)
        if not chosen.active_at(at.timestamp()):
            raise ApiError(409, f"item {item_id!r} is not on sale at {at.isoformat()} ({_inactive_reason(chosen, at)})")
        items = [chosen]
    model = market_model(services)
    settings = services.settings
    recommender = PriceRecommender(
        max_step=options.max_step or float(setting(settings, "pricing_max_step", 0.15)),
        floor_ratio=options.floor_ratio or float(setting(settings, "pricing_floor_ratio", 0.7)),
        max_markup=float(setting(settings, "pricing_max_markup", 0.25)),
        min_gain=float(setting(settings, "pricing_min_gain", 0.01)),
    )
    lon = next((i.lon for i in items if i.lon is not None), None)
    clock = local_time(options.tz, lon)
    priced, skipped = [], []
    ts = at.timestamp()
    for item in sorted(items, key=lambda i: i.item_id):
        if not item.active_at(ts):
            skipped.append({"item_id": item.item_id, "reason": _inactive_reason(item, at)})
            continue
        if item.price is None or item.price <= 0:
            skipped.append({"item_id": item.item_id, "reason": "no price (free or unpriced items are not priced)"})
            continue
        priced.append(_price_item(services, model, recommender, item, at, options, clock))
    missing = sorted({m for p in priced for m in p["missing"]})
    if not items:
        missing = ["active items: the business has no item on sale"]
    elif not priced:
        missing = ["active items with a price at this time"]
    status = "ok" if any(p["recommended_price"] is not None for p in priced) else "not_enough_data"
    return {
        "business_id": business_id,
        "at": at,
        "timezone": clock.label,
        "status": status,
        "missing": missing,
        "items": priced,
        "skipped": skipped,
        "model": {**{k: model.summary()[k] for k in ("learned_until", "events", "hours_learned")},
                  "source": market_source(services).origin},
    }


def _price_item(
    services: Services, model: MarketModel, recommender: PriceRecommender, item: CatalogItem, at: datetime,
    options: PricingOptions, clock: LocalTime,
) -> dict[str, Any]:
    known = model.items.get(item.item_id)
    category = item.category or (known.category if known else None) or "unknown"
    area = model.area_of(item.cell) if item.cell else (known.area if known and known.area else "")
    list_price = item.original_price or (known.list_price if known and known.list_price else None) or item.price
    assert item.price is not None and list_price is not None
    competitors = competitor_prices(services, item, at, options.radius_km)
    capacity = options.capacity if options.capacity is not None else (known.capacity if known else None)
    pricing, outlook, missing = model.pricing_input(
        item.item_id, category, area, float(item.price), float(list_price), at,
        original_price=item.original_price, capacity=capacity,
        competitor_prices=tuple(competitors), competitor_radius_km=options.radius_km,
        utc_offset_h=clock.offset_h(at),
    )
    estimate = model.elasticity_estimate(item.item_id, category, area, float(item.price), float(list_price))
    # One gap is bridged (a default elasticity, or no demand level: without a capacity the best
    # price does not depend on it); with neither, a recommendation would be a guess.
    enough = len(missing) < 2
    recommendation = recommender.recommend(pricing).to_dict() if enough else None
    if recommendation is None:
        reason = "Not enough data yet: " + "; ".join(missing) + "."
    else:
        reason = recommendation["reason"]
    views = model.item_views_forecast(item.item_id, at)
    return {
        "item_id": item.item_id,
        "title": item.title,
        "kind": item.kind,
        "category": category,
        "currency": item.currency,
        "current_price": float(item.price),
        "original_price": item.original_price,
        "list_price": float(list_price),
        "recommended_price": recommendation["recommended_price"] if recommendation else None,
        "action": recommendation["action"] if recommendation else None,
        "change": _round(recommendation["change"], 4) if recommendation else None,
        "bounds": {"lower": recommendation["lower_bound"], "upper": recommendation["upper_bound"]}
        if recommendation else None,
        "guardrail": recommendation["guardrail"] if recommendation else None,
        "expected_sales_now": _round(recommendation["expected_sales_now"] if recommendation else None, 3),
        "expected_sales": _round(recommendation["expected_sales"] if recommendation else None, 3),
        "expected_revenue_now": _round(recommendation["expected_revenue_now"] if recommendation else None, 2),
        "expected_revenue": _round(recommendation["expected_revenue"] if recommendation else None, 2),
        "expected_revenue_change": _round(recommendation["expected_revenue_change"] if recommendation else None, 4),
        "expected_views_next_hour": _round(views, 2),
        "demand": {
            "area": area,
            "hour": outlook.hour,
            "slot": pricing.slot_label,
            "forecast": _round(outlook.forecast, 2),
            "usual": _round(outlook.usual, 2),
            "ratio": _round(outlook.ratio, 2),
            "hours_seen": outlook.hours_seen,
            "stale": outlook.stale,
        },
        "elasticity": {
            "value": round(estimate.elasticity, 3),
            "source": estimate.source,
            "item_price_changes": known.price_changes if known else 0,
        },
        "competitors": _competitor_summary(competitors, options.radius_km),
        "capacity": capacity,
        "reason": reason,
        "missing": missing,
    }


def competitor_prices(services: Services, item: CatalogItem, at: datetime, radius_km: float) -> list[float]:
    """Prices of other businesses' active items of the same category within ``radius_km``."""
    if item.lat is None or item.lon is None or not item.category:
        return []
    prices = []
    for other in services.catalog.near(item.lat, item.lon, radius_km, at=at):
        if other.business_id == item.business_id or other.category != item.category:
            continue
        if other.price is None or other.price <= 0 or other.lat is None or other.lon is None:
            continue
        if haversine_km(item.lat, item.lon, other.lat, other.lon) <= radius_km:
            prices.append(float(other.price))
    return prices


def _competitor_summary(prices: list[float], radius_km: float) -> dict[str, Any]:
    if not prices:
        return {"count": 0, "radius_km": radius_km, "median_price": None, "min_price": None, "max_price": None}
    return {"count": len(prices), "radius_km": radius_km, "median_price": round(statistics.median(prices), 2),
            "min_price": min(prices), "max_price": max(prices)}


def _inactive_reason(item: CatalogItem, at: datetime) -> str:
    ts = at.timestamp()
    if item.deleted:
        return "withdrawn"
    if item.valid_from is not None and ts < item.valid_from:
        return f"not on sale yet (from {datetime.fromtimestamp(item.valid_from, at.tzinfo).isoformat()})"
    if item.valid_to is not None and ts >= item.valid_to:
        return f"expired (ended {datetime.fromtimestamp(item.valid_to, at.tzinfo).isoformat()})"
    return "not active"


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def material_change(before: dict[str, Any] | None, after: dict[str, Any], min_change: float) -> bool:
    """Whether a stream subscriber should hear about ``after``: a new item, a recommendation that
    appeared or went, another action, or a recommended price that moved by ``min_change`` or more."""
    if before is None:
        return True
    old, new = before.get("recommended_price"), after.get("recommended_price")
    if (old is None) != (new is None) or before.get("action") != after.get("action"):
        return True
    if old is None or new is None:
        return before.get("missing") != after.get("missing")
    return abs(new - old) >= min_change * max(abs(old), 1e-9) or before.get("current_price") != after.get(
        "current_price")


__all__ = [
    "LocalTime",
    "MarketModelSource",
    "PricingOptions",
    "business_items",
    "check_item",
    "competitor_prices",
    "local_time",
    "market_model",
    "material_change",
    "pricing_feed",
]
