"""ANN item index: FAISS inner-product search over active items, bucketed by coarse H3 cell.

Search in Kairos is always *near somewhere*: "spa under 50 within 2 km". One FAISS index over the
whole catalogue would rank items on the other side of the city (or the world) and then throw them
away. Instead each coarse H3 cell (resolution ``bucket_resolution``, 7 by default: about 5 km²) is
a bucket holding its own ``IndexIDMap2(IndexFlatIP)``; a query looks only at the buckets that can
hold a point within its radius (an ``h3.grid_disk`` around the query's cell, each bucket checked
against the circle), so its cost grows with the items *near the user*, not with the catalogue.
Flat indexes are exact and small per bucket; they support adding and removing single ids, so an
item that starts, changes price, moves or expires costs one update and never a rebuild.

Vectors are unit MiniLM embeddings, so inner product is cosine similarity. Besides the vectors the
index keeps what filtering needs (point, category, price, validity), so a query answers "live in
this window, in this category, under this price, within this radius" without the catalog.

:class:`CatalogIndexer` keeps an index in step with the catalog: a full build on first use, then
only the items whose ``updated_ts`` moved (see :func:`catalog_changes`). Given a hot-swapped
:class:`online.embeddings.TextEncoder`, it pins the model its vectors came from and, after a
promotion, re-embeds the catalog in the background; search serves the old index with the old model
until the new index is complete (:meth:`CatalogIndexer.follow_model`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import h3
import numpy as np

from kairos.geo import haversine_km
from kairos.stores.catalog import CatalogItem

log = logging.getLogger(__name__)

DEFAULT_BUCKET_RESOLUTION = 7


@dataclass(frozen=True, slots=True)
class IndexedItem:
    """What the index keeps beside an item's vector, for filtering without the catalog."""

    item_id: str
    faiss_id: int
    bucket: str
    lat: float
    lon: float
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    updated_ts: float = 0.0

    def live_between(self, start: float, end: float) -> bool:
        """Valid at some moment of ``[start, end]``."""
        if self.valid_from is not None and self.valid_from > end:
            return False
        return not (self.valid_to is not None and self.valid_to <= start)


@dataclass(frozen=True, slots=True)
class IndexHit:
    item_id: str
    #: Cosine similarity to the query vector; None for a query without one (geo-only search).
    similarity: float | None
    distance_km: float


@dataclass(frozen=True, slots=True)
class SearchStats:
    """What the last search touched: proof that a query near the user never scans everything."""

    buckets_scanned: int
    vectors_scanned: int
    buckets_total: int
    vectors_total: int


class ItemIndex:
    """Exact cosine search over items near a point, updated one item at a time.

    Parameters
    ----------
    dim
        Vector size (384 for MiniLM).
    bucket_resolution
        H3 resolution of the buckets. Coarser buckets mean fewer, larger flat scans.
    single_thread
        Run FAISS on one OpenMP thread (a process-wide FAISS setting). Waking a thread pool for a
        flat scan of tens of vectors costs far more than the scan (measured 50-100x slower on two
        cores); the API gets its parallelism from concurrent requests instead.

    Examples
    --------
    >>> import numpy as np
    >>> index = ItemIndex(dim=2)
    >>> index.upsert("spa", np.array([1.0, 0.0]), 40.758, -73.985, category="spa", price=30.0)
    >>> index.upsert("pizza", np.array([0.0, 1.0]), 40.760, -73.985, category="food", price=4.0)
    >>> index.upsert("far_spa", np.array([1.0, 0.0]), 40.900, -73.985, category="spa", price=20.0)
    >>> [h.item_id for h in index.search(np.array([0.9, 0.1]), 40.758, -73.985, radius_km=2, k=5)]
    ['spa', 'pizza']
    >>> [h.item_id for h in index.search(None, 40.758, -73.985, radius_km=2, max_price=10)]
    ['pizza']
    >>> index.remove("spa"), len(index)
    (True, 2)
    """

    def __init__(
        self, dim: int = 384, bucket_resolution: int = DEFAULT_BUCKET_RESOLUTION, single_thread: bool = True
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, not {dim!r}")
        if not 0 <= bucket_resolution <= 15:
            raise ValueError(f"bucket_resolution must be in 0..15, not {bucket_resolution!r}")
        self.dim = int(dim)
        self.bucket_resolution = int(bucket_resolution)
        if single_thread:
            faiss.omp_set_num_threads(1)
        # Cells can be smaller than average (H3 distorts away from the icosahedron's faces): take the
        # grid disk wide enough for the smallest ones, then check each bucket against the circle.
        self._min_step_km = 1.5 * h3.average_hexagon_edge_length(self.bucket_resolution, "km") * 0.6
        self._buckets: dict[str, Any] = {}
        self._items: dict[str, IndexedItem] = {}
        self._by_faiss_id: dict[int, IndexedItem] = {}
        self._bucket_reach: dict[str, float] = {}
        self._next_id = 1
        self._lock = threading.RLock()
        self.last_stats = SearchStats(0, 0, 0, 0)

    def __repr__(self) -> str:
        return (f"ItemIndex(dim={self.dim}, bucket_resolution={self.bucket_resolution}, "
                f"items={len(self._items)}, buckets={len(self._buckets)})")

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    # -- lifecycle -------------------------------------------------------------------------------

    def upsert(
        self,
        item_id: str,
        vector: Any,
        lat: float,
        lon: float,
        *,
        category: str | None = None,
        price: float | None = None,
        currency: str | None = None,
        valid_from: float | None = None,
        valid_to: float | None = None,
        updated_ts: float = 0.0,
    ) -> None:
        """Add an item or replace its vector and attributes (it may move to another bucket)."""
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
        if array.shape[0] != self.dim:
            raise ValueError(f"vector has {array.shape[0]} dimensions, expected {self.dim}")
        if not np.all(np.isfinite(array)):
            raise ValueError("vector must be finite")
        norm = float(np.linalg.norm(array))
        # Unit length keeps inner product = cosine; an all-zero vector (no text) matches nothing.
        if norm > 1e-12:
            array = array / norm
        bucket = h3.latlng_to_cell(lat, lon, self.bucket_resolution)
        with self._lock:
            old = self._items.get(item_id)
            faiss_id = old.faiss_id if old is not None else self._new_id()
            if old is not None:
                self._drop_vector(old)
            index = self._buckets.get(bucket)
            if index is None:
                index = self._buckets[bucket] = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            index.add_with_ids(array.reshape(1, -1), np.array([faiss_id], dtype=np.int64))
            item = IndexedItem(
                item_id=item_id, faiss_id=faiss_id, bucket=bucket, lat=float(lat), lon=float(lon),
                category=category, price=price, currency=currency, valid_from=valid_from, valid_to=valid_to,
                updated_ts=float(updated_ts),
            )
            self._items[item_id] = item
            self._by_faiss_id[faiss_id] = item

    def remove(self, item_id: str) -> bool:
        """Forget an item (deleted or expired); False when it was not indexed."""
        with self._lock:
            old = self._items.pop(item_id, None)
            if old is None:
                return False
            del self._by_faiss_id[old.faiss_id]
            self._drop_vector(old)
            return True

    def apply(self, item: CatalogItem, vector: Any | None) -> bool:
        """Follow one catalog state: deleted or unplaceable items leave, others are upserted.

        Returns whether the item is indexed afterwards.
        """
        if item.deleted or item.lat is None or item.lon is None or vector is None:
            self.remove(item.item_id)
            return False
        self.upsert(
            item.item_id, vector, item.lat, item.lon, category=item.category, price=item.price,
            currency=item.currency, valid_from=item.valid_from, valid_to=item.valid_to,
            updated_ts=item.updated_ts,
        )
        return True

    def expire(self, before: float) -> int:
        """Remove items whose validity ended at or before ``before`` (epoch s); returns how many."""
        with self._lock:
            ended = [i for i, item in self._items.items() if item.valid_to is not None and item.valid_to <= before]
            for item_id in ended:
                self.remove(item_id)
            return len(ended)

    def _new_id(self) -> int:
        faiss_id = self._next_id
        self._next_id += 1
        return faiss_id

    def _drop_vector(self, item: IndexedItem) -> None:
        index = self._buckets.get(item.bucket)
        if index is None:
            return
        index.remove_ids(np.array([item.faiss_id], dtype=np.int64))
        if index.ntotal == 0:
            del self._buckets[item.bucket]
            self._bucket_reach.pop(item.bucket, None)

    # -- reading ---------------------------------------------------------------------------------

    def item(self, item_id: str) -> IndexedItem | None:
        return self._items.get(item_id)

    def updated_ts(self, item_id: str) -> float | None:
        item = self._items.get(item_id)
        return None if item is None else item.updated_ts

    def vector(self, item_id: str) -> np.ndarray | None:
        """The item's (unit) embedding as stored in its bucket."""
        with self._lock:
            item = self._items.get(item_id)
            if item is None:
                return None
            return np.asarray(self._buckets[item.bucket].reconstruct(item.faiss_id), dtype=np.float32)

    def vectors(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for item_id in item_ids:
            vector = self.vector(item_id)
            if vector is not None:
                out[item_id] = vector
        return out

    def buckets_within(self, lat: float, lon: float, radius_km: float) -> list[str]:
        """Non-empty buckets that may hold a point within ``radius_km`` of the point."""
        centre = h3.latlng_to_cell(lat, lon, self.bucket_resolution)
        rings = int(math.ceil(radius_km / self._min_step_km)) + 1
        with self._lock:
            existing = self._buckets
            if len(existing) <= 3 * rings * (rings + 1) + 1:
                # Fewer buckets than the disk has cells: check the buckets, not the disk.
                cells: Iterable[str] = list(existing)
            else:
                cells = (c for c in h3.grid_disk(centre, rings) if c in existing)
            return [c for c in cells if self._bucket_distance_km(c, lat, lon) <= radius_km]

    def _bucket_distance_km(self, cell: str, lat: float, lon: float) -> float:
        """Lower bound of the distance from the point to any point of the cell."""
        reach = self._bucket_reach.get(cell)
        clat, clon = h3.cell_to_latlng(cell)
        if reach is None:
            reach = max(haversine_km(clat, clon, blat, blon) for blat, blon in h3.cell_to_boundary(cell))
            self._bucket_reach[cell] = reach * 1.01  # the boundary is geodesic; stay on the safe side
            reach = self._bucket_reach[cell]
        return max(0.0, haversine_km(lat, lon, clat, clon) - reach)

    def search(
        self,
        vector: Any | None,
        lat: float,
        lon: float,
        radius_km: float,
        k: int = 10,
        at: float | None = None,
        until: float | None = None,
        category: str | None = None,
        max_price: float | None = None,
        min_price: float | None = None,
        currency: str | None = None,
    ) -> list[IndexHit]:
        """The ``k`` items within ``radius_km`` most similar to ``vector`` (nearest first without one).

        Filters: live at some moment of ``[at, until]`` (epoch s; ``until`` defaults to ``at``,
        no time filter without ``at``); ``category``; price bounds (items without a price never
        pass a bound); ``currency`` (items priced in another currency are left out of price
        bounds' reach, since amounts in different currencies cannot be compared).
        """
        if k < 1:
            return []
        if not (math.isfinite(radius_km) and radius_km > 0):
            raise ValueError(f"radius_km must be positive, not {radius_km!r}")
        query = None
        if vector is not None:
            query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
            if query.shape[1] != self.dim:
                raise ValueError(f"query has {query.shape[1]} dimensions, expected {self.dim}")
            norm = float(np.linalg.norm(query))
            query = query / norm if norm > 1e-12 else None
        start = at
        end = until if until is not None else at
        hits: list[IndexHit] = []
        scanned = 0
        with self._lock:
            buckets = self.buckets_within(lat, lon, radius_km)
            for bucket in buckets:
                index = self._buckets[bucket]
                n = int(index.ntotal)
                scanned += n
                if query is not None:
                    sims, ids = index.search(query, n)
                    pairs = zip(ids[0].tolist(), sims[0].tolist(), strict=True)
                else:
                    pairs = ((int(i), None) for i in faiss.vector_to_array(index.id_map))
                for faiss_id, similarity in pairs:
                    if faiss_id < 0:
                        continue
                    item = self._by_faiss_id.get(faiss_id)
                    if item is None or not _passes(item, start, end, category, max_price, min_price, currency):
                        continue
                    distance = haversine_km(lat, lon, item.lat, item.lon)
                    if distance <= radius_km:
                        hits.append(IndexHit(item.item_id, similarity, distance))
            self.last_stats = SearchStats(len(buckets), scanned, len(self._buckets), len(self._items))
        if query is not None:
            hits.sort(key=lambda h: (-(h.similarity or 0.0), h.distance_km, h.item_id))
        else:
            hits.sort(key=lambda h: (h.distance_km, h.item_id))
        return hits[:k]

    # -- pickling (FAISS indexes are SWIG objects: serialise them to bytes) ----------------------

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_buckets")}
            state["_buckets"] = {cell: faiss.serialize_index(index) for cell, index in self._buckets.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        buckets = state.pop("_buckets")
        self.__dict__.update(state)
        self._buckets = {cell: faiss.deserialize_index(blob) for cell, blob in buckets.items()}
        self._lock = threading.RLock()


def _passes(
    item: IndexedItem,
    start: float | None,
    end: float | None,
    category: str | None,
    max_price: float | None,
    min_price: float | None,
    currency: str | None,
) -> bool:
    if start is not None and not item.live_between(start, end if end is not None else start):
        return False
    if category is not None and item.category != category:
        return False
    if max_price is not None or min_price is not None:
        if item.price is None:
            return False
        if currency is not None and item.currency is not None and item.currency.upper() != currency.upper():
            return False
        if max_price is not None and item.price > max_price + 1e-9:
            return False
        if min_price is not None and item.price < min_price - 1e-9:
            return False
    return True


# ------------------------------------------------------------------------------ following the catalog


def item_text(item: CatalogItem) -> str:
    """The text an item is embedded from: its category, then title and description."""
    body = item.text or item.title or ""
    if item.category and body:
        return f"{item.category}: {body}"
    return body or (item.category or "")


def catalog_changes(catalog: Any, since: float) -> list[CatalogItem]:
    """Catalog items whose ``updated_ts`` is at or after ``since`` (every item for ``-inf``): the
    catalog's own ``changed_since`` query (both of Kairos' catalogs index ``updated_ts``)."""
    changed_since = getattr(catalog, "changed_since", None)
    if callable(changed_since):
        return list(changed_since(since))
    raise TypeError(f"cannot list changes of a {type(catalog).__name__}: it needs changed_since(ts)")


class CatalogIndexer:
    """Keeps an :class:`ItemIndex` in step with the catalog, incrementally.

    The first :meth:`refresh` indexes every live item; later ones ask the catalog for items whose
    ``updated_ts`` is at or after the newest one seen minus ``lag_s`` (the flow writes items in
    roughly event-time order, and late ones within the lag are still caught), and re-embed only
    those whose ``updated_ts`` differs from the indexed one. Items that ended more than
    ``retain_s`` before the newest catalog change are dropped. Refreshes happen at most every
    ``refresh_interval_s`` (requests call :meth:`maybe_refresh`).
    """

    def __init__(
        self,
        catalog: Any,
        index: ItemIndex,
        encode: Callable[[Sequence[str]], np.ndarray],
        refresh_interval_s: float = 1.0,
        lag_s: float = 3600.0,
        retain_s: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.index = index
        # An encoder that can change model (a hot-swapped TextEncoder): pin the model the index's
        # vectors come from, so queries keep matching them until a re-embedded index replaces it.
        owner = getattr(encode, "__self__", None)
        self._encoder = owner if callable(getattr(owner, "snapshot", None)) else None
        self._model = self._encoder.snapshot() if self._encoder is not None else None
        self.encode = self._model.encode if self._model is not None else encode
        self._rebuild: threading.Thread | None = None
        self._ready = False  # a first refresh has completed
        self._failed_model: Any = None  # not retried until the encoder moves on again
        #: Re-embeddings of the whole catalog done after a model swap (tests and metrics).
        self.rebuilds = 0
        self.refresh_interval_s = refresh_interval_s
        self.lag_s = lag_s
        self.retain_s = retain_s
        self.clock = clock
        self.watermark = -math.inf  # newest updated_ts seen
        #: The catalog state of every indexed item as of the last refresh: searches read their
        #: hits from here instead of asking the catalog once per hit, and keep answering while the
        #: catalog is down.
        self.items: dict[str, CatalogItem] = {}
        self._last_refresh: float | None = None
        self._lock = threading.Lock()
        self.embedded = 0  # items embedded so far (tests and metrics: proof of incremental work)

    def item(self, item_id: str) -> CatalogItem | None:
        """The catalog state of an indexed item as of the last refresh."""
        return self.items.get(item_id)

    @property
    def model_version(self) -> str | None:
        """Registry version of the model the index's vectors (and query encodings) come from."""
        return None if self._model is None else self._model.version

    @property
    def rebuilding(self) -> bool:
        return self._rebuild is not None and self._rebuild.is_alive()

    def follow_model(self) -> bool:
        """Start re-embedding the catalog in the background when the encoder serves another model
        than the index's vectors came from; True when a rebuild started. Search keeps using the
        old index and old model until the new index is complete (:meth:`_rebuild_with`)."""
        if self._encoder is None:
            return False
        self._encoder.maybe_check()
        target = self._encoder.snapshot()
        if target is self._model or target is self._failed_model or self.rebuilding:
            return False
        self._rebuild = threading.Thread(target=self._rebuild_with, args=(target,), name="item-index-rebuild",
                                         daemon=True)
        self._rebuild.start()
        return True

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        thread = self._rebuild
        if thread is not None:
            thread.join(timeout)

    def _rebuild_with(self, model: Any, chunk: int = 256) -> None:
        try:
            index = ItemIndex(dim=model.dim, bucket_resolution=self.index.bucket_resolution)
            items: dict[str, CatalogItem] = {}
            everything = catalog_changes(self.catalog, -math.inf)
            live = [i for i in everything if not i.deleted and i.lat is not None and i.lon is not None]
            for start in range(0, len(live), chunk):  # chunks: the encoder's lock is never held long
                part = live[start:start + chunk]
                vectors = model.encode([item_text(i) for i in part])
                for item, vector in zip(part, vectors, strict=True):
                    if index.apply(item, vector):
                        items[item.item_id] = item
            watermark = max((i.updated_ts for i in everything), default=-math.inf)
            with self._lock:
                # Catch up with what changed while we embedded, then swap everything at once.
                since = watermark - self.lag_s if math.isfinite(watermark) else -math.inf
                late = [i for i in catalog_changes(self.catalog, since) if index.updated_ts(i.item_id) != i.updated_ts]
                placed = [i for i in late if not i.deleted and i.lat is not None and i.lon is not None]
                vectors = model.encode([item_text(i) for i in placed]) if placed else []
                by_id = {i.item_id: v for i, v in zip(placed, vectors, strict=True)}
                for item in late:
                    if index.apply(item, by_id.get(item.item_id)):
                        items[item.item_id] = item
                    else:
                        items.pop(item.item_id, None)
                if late:
                    watermark = max(watermark, max(i.updated_ts for i in late))
                watermark = max(watermark, self.watermark)
                if math.isfinite(watermark):
                    index.expire(watermark - self.retain_s)
                    items = {k: v for k, v in items.items() if k in index}
                self.index, self.items, self.watermark = index, items, watermark
                self._model, self.encode = model, model.encode
                self.embedded += len(live) + len(placed)
                self.rebuilds += 1
            log.info("item index: re-embedded %d items with text model %s", len(index), model.version or "base")
        except Exception:  # the old index keeps serving
            self._failed_model = model
            log.exception("item index: re-embedding after a model swap failed")

    def maybe_refresh(self) -> int:
        """Refresh when ``refresh_interval_s`` has passed since the last one; returns items changed."""
        self.follow_model()
        now = self.clock()
        # Until a first refresh has completed, callers wait for it (refresh takes the lock) rather
        # than search an index that is still being filled and answer nothing.
        if self._ready and self._last_refresh is not None and now - self._last_refresh < self.refresh_interval_s:
            return 0
        return self.refresh()

    def refresh(self) -> int:
        with self._lock:
            self._last_refresh = self.clock()
            since = self.watermark - self.lag_s if math.isfinite(self.watermark) else -math.inf
            items = catalog_changes(self.catalog, since)
            changed = []
            for item in items:
                if item.deleted or item.lat is None or item.lon is None:
                    if item.item_id in self.index:  # it leaves the index
                        changed.append(item)
                elif self.index.updated_ts(item.item_id) != item.updated_ts:
                    changed.append(item)
            indexable = [i for i in changed if not i.deleted and i.lat is not None and i.lon is not None]
            vectors = self.encode([item_text(i) for i in indexable]) if indexable else np.zeros((0, self.index.dim))
            by_id = {i.item_id: v for i, v in zip(indexable, vectors, strict=True)}
            for item in changed:
                if self.index.apply(item, by_id.get(item.item_id)):
                    self.items[item.item_id] = item
                else:
                    self.items.pop(item.item_id, None)
            self.embedded += len(indexable)
            if items:
                self.watermark = max(self.watermark, max(i.updated_ts for i in items))
            if math.isfinite(self.watermark):
                self.index.expire(self.watermark - self.retain_s)
                for item_id in [i for i in self.items if i not in self.index]:
                    del self.items[item_id]
            if changed:
                log.info("item index: %d items changed, %d indexed", len(changed), len(self.index))
            self._ready = True
            return len(changed)


__all__ = [
    "CatalogIndexer",
    "IndexHit",
    "IndexedItem",
    "ItemIndex",
    "SearchStats",
    "catalog_changes",
    "item_text",
]
