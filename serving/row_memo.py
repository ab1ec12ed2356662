"""Feature rows shared by the refreshes of neighbouring cells of the candidate cache.

A cell's entry holds every item within ``radius + the cell's reach`` of its centre, so one item
lies in the entries of about ten cells (H3 resolution 7, a 3 km radius), and each entry is rebuilt
every ``KAIROS_SUGGEST_CACHE_TTL_S``: read per entry, an item's ``item_stats`` row (and its cell's
``cell_supply`` medians) crossed the network and were decoded ten times per TTL. Profiled under
``kairos bench serve``, those rebuilds took a fifth of an API worker's CPU. :class:`RowMemo` keeps
each row it read for ``max_age_s`` (half the TTL) so that the entries rebuilt within that time share
one read; only successful reads are kept, so an outage is never remembered.

>>> calls = []
>>> class Store:
...     def read(self, view, keys, fields=None):
...         calls.append([k["item_id"] for k in keys])
...         return [{"item_id": k["item_id"], "views": 1} for k in keys]
>>> memo = RowMemo(Store(), max_age_s=60)
>>> memo.read("item_stats", [{"item_id": "a"}, {"item_id": "b"}], ("views",))[1]
{'item_id': 'b', 'views': 1}
>>> _ = memo.read("item_stats", [{"item_id": "b"}, {"item_id": "c"}], ("views",))
>>> calls  # "b" was read once
[['a', 'b'], ['c']]
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from kairos.stores.last_known import StoreUnavailable

#: Rows kept at most (the longest kept go first): a large city's items and cells, some tens of MB.
MAX_ROWS = 100_000


class RowMemo:
    """``features.read(view, keys, fields)`` with each row kept for ``max_age_s`` seconds.

    Rows are keyed by view, fields and entity key; a row the store did not have (``None``) is kept
    too (the flow has not written it yet: asking again within the age tells nothing new). An
    exception from the store propagates and nothing of that read is kept; a
    :class:`~kairos.stores.last_known.StoreUnavailable` comes out with its last-known fallback
    covering every key asked for (the kept rows where the store's fallback has none).
    """

    def __init__(self, features: Any, max_age_s: float, max_rows: int = MAX_ROWS) -> None:
        self.features = features
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self._rows: OrderedDict[tuple[Any, ...], tuple[float, dict[str, Any] | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def read(self, view: str, keys: list[dict[str, str]],
             fields: tuple[str, ...] | None = None) -> list[dict[str, Any] | None]:
        memo_keys = [(view, fields, *key.items()) for key in keys]
        now = time.monotonic()
        out: list[dict[str, Any] | None] = [None] * len(keys)
        missing: list[int] = []
        with self._lock:
            for i, memo_key in enumerate(memo_keys):
                found = self._rows.get(memo_key)
                if found is not None and now - found[0] < self.max_age_s:
                    out[i] = found[1]
                else:
                    missing.append(i)
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if not missing:
            return out
        wanted = [keys[i] for i in missing]
        try:
            rows = self.features.read(view, wanted, fields) if fields is not None else self.features.read(view, wanted)
        except StoreUnavailable as exc:
            known = list(exc.fallback) if exc.fallback is not None else [None] * len(missing)
            fallback = list(out)
            with self._lock:
                for i, row in zip(missing, known, strict=True):
                    kept = self._rows.get(memo_keys[i])
                    fallback[i] = row if row is not None or kept is None else kept[1]
            raise StoreUnavailable(f"online store ({view})", fallback) from exc
        read_at = time.monotonic()
        with self._lock:
            for i, row in zip(missing, rows, strict=True):
                out[i] = row
                self._rows[memo_keys[i]] = (read_at, row)
                self._rows.move_to_end(memo_keys[i])
            while len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)
        return out


__all__ = ["MAX_ROWS", "RowMemo"]
