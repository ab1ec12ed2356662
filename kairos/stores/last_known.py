"""Degraded reads for the API: remember the last values read, serve them when a store is down.

When Redis (or any store) goes away the API must keep answering: from the last known values of the
rows and items it has seen, flagged ``degraded``, never with a 500. A failed store is not asked
again for ``retry_after_s`` (a small circuit breaker), so a dead server costs one timeout, not one
per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from kairos.geo import haversine_km

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store failed; ``fallback`` holds what is known from earlier reads."""

    def __init__(self, what: str, fallback: Any) -> None:
        super().__init__(f"{what} is unavailable; serving last known values")
        self.fallback = fallback


class _Breaker:
    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.open_until = 0.0
        self.lock = threading.Lock()

    def call(self, what: str, fn: Callable[[], T], fallback: Callable[[], Any]) -> T:
        if time.monotonic() < self.open_until:
            raise StoreUnavailable(what, fallback())
        try:
            return fn()
        except Exception as exc:
            with self.lock:
                self.open_until = time.monotonic() + self.retry_after_s
            log.warning("%s failed (%s); serving last known values for %.1f s", what, exc, self.retry_after_s)
            raise StoreUnavailable(what, fallback()) from exc


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)

    def fetch(self, key: Any) -> Any:
        with self.lock:
            return self.get(key)


class LastKnownFeatures:
    """Wraps :class:`~kairos.stores.online_features.OnlineFeatures` for serving."""

    def __init__(self, features: Any, size: int = 200_000, retry_after_s: float = 1.0) -> None:
        self.features = features
        self.cache = _Lru(size)
        self.breaker = _Breaker(retry_after_s)

    def read(self, view: str, keys: list[dict[str, str]],
             fields: tuple[str, ...] | None = None) -> list[dict[str, Any] | None]:
        def cache_key(key: dict[str, str]) -> tuple[Any, ...]:
            return (view, fields, *sorted(key.items()))

        def fetch() -> list[dict[str, Any] | None]:
            # The online store's direct read when it has one (same rows, a fraction of the CPU).
            fast = getattr(self.features, "read_fast", None)
            if callable(fast):
                rows = fast(view, keys, fields)
            else:
                rows = self.features.read(view, keys, fields) if fields else self.features.read(view, keys)
            for key, row in zip(keys, rows, strict=True):
                if row is not None:
                    self.cache.put(cache_key(key), row)
            return rows

        return self.breaker.call(f"online store ({view})", fetch,
                                 lambda: [self.cache.fetch(cache_key(k)) for k in keys])

    def read_one(self, view: str, key: dict[str, str]) -> dict[str, Any] | None:
        try:
            return self.read(view, [key])[0]
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"online store ({view})", exc.fallback[0]) from exc

    def __getattr__(self, name: str) -> Any:  # write, apply, store … pass through
        return getattr(self.features, name)


class LastKnownCatalog:
    """Wraps a catalog for serving: items seen before answer ``near`` while the catalog is down."""

    def __init__(self, catalog: Any, size: int = 200_000, retry_after_s: float = 1.0) -> None:
        self.catalog = catalog
        self.items = _Lru(size)
        self.breaker = _Breaker(retry_after_s)

    def near(self, lat: float, lon: float, radius_km: float, at: datetime | None = None, limit: int = 2000,
             until: datetime | None = None) -> list[Any]:
        def fetch() -> list[Any]:
            found = self.catalog.near(lat, lon, radius_km, at=at, limit=limit, until=until)
            for item in found:
                self.items.put(item.item_id, item)
            return found

        def fallback() -> list[Any]:
            start = at.timestamp() if at else None
            end = until.timestamp() if until else start
            with self.items.lock:
                known = list(self.items.values())
            return [
                i for i in known
                if i.lat is not None and i.lon is not None and haversine_km(lat, lon, i.lat, i.lon) <= radius_km
                and (start is None or (not i.deleted and (i.valid_from is None or i.valid_from <= end)
                                       and (i.valid_to is None or i.valid_to > start)))
            ][:limit]

        return self.breaker.call("catalog", fetch, fallback)

    def get(self, item_id: str) -> Any:
        return self.breaker.call("catalog", lambda: self.catalog.get(item_id), lambda: self.items.fetch(item_id))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.catalog, name)
