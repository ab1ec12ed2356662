"""Last-known reads: a store outage serves the last values seen, and a breaker stops hammering it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kairos.stores.catalog import CatalogItem
from kairos.stores.last_known import LastKnownCatalog, LastKnownFeatures, StoreUnavailable


class FlakyFeatures:
    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def read(self, view, keys):
        self.calls += 1
        if self.down:
            raise ConnectionError("down")
        return [{"user_id": k["user_id"], "as_of": 1.0, "n": self.calls} if k["user_id"] != "new" else None
                for k in keys]


def test_features_fall_back_to_last_known_rows_then_recover():
    inner = FlakyFeatures()
    features = LastKnownFeatures(inner, retry_after_s=0.05)
    assert features.read_one("user_activity", {"user_id": "u1"})["n"] == 1
    inner.down = True
    with pytest.raises(StoreUnavailable) as failure:
        features.read("user_activity", [{"user_id": "u1"}, {"user_id": "u2"}])
    assert failure.value.fallback == [{"user_id": "u1", "as_of": 1.0, "n": 1}, None]
    calls = inner.calls
    with pytest.raises(StoreUnavailable) as failure:  # breaker open: the store is not asked again at once
        features.read_one("user_activity", {"user_id": "u1"})
    assert failure.value.fallback == {"user_id": "u1", "as_of": 1.0, "n": 1}
    assert inner.calls == calls
    inner.down = False
    import time

    time.sleep(0.06)
    assert features.read_one("user_activity", {"user_id": "u1"})["n"] == calls + 1


def item(item_id: str, lat: float, valid_to: float) -> CatalogItem:
    return CatalogItem(item_id, "b", "offer", "spa", "t", "t", lat, -73.98, None, 10.0, None, "USD", 0.0,
                       valid_to, False, 1.0)


class FlakyCatalog:
    def __init__(self, items):
        self.items, self.down = items, False

    def near(self, lat, lon, radius_km, at=None, limit=2000, until=None):
        if self.down:
            raise ConnectionError("down")
        return self.items


def test_catalog_serves_items_seen_before_filtered_by_place_and_time():
    at = datetime(2026, 5, 1, tzinfo=timezone.utc)
    inner = FlakyCatalog([item("near", 40.75, 2e9), item("far", 41.75, 2e9), item("over", 40.75, 1.0)])
    catalog = LastKnownCatalog(inner)
    assert len(catalog.near(40.75, -73.98, 3.0, at=at)) == 3
    inner.down = True
    with pytest.raises(StoreUnavailable) as failure:
        catalog.near(40.75, -73.98, 3.0, at=at)
    assert [i.item_id for i in failure.value.fallback] == ["near"]
