"""Per-cell candidate cache for suggestions: what is on offer around a point, read once per cell.

A suggestions request used to read the catalog (GEOSEARCH and the JSON of every item around), the
``item_stats`` rows of every candidate and the ``cell_supply`` medians of their cells: three store
reads and a few hundred decoded values per request, all of it the same for every user standing in
the same block at the same minute. This cache keeps that per H3 cell (``KAIROS_SUGGEST_CACHE_
RESOLUTION``) and radius:

* an entry holds every item within ``radius + the cell's reach`` of the cell's centre that is live
  at some moment of ``[bucket, bucket + COVER_S + UPCOMING_HORIZON]`` (``bucket``: the request time
  rounded down to :data:`COVER_S`), as ranking candidates with their ``item_stats``, plus the area
  median prices of their cells and numpy arrays of positions and validity;
* a request filters the entry exactly (distance to *its* point ≤ radius, open at or starting within
  the horizon of *its* time, moderation) — the answer is the one a direct read would give, with
  features at most about 1.5 × ``KAIROS_SUGGEST_CACHE_TTL_S`` old (rebuilds of neighbouring cells
  share the feature rows read in the last half TTL, :mod:`serving.row_memo`);
* an entry older than the TTL is still served while a background thread rebuilds it (requests never
  wait for a refresh); one older than :data:`STALE_FACTOR` TTLs is rebuilt on the request;
* an entry whose reads failed (a store outage) is used by the request that built it and not kept,
  so the degraded flag is never cached.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import numpy as np

from kairos.geo import EARTH_RADIUS_KM, cell_of, haversine_km
from kairos.stores.catalog import CatalogItem
from online.transparent_ranker import Candidate

log = logging.getLogger(__name__)

#: Width (seconds) of the request-time buckets an entry covers.
COVER_S = 60.0
#: An entry older than this many TTLs is not served even while a refresh is pending.
STALE_FACTOR = 4.0
#: Entries kept (least recently used go first).
MAX_ENTRIES = 4096


@dataclass
class CellCandidates:
    """The candidates of one (cell, radius, time bucket), aligned arrays for fast filtering."""

    items: list[CatalogItem]
    candidates: list[Candidate]
    area_median: dict[tuple[str, str], float]
    lat: np.ndarray
    lon: np.ndarray
    valid_from: np.ndarray  # -inf when open-ended
    valid_to: np.ndarray  # +inf when open-ended
    degraded: bool
    built: float = field(default_factory=time.monotonic)
    #: The stores it was read from: an entry of another catalog or feature store is not reused.
    sources: tuple[Any, Any] = (None, None)

    def select(self, lat: float, lon: float, radius_km: float, at_ts: float, horizon_s: float,
               hidden_items: set[str], suspended: set[str]) -> list[int]:
        """Indices of the entries' items a direct read at ``(lat, lon, radius_km, at)`` would return."""
        if not self.items:
            return []
        distance = haversine_np(lat, lon, self.lat, self.lon)
        keep = (distance <= radius_km) & (self.valid_to > at_ts) & (self.valid_from <= at_ts + horizon_s)
        chosen = np.flatnonzero(keep).tolist()
        if hidden_items or suspended:  # moderation: set lookups, usually on empty sets
            chosen = [i for i in chosen if self.items[i].item_id not in hidden_items
                      and self.items[i].business_id not in suspended]
        return chosen


def haversine_np(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """:func:`kairos.geo.haversine_km` from one point to many, vectorised (same formula)."""
    p1, p2 = math.radians(lat), np.radians(lats)
    dp, dl = p2 - p1, np.radians(lons - lon)
    a = np.sin(dp / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def cell_reach_km(cell: str) -> float:
    """Farthest distance from the cell's centre to its boundary (plus a metre of slack)."""
    lat, lon = h3.cell_to_latlng(cell)
    return max(haversine_km(lat, lon, v_lat, v_lon) for v_lat, v_lon in h3.cell_to_boundary(cell)) + 0.001


class CandidateCache:
    """Candidates per (cell, radius, time bucket), built by ``build(lat, lon, reach_km, start, end)``.

    ``build`` returns ``(items, candidates, area_median, degraded)`` for every live, placed item within
    ``reach_km`` of the point that is live at some moment of ``[start, end]``; the suggestions service
    passes one that reads the catalog and the feature store.
    """

    def __init__(self, build: Any, ttl_s: float, resolution: int, horizon: timedelta,
                 sources: Any = None) -> None:
        self._build = build
        self.ttl_s = ttl_s
        self.resolution = resolution
        self.horizon_s = horizon.total_seconds()
        self._sources = sources or (lambda: (None, None))
        self._entries: OrderedDict[tuple[Any, ...], CellCandidates] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.hits = self.misses = self.refreshes = 0

    # -- reading -------------------------------------------------------------------------------

    def get(self, lat: float, lon: float, radius_km: float, at: datetime) -> CellCandidates:
        """The entry covering the point and time (built now on a miss or when too stale)."""
        key = self._key(lat, lon, radius_km, at)
        sources = self._sources()
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.sources[0] is sources[0] and entry.sources[1] is sources[1]:
                age = now - entry.built
                if age < self.ttl_s * STALE_FACTOR:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    if age >= self.ttl_s:
                        self._schedule(key)
                    return entry
            self.misses += 1
        return self._fill(key, sources)

    def _key(self, lat: float, lon: float, radius_km: float, at: datetime) -> tuple[Any, ...]:
        bucket = math.floor(at.timestamp() / COVER_S) * COVER_S
        return (cell_of(lat, lon, self.resolution), round(float(radius_km), 6), bucket)

    def _fill(self, key: tuple[Any, ...], sources: tuple[Any, Any]) -> CellCandidates:
        cell, radius_km, bucket = key
        center_lat, center_lon = h3.cell_to_latlng(cell)
        start = datetime.fromtimestamp(bucket, UTC)
        end = start + timedelta(seconds=COVER_S + self.horizon_s)
        items, candidates, area_median, degraded = self._build(
            center_lat, center_lon, radius_km + cell_reach_km(cell), start, end)
        entry = CellCandidates(
            items=items,
            candidates=candidates,
            area_median=area_median,
            lat=np.array([c.lat for c in candidates], dtype=float),
            lon=np.array([c.lon for c in candidates], dtype=float),
            valid_from=np.array([-math.inf if i.valid_from is None else i.valid_from for i in items], dtype=float),
            valid_to=np.array([math.inf if i.valid_to is None else i.valid_to for i in items], dtype=float),
            degraded=degraded,
            sources=sources,
        )
        if not degraded:  # an outage's partial answer serves its own request only
            with self._lock:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > MAX_ENTRIES:
                    self._entries.popitem(last=False)
        return entry

    # -- background refresh ----------------------------------------------------------------------

    def _schedule(self, key: tuple[Any, ...]) -> None:
        """Queue a rebuild (the caller holds the lock); starts the refresher on first use."""
        if self._closed or key in self._pending:
            return
        self._pending[key] = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._refresh_loop, name="kairos-candidate-cache", daemon=True)
            self._thread.start()
        self._wake.notify()

    def _refresh_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                key, _ = self._pending.popitem(last=False)
            try:
                self._fill(key, self._sources())
                self.refreshes += 1
            except Exception:  # the next request rebuilds it itself; the refresher must live on
                log.warning("refreshing suggestion candidates of %s failed", key, exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)


def read_candidates(services: Any, lat: float, lon: float, reach_km: float, start: datetime, end: datetime,
                    item_stats_fields: tuple[str, ...], memo: Any = None) -> tuple[list[CatalogItem], list[Candidate],
                                                                                 dict[tuple[str, str], float], bool]:
    """Every live, placed item within ``reach_km`` of the point live at some moment of ``[start, end]``,
    as ranking candidates with their ``item_stats``, and the area median prices of their cells.
    ``memo``: a :class:`serving.row_memo.RowMemo` over ``services.features`` to read the rows through
    (ignored when it wraps another store)."""
    from serving.suggestions import ranking_candidates, with_fallback

    found, degraded = with_fallback(lambda: services.catalog.near(lat, lon, reach_km, at=start, until=end),
                                    [], "catalog")
    items = [i for i in found if not i.deleted and i.lat is not None and i.lon is not None]
    features = memo if memo is not None and memo.features is services.features else None
    candidates, area_median, failed = ranking_candidates(services, items, item_stats_fields, features)
    return items, candidates, area_median, degraded or failed


__all__ = ["COVER_S", "CandidateCache", "CellCandidates", "cell_reach_km", "haversine_np", "read_candidates"]
