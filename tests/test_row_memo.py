"""RowMemo: rows kept for their age and shared, outages never kept, fallbacks cover every key."""

from __future__ import annotations

from typing import Any

import pytest

from kairos.stores.last_known import StoreUnavailable
from serving.row_memo import RowMemo


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.asked: list[list[str]] = []
        self.failure: Exception | None = None

    def read(self, view: str, keys: list[dict[str, str]], fields: Any = None) -> list[dict[str, Any] | None]:
        self.asked.append([k["item_id"] for k in keys])
        if self.failure is not None:
            raise self.failure
        return [self.rows.get(k["item_id"]) for k in keys]


def keys(*ids: str) -> list[dict[str, str]]:
    return [{"item_id": i} for i in ids]


def test_rows_are_shared_within_their_age_and_read_again_after() -> None:
    store = Store()
    store.rows = {"a": {"item_id": "a", "v": 1}, "b": {"item_id": "b", "v": 2}}
    memo = RowMemo(store, max_age_s=60)
    assert memo.read("item_stats", keys("a", "b", "c"), ("v",)) == [store.rows["a"], store.rows["b"], None]
    store.rows["a"] = {"item_id": "a", "v": 10}
    store.rows["c"] = {"item_id": "c", "v": 3}
    # Kept rows answer, a missing row counts as read too; another view or fields is another row.
    assert memo.read("item_stats", keys("c", "a"), ("v",)) == [None, {"item_id": "a", "v": 1}]
    assert memo.read("item_stats", keys("a"), None) == [{"item_id": "a", "v": 10}]
    assert store.asked == [["a", "b", "c"], ["a"]]
    memo.max_age_s = 0.0
    assert memo.read("item_stats", keys("c", "a"), ("v",)) == [store.rows["c"], store.rows["a"]]
    assert (memo.hits, memo.misses) == (2, 6)


def test_a_failed_read_is_not_kept() -> None:
    store = Store()
    store.rows = {"a": {"item_id": "a"}}
    memo = RowMemo(store, max_age_s=60)
    store.failure = ConnectionError("redis down")
    with pytest.raises(ConnectionError):
        memo.read("item_stats", keys("a"))
    store.failure = None
    assert memo.read("item_stats", keys("a")) == [{"item_id": "a"}]
    assert store.asked == [["a"], ["a"]]


def test_an_outage_falls_back_over_every_key_asked() -> None:
    store = Store()
    store.rows = {"a": {"item_id": "a", "v": 1}, "b": {"item_id": "b", "v": 2}}
    memo = RowMemo(store, max_age_s=60)
    memo.read("item_stats", keys("a", "b"))
    store.failure = StoreUnavailable("online store (item_stats)", [None, {"item_id": "c", "v": 3}])
    with pytest.raises(StoreUnavailable) as raised:
        memo.read("item_stats", keys("a", "x", "c"))
    # "a" from the memo (fresh), "x" unknown anywhere, "c" from the store's own last-known values.
    assert raised.value.fallback == [{"item_id": "a", "v": 1}, None, {"item_id": "c", "v": 3}]
    memo.max_age_s = 0.0  # "b" is too old to answer, but still the best known value in an outage
    store.failure = StoreUnavailable("online store (item_stats)", [None])
    with pytest.raises(StoreUnavailable) as raised:
        memo.read("item_stats", keys("b"))
    assert raised.value.fallback == [{"item_id": "b", "v": 2}]  # stale, kept: better than nothing


def test_the_oldest_rows_go_first() -> None:
    store = Store()
    memo = RowMemo(store, max_age_s=60, max_rows=2)
    memo.read("item_stats", keys("a", "b"))
    memo.read("item_stats", keys("c"))
    memo.read("item_stats", keys("b", "c", "a"))
    assert store.asked == [["a", "b"], ["c"], ["a"]]
