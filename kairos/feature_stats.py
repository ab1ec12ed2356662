"""Feature views for analysts (DESIGN §4, §6): the pure part of ``/v1/features`` and ``/ui``.

Everything here works on plain values and DataFrames of offline-log rows (as
:meth:`kairos.stores.offline_log.OfflineLog.read_rows_where` returns them), so it is unit-tested
without a store: the catalog built from the specs of :mod:`kairos.features`, entity-key parsing,
live values with their age, point-in-time history (as-of semantics), distributions, drift (PSI)
and the cell map.

Time semantics. A row's event time is its ``as_of`` (stored as ``event_timestamp``): the newest
event time the flow had seen for the entity. The value "in force" at time *t* is the latest row
with ``event_timestamp <= t``; of two rows with the same event time the later-written one wins
(a late event folded into the same ``as_of`` replaces the row, exactly as in the online store).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import h3
import numpy as np
import pandas as pd

from kairos.features import WINDOWS, ViewSpec
from kairos.schema import CATEGORIES

TS = "event_timestamp"
#: Below this many entities in either week, drift is "not enough data" rather than a number.
MIN_DRIFT_ROWS = 10
#: PSI levels: the usual rule of thumb (below 0.1 stable, 0.1-0.25 moderate, above: major).
PSI_MODERATE, PSI_MAJOR = 0.1, 0.25
#: Empty bins get this share instead of 0, so the log in PSI stays finite.
PSI_EPSILON = 1e-4
#: Separator of entity values in a key of a view with several entities (``cell:category``).
KEY_SEPARATOR = ":"

_ID_PATTERNS = {
    # The same rules as the API's user and item id parameters (serving/schemas.py, routers).
    "user_id": re.compile(r"^[A-Za-z0-9_.:-]{1,64}$"),
    "item_id": re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$"),
}


class BadKey(ValueError):
    """An entity key that cannot be a key of the view (wrong shape, not an H3 cell, ...)."""


# --- catalog -------------------------------------------------------------------------------------


def field_window(name: str) -> str | None:
    """The window a field aggregates over, from its name (``view_count_24h`` -> ``24h``)."""
    for window in WINDOWS:
        if name.endswith(f"_{window}"):
            return window
    return None


def key_format(spec: ViewSpec) -> str:
    return KEY_SEPARATOR.join(spec.entities)


def build_catalog(views: Iterable[ViewSpec], entity_descriptions: Mapping[str, str] | None = None,
                  sources: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One entry per view: entities, fields with types and windows, the freshness objective.

    ``entity_descriptions`` are those of the Feast entities (``feature_repo/definitions.py``);
    ``sources`` adds per-view Feast facts (push and batch source) when the caller has them.
    """
    descriptions = entity_descriptions or {}
    catalog = []
    for spec in views:
        fields = [{"name": f.name, "dtype": f.dtype, "description": f.description, "window": field_window(f.name)}
                  for f in spec.fields]
        windows = sorted({f["window"] for f in fields if f["window"]}, key=lambda w: WINDOWS[w])
        catalog.append({
            "name": spec.name,
            "description": spec.description,
            "entities": [{"name": e, "description": descriptions.get(e, "")} for e in spec.entities],
            "key_format": key_format(spec),
            "fields": fields,
            "windows": [{"name": w, "seconds": int(WINDOWS[w].total_seconds())} for w in windows],
            "freshness_objective_s": spec.freshness_s,
            "feast": dict((sources or {}).get(spec.name, {})),
        })
    return catalog


# --- keys ----------------------------------------------------------------------------------------


def parse_key(spec: ViewSpec, key: str, h3_resolution: int | None = None) -> dict[str, str]:
    """``"u0001"`` -> ``{"user_id": "u0001"}``; ``"<cell>:spa"`` -> ``{"cell": ..., "category": "spa"}``.

    Raises :class:`BadKey` saying what is wrong: a key that cannot exist is the client's mistake
    (422), not an unknown entity (404).
    """
    if len(spec.entities) == 1:
        parts = [key]
    else:
        parts = key.split(KEY_SEPARATOR)
        if len(parts) != len(spec.entities):
            raise BadKey(f"a {spec.name} key is {key_format(spec)!s} ({len(spec.entities)} parts separated by "
                         f"{KEY_SEPARATOR!r}), got {len(parts)} part(s)")
    out = {}
    for entity, value in zip(spec.entities, parts, strict=True):
        _check_entity(entity, value, h3_resolution)
        out[entity] = value
    return out


def _check_entity(entity: str, value: str, h3_resolution: int | None) -> None:
    if entity in _ID_PATTERNS:
        if not _ID_PATTERNS[entity].match(value):
            raise BadKey(f"{entity} {value[:40]!r} must match {_ID_PATTERNS[entity].pattern}")
    elif entity == "cell":
        if not h3.is_valid_cell(value):
            raise BadKey(f"cell {value[:40]!r} is not an H3 cell (e.g. 882a100d21fffff)")
        if h3_resolution is not None and h3.get_resolution(value) != h3_resolution:
            raise BadKey(f"cell {value} has H3 resolution {h3.get_resolution(value)}; features are kept "
                         f"at resolution {h3_resolution}")
    elif entity == "category":
        if value not in CATEGORIES:
            raise BadKey(f"category {value[:40]!r} is not one of {', '.join(CATEGORIES)}")
    elif not value:
        raise BadKey(f"{entity} must not be empty")


def format_key(spec: ViewSpec, row: Mapping[str, Any]) -> str:
    return KEY_SEPARATOR.join(str(row[e]) for e in spec.entities)


# --- values --------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A JSON-ready Python value: numpy scalars unwrapped, NaN and NaT to None, times to ISO-8601."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def live_values(spec: ViewSpec, row: Mapping[str, Any], now_s: float) -> dict[str, Any]:
    """An online row as the analyst sees it: every field with its event time and age.

    All fields of a row are computed together at the row's ``as_of``, so they share its event
    time; the age is ``now - as_of`` (negative when event time runs ahead of the server clock,
    as with a simulation that ends later today).
    """
    as_of = float(row["as_of"])
    age = round(now_s - as_of, 3)
    event_time = iso(as_of)
    values = [{"name": f.name, "dtype": f.dtype, "value": plain(row.get(f.name)), "event_time": event_time,
               "age_s": age, "window": field_window(f.name), "description": f.description}
              for f in spec.fields if f.name != "as_of"]
    return {
        "view": spec.name,
        "key": {e: row[e] for e in spec.entities},
        "event_time": event_time,
        "age_s": age,
        "freshness_objective_s": spec.freshness_s,
        "fresh": age <= spec.freshness_s,
        "values": values,
    }


# --- history (point in time) ---------------------------------------------------------------------


def ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows by event time; of rows with the same event time only the last written is kept (it
    replaced the others)."""
    if rows.empty:
        return rows
    by_time = rows.sort_values(TS, kind="stable")
    return by_time.drop_duplicates(subset=[TS], keep="last").reset_index(drop=True)


def as_of(rows: pd.DataFrame, at: pd.Timestamp) -> dict[str, Any] | None:
    """The row in force at ``at``: the latest with event time <= at (rows of one key)."""
    rows = ordered(rows)
    before = rows[rows[TS] <= at]
    return None if before.empty else row_dict(before.iloc[-1])


def row_dict(row: pd.Series) -> dict[str, Any]:
    values = {k: plain(v) for k, v in row.items() if k != TS}
    return {"event_time": plain(row[TS]), **values}


def key_history(rows: pd.DataFrame, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
                at: pd.Timestamp | None = None, limit: int = 1000) -> dict[str, Any]:
    """History of one key: the rows with event time in ``[start, end]`` (the newest ``limit``), the
    row in force at ``start`` (so a chart can begin there), and the row in force at ``at``."""
    rows = ordered(rows)
    window = rows
    if start is not None:
        window = window[window[TS] >= start]
    if end is not None:
        window = window[window[TS] <= end]
    truncated = len(window) > limit
    window = window.iloc[-limit:] if truncated else window
    before_start = rows[rows[TS] < start] if start is not None else rows.iloc[:0]
    return {
        "rows": [row_dict(r) for _, r in window.iterrows()],
        "truncated": truncated,
        "in_force_at_start": None if before_start.empty else row_dict(before_start.iloc[-1]),
        "at": None if at is None else {"time": at.isoformat(), "row": as_of(rows, at)},
        "first_event_time": plain(rows[TS].iloc[0]) if not rows.empty else None,
        "last_event_time": plain(rows[TS].iloc[-1]) if not rows.empty else None,
    }


# --- distributions and drift ---------------------------------------------------------------------


def latest_per_entity(rows: pd.DataFrame, entities: Iterable[str], after: pd.Timestamp | None,
                      until: pd.Timestamp) -> pd.DataFrame:
    """The last row of each entity with event time in ``(after, until]``: each entity counts once,
    as it stood at the end of the period (an active user is not counted a hundred times)."""
    chosen = rows[rows[TS] <= until]
    if after is not None:
        chosen = chosen[chosen[TS] > after]
    chosen = chosen.sort_values(TS, kind="stable")
    return chosen.drop_duplicates(subset=list(entities), keep="last").reset_index(drop=True)


def _finite_numbers(values: pd.Series) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    return numbers[np.isfinite(numbers)]


def histogram(values: pd.Series, dtype: str, bins: int = 20) -> list[dict[str, Any]]:
    """Bins ``{"from", "to", "count"}`` of the finite values: one bin per integer when an int
    field spans fewer than ``bins`` values, else ``bins`` equal-width bins (the last one closed)."""
    numbers = _finite_numbers(values)
    if numbers.size == 0:
        return []
    lo, hi = float(numbers.min()), float(numbers.max())
    if lo == hi:
        return [{"from": lo, "to": hi, "count": int(numbers.size)}]
    if dtype == "int" and hi - lo + 1 <= bins:
        edges = np.arange(lo, hi + 2)
        counts, _ = np.histogram(numbers, bins=edges - 0.5)
        return [{"from": float(e), "to": float(e), "count": int(c)} for e, c in zip(edges[:-1], counts, strict=True)]
    counts, edges = np.histogram(numbers, bins=bins, range=(lo, hi))
    return [{"from": float(a), "to": float(b), "count": int(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]


def top_values(values: pd.Series, top: int = 10) -> list[dict[str, Any]]:
    counts = values.dropna().astype(str).value_counts()
    # Ties in a stable order (by value), so the same data always shows the same bars.
    ranked = sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:top]
    return [{"value": v, "count": int(c)} for v, c in ranked]


def _is_null(values: pd.Series, dtype: str) -> pd.Series:
    nulls = values.isna()
    if dtype in ("int", "float"):
        # A non-numeric value in a numeric column is as good as missing for the distribution.
        nulls |= pd.to_numeric(values, errors="coerce").isna()
    return nulls


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    shares = counts / total if total else np.zeros_like(counts, dtype=float)
    return np.maximum(shares, PSI_EPSILON)


def psi_numeric(expected: pd.Series, actual: pd.Series, bins: int = 10) -> float | None:
    """Population stability index of ``actual`` against ``expected`` over the deciles of
    ``expected`` (open-ended first and last bins); missing values form a bin of their own, so a
    field that starts coming back empty drifts too. None when ``expected`` has no value at all."""
    e_nums, a_nums = _finite_numbers(expected), _finite_numbers(actual)
    e_null, a_null = len(expected) - e_nums.size, len(actual) - a_nums.size
    if len(expected) == 0 or len(actual) == 0:
        return None
    if e_nums.size:
        edges = np.unique(np.quantile(e_nums, np.linspace(0, 1, bins + 1)[1:-1]))
        if edges.size == 0:
            edges = np.array([float(e_nums[0])])
    else:
        edges = np.unique(a_nums)[:1] if a_nums.size else np.array([0.0])
    e_counts = np.bincount(np.digitize(e_nums, edges, right=True), minlength=edges.size + 1).astype(float)
    a_counts = np.bincount(np.digitize(a_nums, edges, right=True), minlength=edges.size + 1).astype(float)
    e_counts = np.append(e_counts, e_null)
    a_counts = np.append(a_counts, a_null)
    return _psi(e_counts, a_counts)


def psi_categorical(expected: pd.Series, actual: pd.Series, top: int = 20) -> float | None:
    """PSI over the values (the ``top`` most common of both periods, the rest as "other", missing
    as its own value)."""
    if len(expected) == 0 or len(actual) == 0:
        return None
    e = expected.astype(object).where(expected.notna(), "\0null").astype(str)
    a = actual.astype(object).where(actual.notna(), "\0null").astype(str)
    both = pd.concat([e, a]).value_counts()
    keep = set(both.index[:top]) if len(both) > top else set(both.index)
    e = e.where(e.isin(keep), "\0other")
    a = a.where(a.isin(keep), "\0other")
    labels = sorted(set(e) | set(a))
    e_counts = e.value_counts().reindex(labels, fill_value=0).to_numpy(dtype=float)
    a_counts = a.value_counts().reindex(labels, fill_value=0).to_numpy(dtype=float)
    return _psi(e_counts, a_counts)


def _psi(e_counts: np.ndarray, a_counts: np.ndarray) -> float:
    e, a = _shares(e_counts), _shares(a_counts)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_words(psi: float | None, n_previous: int, n_current: int, days: int) -> dict[str, Any]:
    """PSI with a level and a sentence an analyst can act on."""
    if psi is None or min(n_previous, n_current) < MIN_DRIFT_ROWS:
        return {"psi": None, "level": "unknown",
                "words": (f"not enough data to compare: {n_current} entities in the last {days} days, "
                          f"{n_previous} in the {days} days before (need {MIN_DRIFT_ROWS} in each)")}
    psi = round(psi, 4)
    if psi < PSI_MODERATE:
        return {"psi": psi, "level": "stable",
                "words": f"stable: the last {days} days look like the {days} days before"}
    if psi < PSI_MAJOR:
        return {"psi": psi, "level": "moderate",
                "words": f"moderate shift against the {days} days before: worth a look"}
    return {"psi": psi, "level": "major",
            "words": f"major shift: the distribution changed against the {days} days before"}


def field_stats(spec: ViewSpec, current: pd.DataFrame, previous: pd.DataFrame, days: int,
                bins: int = 20, top: int = 10) -> list[dict[str, Any]]:
    out = []
    for f in spec.fields:
        if f.name == "as_of":
            continue  # the event time itself: reported as freshness, not as a distribution
        # A column the rows lack (an older log, before the field existed) is all missing.
        values = current[f.name] if f.name in current else pd.Series([None] * len(current), dtype=object)
        before = previous[f.name] if f.name in previous else pd.Series([None] * len(previous), dtype=object)
        nulls = int(_is_null(values, f.dtype).sum())
        stats: dict[str, Any] = {
            "name": f.name, "dtype": f.dtype, "window": field_window(f.name),
            "count": int(len(values)), "nulls": nulls,
            "null_rate": round(nulls / len(values), 4) if len(values) else None,
        }
        if f.dtype in ("int", "float"):
            numbers = _finite_numbers(values)
            stats["summary"] = None if numbers.size == 0 else {
                "min": float(numbers.min()), "max": float(numbers.max()), "mean": float(numbers.mean()),
                "median": float(np.median(numbers)),
            }
            stats["histogram"] = histogram(values, f.dtype, bins)
            psi = psi_numeric(before, values)
        else:
            stats["top_values"] = top_values(values, top)
            stats["distinct"] = int(values.dropna().astype(str).nunique())
            psi = psi_categorical(before, values)
        stats["drift"] = drift_words(psi, len(before), len(values), days)
        out.append(stats)
    return out


def view_stats(spec: ViewSpec, rows: pd.DataFrame, at: pd.Timestamp | None = None, days: int = 7,
               bins: int = 20, top: int = 10, now: pd.Timestamp | None = None) -> dict[str, Any]:
    """Distributions over the entities seen in the ``days`` before ``at`` (each entity's last row),
    and drift against the ``days`` before those. ``at`` defaults to the newest event time in
    ``rows``, so a log that stopped yesterday still describes itself. ``rows`` must cover
    ``(at - 2 * days, at]``. An empty log gives counts of zero, never an error."""
    period = pd.Timedelta(days=days)
    reference = at if at is not None else (rows[TS].max() if not rows.empty else None)
    if reference is None or pd.isna(reference):
        empty = rows.iloc[:0]
        return {
            "view": spec.name, "reference_time": None, "days": days, "current": None, "previous": None,
            "entities_current": 0, "entities_previous": 0, "rows_in_log": 0, "freshness": None,
            "fields": field_stats(spec, empty, empty, days, bins, top),
            "note": "the offline log holds no rows of this view yet",
        }
    current = latest_per_entity(rows, spec.entities, reference - period, reference)
    previous = latest_per_entity(rows, spec.entities, reference - 2 * period, reference - period)
    freshness = None
    if not current.empty:
        # How old each entity's newest row is at the reference time: a feature that stopped
        # updating shows up here before its values look wrong.
        ages = (reference - current[TS]).dt.total_seconds()
        freshness = {"median_age_s": float(ages.median()), "max_age_s": float(ages.max()),
                     "within_objective": round(float((ages <= spec.freshness_s).mean()), 4)}
    return {
        "view": spec.name,
        "reference_time": plain(reference),
        "now": plain(now) if now is not None else None,
        "days": days,
        "current": {"from": plain(reference - period), "to": plain(reference)},
        "previous": {"from": plain(reference - 2 * period), "to": plain(reference - period)},
        "entities_current": int(len(current)),
        "entities_previous": int(len(previous)),
        "rows_in_log": int(len(rows)),
        "freshness": freshness,
        "fields": field_stats(spec, current, previous, days, bins, top),
        "note": None,
    }


# --- map -----------------------------------------------------------------------------------------


def cell_values(rows: pd.DataFrame, dtype: str, field: str, category: str | None) -> dict[str, float]:
    """Per cell, the latest ``field`` of each (cell, category), one category or combined over all
    (counts add up; other numbers are averaged)."""
    if rows.empty:
        return {}
    latest = rows.sort_values(TS, kind="stable").drop_duplicates(subset=["cell", "category"], keep="last")
    if category is not None:
        latest = latest[latest["category"] == category]
    numbers = pd.to_numeric(latest[field], errors="coerce")
    frame = pd.DataFrame({"cell": latest["cell"], "value": numbers}).dropna()
    grouped = frame.groupby("cell")["value"]
    combined = grouped.sum() if dtype == "int" else grouped.mean()
    return {str(c): float(v) for c, v in combined.items()}


def group_areas(cells: Iterable[str], values: Mapping[str, float], radius_km: float = 50.0) -> list[list[str]]:
    """Cells grouped into areas (a city each): a cell joins the first area whose first cell lies
    within ``radius_km``. Areas come largest total value first, so a map opens on the busiest."""
    from kairos.geo import cell_center, haversine_km

    areas: list[tuple[tuple[float, float], list[str]]] = []
    for cell in sorted(cells, key=lambda c: (-values.get(c, 0.0), c)):
        centre = cell_center(cell)
        for anchor, members in areas:
            if haversine_km(*anchor, *centre) <= radius_km:
                members.append(cell)
                break
        else:
            areas.append((centre, [cell]))
    groups = [members for _, members in areas]
    groups.sort(key=lambda m: (-sum(values.get(c, 0.0) for c in m), -len(m), m[0]))
    return groups


def cell_map(values: Mapping[str, float], area: int = 0, max_cells: int = 5000) -> dict[str, Any]:
    """Polygons (``[[lat, lon], ...]``, from H3) and values of the cells of one area, with the list
    of areas to choose from."""
    groups = group_areas(values.keys(), values)
    areas = []
    for i, members in enumerate(groups):
        lat = float(np.mean([h3.cell_to_latlng(c)[0] for c in members]))
        lon = float(np.mean([h3.cell_to_latlng(c)[1] for c in members]))
        areas.append({"index": i, "cells": len(members), "total": sum(values[c] for c in members),
                      "center": [round(lat, 5), round(lon, 5)]})
    if not groups:
        return {"areas": [], "area": None, "cells": [], "bounds": None, "max_value": None}
    if not 0 <= area < len(groups):
        raise IndexError(f"area must be between 0 and {len(groups) - 1}")
    chosen = groups[area][:max_cells]
    cells = [{"cell": c, "value": values[c], "center": list(h3.cell_to_latlng(c)),
              "boundary": [list(p) for p in h3.cell_to_boundary(c)]} for c in chosen]
    lats = [p[0] for c in cells for p in c["boundary"]]
    lons = [p[1] for c in cells for p in c["boundary"]]
    return {
        "areas": areas, "area": area, "cells": cells,
        "bounds": {"south": min(lats), "west": min(lons), "north": max(lats), "east": max(lons)},
        "max_value": max(values[c] for c in chosen),
    }


def utc(value: datetime | None) -> pd.Timestamp | None:
    """An aware datetime as a UTC pandas Timestamp (what the log's ``event_timestamp`` holds)."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)

