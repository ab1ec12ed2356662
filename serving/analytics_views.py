"""Area and business analytics (DESIGN §6): demand and supply by category and hour, competitor
prices, best hours to promote, a business's KPIs against its area, and their charts.

History comes from the offline event log (Parquet, queried with DuckDB: only the columns and the
time window asked for are read); supply and prices from the catalog (every item with its validity
window); the current hour's numbers from the Feast rows ``cell_demand`` and ``cell_supply``.

Definitions:

* *demand* in an area: searches, voice queries, views, clicks, saves and purchases made by users
  located in the area's cells (as ``cell_demand`` counts them); per day, by local hour;
* *supply*: items of the category located in the area and on sale during the hour;
* *best hours to promote*: the local hours with the most demand per competing item;
* a business's *area*: other businesses with items of its categories within ``radius_km`` of its
  items; revenue is the sum of the amounts paid in purchases and bookings of their items.
"""

from __future__ import annotations

import io
import logging
import math
import statistics
from datetime import datetime, timedelta
from typing import Any

import h3
import numpy as np
import pandas as pd

from kairos.geo import cell_center, haversine_km, parent_cell
from kairos.schema import CATEGORIES
from kairos.stores.catalog import CatalogItem
from serving.business_views import LocalTime
from serving.deps import Services
from serving.errors import ApiError

log = logging.getLogger(__name__)

DEMAND_KINDS = ("search", "voice", "view", "click", "save", "purchase", "booking")
SALE_KINDS = ("purchase", "booking")
HOURS = list(range(24))
#: Best hours listed per category.
TOP_HOURS = 3


# ---- reading the offline log -------------------------------------------------------------------


def read_user_events(
    settings: Any, since: datetime, until: datetime, *, item_ids: list[str] | None = None,
    cells: list[str] | None = None,
) -> pd.DataFrame:
    """User events in ``[since, until)`` (optionally of these items, or located in these cells)."""
    import duckdb

    files = _event_files(settings)
    columns = ["ts", "kind", "actor_id", "item_id", "category", "cell", "price"]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    sql = (f"SELECT DISTINCT ON (event_id) event_id, {', '.join(columns)} FROM read_parquet($files) "
           "WHERE actor_type = 'user' AND kind <> 'profile' AND ts >= $since AND ts < $until")
    params: dict[str, Any] = {"files": files, "since": since, "until": until}
    if item_ids is not None:
        sql += " AND list_contains($items, item_id)"
        params["items"] = item_ids or [""]
    if cells is not None:
        sql += " AND list_contains($cells, cell)"
        params["cells"] = cells or [""]
    with duckdb.connect() as con:
        frame = con.execute(sql, params).df()
    frame = frame.drop(columns=["event_id"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _event_files(settings: Any) -> list[str]:
    return sorted(str(p) for p in (settings.offline_dir / "events").glob("part-*.parquet"))


def covered_days(settings: Any, since: datetime, until: datetime, days: int) -> int:
    """Whole days of ``[since, until)`` the log holds user events for, anywhere (0: none), so that
    a young log does not dilute per-day averages and a quiet area is not mistaken for a young log."""
    import duckdb

    files = _event_files(settings)
    if not files:
        return 0
    sql = ("SELECT min(ts), max(ts) FROM read_parquet($files) "
           "WHERE actor_type = 'user' AND kind <> 'profile' AND ts >= $since AND ts < $until")
    with duckdb.connect() as con:
        first, last = con.execute(sql, {"files": files, "since": since, "until": until}).fetchone()
    if first is None or last is None:
        return 0
    span = (pd.Timestamp(last) - pd.Timestamp(first)).total_seconds() / 86400.0
    return max(1, min(days, math.ceil(span - 1e-9)))


def _local(frame: pd.DataFrame, clock: LocalTime, at: datetime) -> pd.DataFrame:
    # One offset for the whole window: the hour a daylight-saving change moves is a rounding error
    # next to what an hour-of-day profile is for.
    shifted = frame["ts"] + pd.Timedelta(hours=clock.offset_h(at))
    return frame.assign(hour=shifted.dt.hour, date=shifted.dt.date)


# ---- area --------------------------------------------------------------------------------------


def resolve_area(settings: Any, cell: str | None, lat: float | None, lon: float | None, ring: int) -> list[str]:
    """The cells of the area: ``cell`` (or the cell of the point) first, then its rings of neighbours."""
    if cell is None:
        if lat is None or lon is None:
            raise ApiError(422, "cell or lat and lon: one is required",
                           [{"field": "cell", "message": "give an H3 cell, or lat and lon", "type": "missing"}])
        cell = h3.latlng_to_cell(lat, lon, settings.h3_resolution)
    elif not h3.is_valid_cell(cell):
        raise ApiError(422, f"cell: {cell[:40]!r} is not an H3 cell index",
                       [{"field": "cell", "message": "not an H3 cell index", "type": "value_error"}])
    if h3.get_resolution(cell) > settings.h3_resolution:
        raise ApiError(
            422, f"cell: resolution {h3.get_resolution(cell)} is finer than the event cells "
                 f"(KAIROS_H3_RESOLUTION={settings.h3_resolution}); use a cell of resolution "
                 f"{settings.h3_resolution} or coarser",
            [{"field": "cell", "message": "resolution too fine", "type": "value_error"}],
        )
    return [cell, *sorted(set(h3.grid_disk(cell, ring)) - {cell})]


def area_items(services: Services, cells: list[str]) -> list[CatalogItem]:
    """Every catalog item (any time) located in the area's cells."""
    resolution = h3.get_resolution(cells[0])
    wanted = set(cells)
    centre = cell_center(cells[0])
    # A circle around the centre that holds every cell of the area, for the catalog's index.
    radius = max(haversine_km(*centre, *cell_center(c)) for c in cells) + 2 * h3.average_hexagon_edge_length(
        resolution, unit="km")
    out = []
    for item in services.catalog.near(centre[0], centre[1], radius, limit=100_000):
        if item.cell and parent_cell(item.cell, resolution) in wanted:
            out.append(item)
    return out


def area_report(
    services: Services, cells: list[str], at: datetime, days: int, category: str | None, clock: LocalTime,
) -> dict[str, Any]:
    settings = services.settings
    resolution = h3.get_resolution(cells[0])
    since = at - timedelta(days=days)
    with_data = covered_days(settings, since, at, days)
    covered = max(1, with_data)
    # Read only the area: its cells at the events' resolution (children of coarser cells), unless
    # that list would be huge, in which case the rows are filtered after reading.
    wanted: list[str] | None = cells
    if resolution < settings.h3_resolution:
        children = 7 ** (settings.h3_resolution - resolution) * len(cells)
        wanted = [k for c in cells for k in h3.cell_to_children(c, settings.h3_resolution)] \
            if children <= 20_000 else None
    window = _local(read_user_events(settings, since, at, cells=wanted), clock, at)
    events = window[window["kind"].isin(DEMAND_KINDS) & window["category"].notna() & window["cell"].notna()]
    if resolution < settings.h3_resolution and len(events):
        parents = {c: parent_cell(c, resolution) for c in events["cell"].unique()}
        events = events.assign(cell=events["cell"].map(parents))
    events = events[events["cell"].isin(set(cells))]
    items = area_items(services, cells)
    categories = _categories(category, events, items)

    demand = {c: [0.0] * 24 for c in categories}
    purchases = {c: [0.0] * 24 for c in categories}
    for (cat, hour), count in events.groupby(["category", "hour"]).size().items():
        if cat in demand:
            demand[cat][int(hour)] = round(count / covered, 3)
    sales = events[events["kind"].isin(SALE_KINDS)]
    for (cat, hour), count in sales.groupby(["category", "hour"]).size().items():
        if cat in purchases:
            purchases[cat][int(hour)] = round(count / covered, 3)
    # Supply over the same days the demand averages over: the last ``covered`` days before ``at``.
    supply = _supply_by_hour(items, categories, at - timedelta(days=covered), at, clock)
    prices = {c: _price_stats([i for i in items if i.category == c and i.active_at(at.timestamp())])
              for c in categories}
    best = {c: _best_hours(demand[c], supply[c]) for c in categories}
    missing = []
    if not len(events):
        missing.append(f"demand in this area in the last {days} days")
    if not items:
        missing.append("items located in this area")
    return {
        "cells": cells,
        "resolution": resolution,
        "at": at,
        "days": days,
        "days_with_data": with_data,
        "timezone": clock.label,
        "categories": categories,
        "hours": HOURS,
        "demand_per_day": demand,
        "purchases_per_day": purchases,
        "supply_per_day": supply,
        "competitor_prices": prices,
        "best_hours_to_promote": best,
        "now": _now(services, cells, categories) if resolution == settings.h3_resolution else None,
        "missing": missing,
    }


def _categories(category: str | None, events: pd.DataFrame, items: list[CatalogItem]) -> list[str]:
    if category is not None:
        return [category]
    seen = set(events["category"].dropna().unique()) | {i.category for i in items if i.category}
    return [c for c in CATEGORIES if c in seen] + sorted(seen - set(CATEGORIES))


def _supply_by_hour(
    items: list[CatalogItem], categories: list[str], start: datetime, end: datetime, clock: LocalTime,
) -> dict[str, list[float]]:
    """Average items on sale per local hour of the day, per category, over ``[start, end)``."""
    out = {c: [0.0] * 24 for c in categories}
    first = math.floor(start.timestamp() / 3600.0) * 3600.0
    hours = np.arange(first, end.timestamp(), 3600.0)
    if not len(hours):
        return out
    local_hour = (((hours + clock.offset_h(end) * 3600.0) // 3600.0) % 24).astype(int)
    occurrences = np.maximum(np.bincount(local_hour, minlength=24), 1)
    for category in categories:
        chosen = [i for i in items if i.category == category and not i.deleted]
        if not chosen:
            continue
        valid_from = np.array([i.valid_from if i.valid_from is not None else -np.inf for i in chosen])
        valid_to = np.array([i.valid_to if i.valid_to is not None else np.inf for i in chosen])
        # On sale at some moment of the hour [h, h + 1 h).
        active = (valid_from[:, None] < hours[None, :] + 3600.0) & (valid_to[:, None] > hours[None, :])
        counts = np.bincount(local_hour, weights=active.sum(axis=0), minlength=24)
        out[category] = [round(float(v), 3) for v in counts / occurrences]
    return out


def _price_stats(items: list[CatalogItem]) -> dict[str, Any]:
    prices = sorted(float(i.price) for i in items if i.price is not None and i.price > 0)
    discounts = [d for d in (i.discount for i in items) if d is not None]
    if not prices:
        return {"count": 0, "min": None, "p25": None, "median": None, "p75": None, "max": None,
                "mean_discount": None, "histogram": []}
    quartiles = np.percentile(prices, [25, 50, 75])
    edges = np.histogram_bin_edges(prices, bins=min(8, max(1, len(prices))))
    counts, edges = np.histogram(prices, bins=edges)
    return {
        "count": len(prices),
        "min": prices[0],
        "p25": round(float(quartiles[0]), 2),
        "median": round(float(quartiles[1]), 2),
        "p75": round(float(quartiles[2]), 2),
        "max": prices[-1],
        "mean_discount": round(statistics.fmean(discounts), 4) if discounts else None,
        "histogram": [{"from": round(float(edges[k]), 2), "to": round(float(edges[k + 1]), 2), "items": int(n)}
                      for k, n in enumerate(counts)],
    }


def _best_hours(demand: list[float], supply: list[float]) -> list[dict[str, Any]]:
    """Hours with the most demand per competing item (demand / (items + 1): an empty market still
    needs demand to be worth it)."""
    scored = [(d / (s + 1.0), h) for h, (d, s) in enumerate(zip(demand, supply, strict=True)) if d > 0]
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [{"hour": h, "demand_per_day": demand[h], "items_on_sale": supply[h], "demand_per_item": round(score, 3)}
            for score, h in scored[:TOP_HOURS]]


def _now(services: Services, cells: list[str], categories: list[str]) -> dict[str, Any] | None:
    """This hour's Feast rows summed over the area (None when the feature store does not answer)."""
    keys = [{"cell": c, "category": k} for c in cells for k in categories]
    try:
        demand_rows = services.features.read("cell_demand", keys)
        supply_rows = services.features.read("cell_supply", keys)
    except Exception:
        log.warning("cell_demand/cell_supply unreadable; area analytics without the current hour", exc_info=True)
        return None
    out: dict[str, Any] = {}
    for category in categories:
        demand = [r for k, r in zip(keys, demand_rows, strict=True) if r and k["category"] == category]
        supply = [r for k, r in zip(keys, supply_rows, strict=True) if r and k["category"] == category]
        medians = [r["median_price"] for r in supply if r.get("median_price") is not None and r.get("active_items")]
        out[category] = {
            "searches_1h": sum(int(r.get("search_count_1h") or 0) for r in demand),
            "views_1h": sum(int(r.get("view_count_1h") or 0) for r in demand),
            "purchases_24h": sum(int(r.get("purchase_count_24h") or 0) for r in demand),
            "active_items": sum(int(r.get("active_items") or 0) for r in supply),
            "median_of_cell_median_prices": round(statistics.median(medians), 2) if medians else None,
        }
    return out


# ---- business --------------------------------------------------------------------------------


def business_report(
    services: Services, business_id: str, items: list[CatalogItem], at: datetime, days: int, radius_km: float,
    clock: LocalTime,
) -> dict[str, Any]:
    categories = sorted({i.category for i in items if i.category})
    located = [i for i in items if i.lat is not None and i.lon is not None]
    owners: dict[str, str] = {i.item_id: business_id for i in items}
    competitors: dict[str, list[CatalogItem]] = {}
    if located:
        lat = statistics.fmean(i.lat for i in located if i.lat is not None)
        lon = statistics.fmean(i.lon for i in located if i.lon is not None)
        for other in services.catalog.near(lat, lon, radius_km, limit=100_000):
            if other.business_id == business_id or other.category not in categories:
                continue
            if other.lat is None or other.lon is None or haversine_km(lat, lon, other.lat, other.lon) > radius_km:
                continue
            competitors.setdefault(other.business_id, []).append(other)
            owners[other.item_id] = other.business_id
    since = at - timedelta(days=days)
    frame = _local(read_user_events(services.settings, since, at, item_ids=sorted(owners)), clock, at)
    frame = frame.assign(business=frame["item_id"].map(owners))
    with_data = covered_days(services.settings, since, at, days)
    covered = max(1, with_data)
    per_business = {b: _kpis(frame[frame["business"] == b]) for b in [business_id, *sorted(competitors)]}
    own = per_business[business_id]
    others = [per_business[b] for b in sorted(competitors)]
    area_avg = {k: round(statistics.fmean(o[k] for o in others), 4) for k in own} if others else None
    revenues = sorted(((k["revenue"], b) for b, k in per_business.items()), reverse=True)
    total_revenue = sum(r for r, _ in revenues)
    dates = sorted(frame["date"].unique()) if len(frame) else []
    sales = frame[frame["kind"].isin(SALE_KINDS)]
    daily = []
    for date in dates:
        day = sales[sales["date"] == date]
        own_revenue = float(day.loc[day["business"] == business_id, "price"].fillna(0).sum())
        other_revenue = float(day.loc[day["business"] != business_id, "price"].fillna(0).sum())
        daily.append({"date": str(date), "revenue": round(own_revenue, 2),
                      "area_average_revenue": round(other_revenue / len(others), 2) if others else None})
    hourly_own = [0.0] * 24
    hourly_area = [0.0] * 24
    for hour, count in sales[sales["business"] == business_id].groupby("hour").size().items():
        hourly_own[int(hour)] = round(count / covered, 3)
    if others:
        for hour, count in sales[sales["business"] != business_id].groupby("hour").size().items():
            hourly_area[int(hour)] = round(count / covered / len(others), 3)
    missing = []
    if own["views"] + own["orders"] == 0:
        missing.append(f"views or orders of this business in the last {days} days")
    if not competitors:
        missing.append(f"competitors of the same categories within {radius_km:g} km")
    return {
        "business_id": business_id,
        "at": at,
        "days": days,
        "days_with_data": with_data,
        "timezone": clock.label,
        "categories": categories,
        "radius_km": radius_km,
        "competitors": len(competitors),
        "kpis": own,
        "area_average": area_avg,
        "revenue_share_of_area": round(own["revenue"] / total_revenue, 4) if total_revenue > 0 else None,
        "revenue_rank": 1 + [b for _, b in revenues].index(business_id),
        "businesses_ranked": len(revenues),
        "daily": daily,
        "orders_by_hour": {"hours": HOURS, "own_per_day": hourly_own,
                           "area_average_per_day": hourly_area if others else None},
        "price_position": _price_position(items, competitors, at),
        "missing": missing,
    }


def _kpis(frame: pd.DataFrame) -> dict[str, float]:
    kinds = frame["kind"].value_counts()
    views = int(kinds.get("view", 0))
    orders = int(sum(kinds.get(k, 0) for k in SALE_KINDS))
    revenue = float(frame.loc[frame["kind"].isin(SALE_KINDS), "price"].fillna(0).sum())
    return {
        "views": views,
        "clicks": int(kinds.get("click", 0)),
        "saves": int(kinds.get("save", 0)),
        "orders": orders,
        "revenue": round(revenue, 2),
        "conversion": round(orders / views, 4) if views else 0.0,
        "average_order_value": round(revenue / orders, 2) if orders else 0.0,
    }


def _price_position(items: list[CatalogItem], competitors: dict[str, list[CatalogItem]], at: datetime) -> list[dict]:
    ts = at.timestamp()
    out = []
    for category in sorted({i.category for i in items if i.category}):
        own = [float(i.price) for i in items if i.category == category and i.active_at(ts) and i.price]
        theirs = [float(i.price) for group in competitors.values() for i in group
                  if i.category == category and i.active_at(ts) and i.price]
        entry: dict[str, Any] = {"category": category, "own_median_price": None, "area_median_price": None,
                                 "difference": None}
        if own:
            entry["own_median_price"] = round(statistics.median(own), 2)
        if theirs:
            entry["area_median_price"] = round(statistics.median(theirs), 2)
        if own and theirs:
            entry["difference"] = round(statistics.median(own) / statistics.median(theirs) - 1, 4)
        out.append(entry)
    return out


# ---- charts ------------------------------------------------------------------------------------


def render(figure: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, bbox_inches="tight")
    return buffer.getvalue()


def area_chart(report: dict[str, Any], chart: str, fmt: str) -> bytes:
    """Demand or supply by local hour per category, or competitor prices per category."""
    from matplotlib.figure import Figure  # the object API: no global pyplot state between threads

    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    where = f"{report['cells'][0]} and {len(report['cells']) - 1} neighbouring cells"
    if chart == "prices":
        stats = {c: s for c, s in report["competitor_prices"].items() if s["count"]}
        labels = list(stats)
        axes.bar(labels, [s["median"] for s in stats.values()], color="#4c72b0", label="median")
        axes.errorbar(labels, [s["median"] for s in stats.values()],
                      yerr=[[s["median"] - s["min"] for s in stats.values()],
                            [s["max"] - s["median"] for s in stats.values()]],
                      fmt="none", ecolor="#333333", capsize=4, label="min to max")
        axes.set_ylabel("price of items on sale")
        axes.set_title(f"Competitor prices now, {where}")
    else:
        series = report["demand_per_day" if chart == "demand" else "supply_per_day"]
        for category, values in series.items():
            axes.plot(report["hours"], values, marker="o", markersize=3, label=category)
        axes.set_xticks(range(0, 24, 2))
        axes.set_xlabel(f"local hour ({report['timezone'].split(' ')[0]})")
        axes.set_ylabel("demand signals per day" if chart == "demand" else "items on sale (average)")
        axes.set_title(f"{'Demand' if chart == 'demand' else 'Supply'} by hour, {where}, "
                       f"average of {max(report['days_with_data'], 1)} days")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, ncol=2)
    axes.grid(alpha=0.3)
    return render(figure, fmt)


def business_chart(report: dict[str, Any], fmt: str) -> bytes:
    """The business's revenue per day beside the area's average business."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    dates = [d["date"] for d in report["daily"]]
    positions = np.arange(len(dates))
    axes.bar(positions - 0.2, [d["revenue"] for d in report["daily"]], width=0.4, label=report["business_id"])
    if report["area_average"] is not None:
        axes.bar(positions + 0.2, [d["area_average_revenue"] or 0.0 for d in report["daily"]], width=0.4,
                 label=f"area average ({report['competitors']} competitors)")
    axes.set_xticks(positions, dates, rotation=45, ha="right", fontsize=8)
    axes.set_ylabel("revenue")
    axes.set_title(f"{report['business_id']}: revenue per day against the area's average business")
    if dates:
        axes.legend(fontsize=8)
    axes.grid(alpha=0.3, axis="y")
    return render(figure, fmt)


__all__ = [
    "area_chart",
    "area_report",
    "business_chart",
    "business_report",
    "read_user_events",
    "resolve_area",
]
