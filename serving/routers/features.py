"""Feature views for analysts (DESIGN §4, §6): the catalog, live values with their age, point-in-
time history, distributions with drift, and a map of cell-keyed views.

Live values come from the online store (what the models read now); history, statistics and the map
come from the offline log (Parquet), which holds every row the flow wrote with its event time, so
"what did the model see at *t*" has an exact answer. The computations are the pure functions of
:mod:`kairos.feature_stats`; this module reads the stores and turns bad input into 4xx.

``stats``, ``map`` and ``keys`` are reserved words after a view name: they are not looked up as keys.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Path, Query

from kairos import feature_stats as fs
from kairos.features import VIEWS, ViewSpec
from kairos.schema import CATEGORIES
from kairos.stores.last_known import StoreUnavailable
from kairos.stores.offline_log import OfflineLog
from serving.deps import Services, ServicesDep
from serving.errors import ApiError
from serving.schemas import ERROR_RESPONSES, IsoTime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/features", tags=["features"], responses=ERROR_RESPONSES)

ViewName = Annotated[str, Path(max_length=64, description=f"a feature view: {', '.join(VIEWS)}")]
Key = Annotated[str, Path(max_length=200, description="the entity key: `user_id`, `item_id`, or `cell:category`")]
At = Annotated[IsoTime | None, Query(description="ISO-8601 time")]
#: The field a map shows unless asked otherwise.
MAP_DEFAULT_FIELD = {"cell_demand": "view_count_24h", "cell_supply": "active_items"}


def _spec(view: str) -> ViewSpec:
    if view not in VIEWS:
        raise ApiError(404, f"unknown feature view {view!r}; known views: {', '.join(VIEWS)}")
    return VIEWS[view]


def _key(spec: ViewSpec, key: str, services: Services) -> dict[str, str]:
    try:
        return fs.parse_key(spec, key, services.settings.h3_resolution)
    except fs.BadKey as exc:
        raise ApiError(422, f"key: {exc}", [{"field": "key", "message": str(exc), "type": "value_error"}]) from None


#: Times outside these bounds are refused: periods are computed with pandas timestamps, which
#: end in 2262, and no feature row is older than the epoch.
EARLIEST, LATEST = pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC")


def _when(name: str, value: datetime | None) -> pd.Timestamp | None:
    if value is None:
        return None
    if not EARLIEST.to_pydatetime() <= value <= LATEST.to_pydatetime():
        message = f"must be between {EARLIEST.date()} and {LATEST.date()}"
        raise ApiError(422, f"{name}: {message}", [{"field": name, "message": message, "type": "value_error"}])
    return fs.utc(value)


def _log(services: Services) -> OfflineLog:
    return OfflineLog(services.settings.offline_dir)


def _registered(services: Services) -> set[str] | None:
    """Views the Feast registry knows, or None if it cannot be asked (e.g. a stand-in store)."""
    try:
        return {v.name for v in services.features.store.list_feature_views()}
    except Exception:
        log.debug("feature views could not be listed from the Feast registry", exc_info=True)
        return None


@router.get("", summary="Catalog of feature views: entities, fields with types and windows, freshness objective")
def catalog(services: ServicesDep) -> dict[str, Any]:
    from feature_repo.definitions import ENTITY_DESCRIPTIONS

    offline = _log(services)
    sources = {name: {"push_source": f"{name}_push", "batch_source": f"{name}_log",
                      "batch_path": str(offline.features_dir(name))} for name in VIEWS}
    registered = _registered(services)
    views = fs.build_catalog(VIEWS.values(), ENTITY_DESCRIPTIONS, sources)
    for view in views:
        view["feast"]["registered"] = None if registered is None else view["name"] in registered
    return {"views": views, "key_separator": fs.KEY_SEPARATOR, "categories": list(CATEGORIES)}


@router.get("/{view}", summary="One feature view of the catalog")
def catalog_entry(view: ViewName, services: ServicesDep) -> dict[str, Any]:
    _spec(view)
    return next(v for v in catalog(services)["views"] if v["name"] == view)


@router.get("/{view}/stats", summary="Per-field distributions, null rates and drift (last days vs the days before)")
def stats(
    view: ViewName,
    services: ServicesDep,
    at: Annotated[IsoTime | None, Query(description="end of the period (default: the newest row in the log)")] = None,
    days: Annotated[int, Query(ge=1, le=90, description="length of each compared period in days")] = 7,
    bins: Annotated[int, Query(ge=2, le=100, description="histogram bins of numeric fields")] = 20,
    top: Annotated[int, Query(ge=1, le=100, description="most common values of text fields")] = 10,
) -> dict[str, Any]:
    spec = _spec(view)
    offline = _log(services)
    reference = _when("at", at)
    if reference is None:
        newest = offline.read_rows_where(view, columns=[fs.TS])
        reference = newest[fs.TS].max() if not newest.empty else None
    since = None if reference is None else reference - pd.Timedelta(days=2 * days)
    rows = offline.read_rows_where(view, since=since) if reference is not None else offline.read_rows_where(view)
    return fs.view_stats(spec, rows, reference, days, bins, top, now=pd.Timestamp.now(tz="UTC"))


@router.get("/{view}/map", summary="Cells of a cell-keyed view as H3 polygons with one field's value")
def cell_map(
    view: ViewName,
    services: ServicesDep,
    field: Annotated[str | None, Query(max_length=64, description="numeric field to show (default per view)")] = None,
    category: Annotated[str | None, Query(max_length=32, description="one category (default: all combined)")] = None,
    at: Annotated[IsoTime | None, Query(description="values in force at this time (default: the latest)")] = None,
    area: Annotated[int, Query(ge=0, le=1000, description="which area (city) to draw; 0 = the busiest")] = 0,
) -> dict[str, Any]:
    spec = _spec(view)
    if "cell" not in spec.entities or "category" not in spec.entities:
        raise ApiError(422, f"view: {view} is not keyed by cell and category; maps exist for "
                            f"{', '.join(v for v, s in VIEWS.items() if 'cell' in s.entities)}")
    field = field or MAP_DEFAULT_FIELD.get(view)
    dtypes = {f.name: f.dtype for f in spec.fields if f.dtype in ("int", "float") and f.name != "as_of"}
    if field not in dtypes:
        raise ApiError(422, f"field: {field!r} is not a numeric field of {view}; one of {', '.join(dtypes)}",
                       [{"field": "field", "message": "unknown field", "type": "value_error"}])
    if category is not None and category not in CATEGORIES:
        raise ApiError(422, f"category: must be one of {', '.join(CATEGORIES)}",
                       [{"field": "category", "message": "unknown category", "type": "value_error"}])
    rows = _log(services).read_rows_where(view, columns=["cell", "category", field, fs.TS])
    when = _when("at", at)
    if when is not None:
        rows = rows[rows[fs.TS] <= when]
    values = fs.cell_values(rows, dtypes[field], field, category)
    try:
        body = fs.cell_map(values, area)
    except IndexError as exc:
        raise ApiError(422, f"area: {exc}") from None
    combined = "sum" if dtypes[field] == "int" else "mean"
    return {"view": view, "field": field, "category": category,
            "combined_over_categories": None if category else combined,
            "at": when.isoformat() if when is not None else None,
            "source": "offline log: latest row of each cell and category", **body}


@router.get("/{view}/keys", summary="Recently updated keys of a view (to pick one for a lookup)")
def keys(
    view: ViewName,
    services: ServicesDep,
    prefix: Annotated[str, Query(max_length=200, description="only keys starting with this")] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> dict[str, Any]:
    spec = _spec(view)
    rows = _log(services).read_rows_where(view, columns=[*spec.entities, fs.TS])
    rows = rows.sort_values(fs.TS, kind="stable").drop_duplicates(subset=list(spec.entities), keep="last")
    out = []
    for _, row in rows.iloc[::-1].iterrows():
        key = fs.format_key(spec, row)
        if key.startswith(prefix):
            out.append({"key": key, "event_time": fs.plain(row[fs.TS])})
            if len(out) >= limit:
                break
    return {"view": view, "key_format": fs.key_format(spec), "keys": out}


@router.get("/{view}/{key}", summary="Live values of one entity from the online store, with event time and age")
def lookup(view: ViewName, key: Key, services: ServicesDep) -> dict[str, Any]:
    spec = _spec(view)
    entity = _key(spec, key, services)
    degraded = False
    try:
        row = services.features.read_one(view, entity)
    except StoreUnavailable as exc:
        row, degraded = exc.fallback, True
        if row is None:
            raise ApiError(503, f"the online store is unavailable and no earlier value of {view} {key} is "
                                "known; try again shortly") from None
    if row is None:
        where = ", ".join(f"{k}={v}" for k, v in entity.items())
        raise ApiError(404, f"no {view} row for {where} in the online store (the flow has not seen this "
                            "entity; GET /v1/features/{view}/keys lists known keys)".replace("{view}", view))
    return {**fs.live_values(spec, row, time.time()), "now": fs.iso(time.time()), "degraded": degraded}


@router.get("/{view}/{key}/history", summary="Point-in-time values of one entity from the offline log")
def history(
    view: ViewName,
    key: Key,
    services: ServicesDep,
    start: At = None,
    end: At = None,
    at: Annotated[IsoTime | None, Query(description="also return the row in force at this time (as of)")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="at most this many rows (the newest)")] = 1000,
) -> dict[str, Any]:
    spec = _spec(view)
    entity = _key(spec, key, services)
    begin, finish, when = _when("start", start), _when("end", end), _when("at", at)
    if begin is not None and finish is not None and begin > finish:
        raise ApiError(422, "start: must not be after end",
                       [{"field": "start", "message": "must not be after end", "type": "value_error"}])
    rows = _log(services).read_rows_where(view, equals=entity)
    if rows.empty:
        where = ", ".join(f"{k}={v}" for k, v in entity.items())
        raise ApiError(404, f"no {view} rows for {where} in the offline log")
    body = fs.key_history(rows, begin, finish, when, limit)
    fields = [{"name": f.name, "dtype": f.dtype} for f in spec.fields]
    return {"view": view, "key": entity, "start": _iso(begin), "end": _iso(finish), "fields": fields, **body}


def _iso(value: pd.Timestamp | datetime | None) -> str | None:
    return None if value is None else value.isoformat()
