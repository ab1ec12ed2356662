"""The bucketed FAISS item index: exact answers, only nearby buckets scanned, one update per change."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from pathlib import Path

import h3
import numpy as np
import pytest
import redis

from kairos.geo import haversine_km
from kairos.stores.catalog import CatalogItem, RedisCatalog, SqliteCatalog
from online.item_index import CatalogIndexer, ItemIndex, catalog_changes, item_text

LAT, LON = 40.7580, -73.9855
KM_LAT = 1 / 111.2
DIM = 8
REDIS_DB = 13


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def scatter(index: ItemIndex, n: int, spread_km: float, seed: int = 1) -> dict[str, dict]:
    """n random items in a square of ``spread_km`` around Times Square; returns their attributes."""
    rng = np.random.default_rng(seed)
    items = {}
    for i in range(n):
        lat = LAT + rng.uniform(-spread_km, spread_km) * KM_LAT
        lon = LON + rng.uniform(-spread_km, spread_km) * KM_LAT / math.cos(math.radians(LAT))
        attrs = {
            "vector": unit(rng), "lat": lat, "lon": lon,
            "category": ["spa", "food", "coffee"][i % 3], "price": float(rng.integers(5, 100)),
            "valid_from": float(rng.integers(0, 50)), "valid_to": float(rng.integers(60, 120)),
        }
        items[f"i{i}"] = attrs
        index.upsert(f"i{i}", attrs["vector"], lat, lon, category=attrs["category"], price=attrs["price"],
                     valid_from=attrs["valid_from"], valid_to=attrs["valid_to"])
    return items


def brute_force(items: dict[str, dict], query: np.ndarray, radius_km: float, **filters) -> list[str]:
    at = filters.get("at")
    found = []
    for item_id, a in items.items():
        if haversine_km(LAT, LON, a["lat"], a["lon"]) > radius_km:
            continue
        if at is not None and not (a["valid_from"] <= at < a["valid_to"]):
            continue
        if filters.get("category") and a["category"] != filters["category"]:
            continue
        if filters.get("max_price") is not None and a["price"] > filters["max_price"]:
            continue
        found.append((-float(a["vector"] @ query), item_id))
    return [item_id for _, item_id in sorted(found)]


@pytest.mark.parametrize("radius_km", [0.3, 1.0, 2.5, 7.0, 30.0])
def test_search_is_exact_against_brute_force(radius_km: float) -> None:
    index = ItemIndex(dim=DIM)
    items = scatter(index, 1500, spread_km=20)
    rng = np.random.default_rng(99)
    for _ in range(3):
        query = unit(rng)
        got = [h.item_id for h in index.search(query, LAT, LON, radius_km, k=25)]
        assert got == brute_force(items, query, radius_km)[:25]


def test_filters_match_brute_force() -> None:
    index = ItemIndex(dim=DIM)
    items = scatter(index, 800, spread_km=5)
    query = unit(np.random.default_rng(5))
    hits = index.search(query, LAT, LON, 3.0, k=1000, at=55.0, category="spa", max_price=50)
    assert [h.item_id for h in hits] == brute_force(items, query, 3.0, at=55.0, category="spa", max_price=50)
    assert hits and all(h.distance_km <= 3.0 for h in hits)
    sims = [h.similarity for h in hits]
    assert sims == sorted(sims, reverse=True)


def test_a_query_scans_only_nearby_buckets() -> None:
    index = ItemIndex(dim=DIM, bucket_resolution=7)
    scatter(index, 3000, spread_km=40)  # a metro area: hundreds of buckets
    index.search(unit(np.random.default_rng(1)), LAT, LON, radius_km=1.0, k=10)
    stats = index.last_stats
    assert stats.buckets_total > 200 and stats.vectors_total == 3000
    # A 1 km circle touches a handful of ~1.4 km-edged cells, never the metro area.
    assert 1 <= stats.buckets_scanned <= 7
    assert stats.vectors_scanned < stats.vectors_total / 50
    # Every bucket scanned can hold a point of the circle; every bucket that can is scanned.
    scanned = index.buckets_within(LAT, LON, 1.0)
    assert len(scanned) == stats.buckets_scanned
    for cell in index._buckets:
        boundary = h3.cell_to_boundary(cell)
        nearest = min(haversine_km(LAT, LON, a, b) for a, b in boundary)
        centre = haversine_km(LAT, LON, *h3.cell_to_latlng(cell))
        if cell not in scanned:
            assert min(nearest, centre) > 1.0
    # The query's own cell is always among them when it holds items.
    own = h3.latlng_to_cell(LAT, LON, 7)
    assert own not in index._buckets or own in scanned


def test_geo_only_search_is_nearest_first() -> None:
    index = ItemIndex(dim=DIM)
    items = scatter(index, 300, spread_km=3)
    hits = index.search(None, LAT, LON, 1.5, k=500)
    expected = sorted(
        (haversine_km(LAT, LON, a["lat"], a["lon"]), i) for i, a in items.items()
        if haversine_km(LAT, LON, a["lat"], a["lon"]) <= 1.5
    )
    assert [h.item_id for h in hits] == [i for _, i in expected]
    assert all(h.similarity is None for h in hits)


def test_lifecycle_updates_touch_one_item() -> None:
    index = ItemIndex(dim=DIM)
    scatter(index, 200, spread_km=10)
    rng = np.random.default_rng(7)
    before = {cell: (bucket, bucket.ntotal) for cell, bucket in index._buckets.items()}
    moved_from = index.item("i0").bucket
    # Price change in place: same bucket object, same size, new price filterable.
    index.upsert("i1", index.vector("i1"), index.item("i1").lat, index.item("i1").lon, price=1.0, category="spa")
    assert index.item("i1").price == 1.0 and len(index) == 200
    # Move i0 ten km north: it leaves its bucket and joins another.
    index.upsert("i0", unit(rng), LAT + 10 * KM_LAT, LON)
    assert index.item("i0").bucket != moved_from
    for cell, (bucket, size) in before.items():
        if cell in index._buckets and cell not in (moved_from, index.item("i0").bucket):
            assert index._buckets[cell] is bucket and bucket.ntotal == size  # untouched, not rebuilt
    assert index.remove("i2") is True and index.remove("i2") is False and "i2" not in index
    assert index.vector("i2") is None


def test_upsert_replaces_the_vector() -> None:
    index = ItemIndex(dim=2)
    index.upsert("a", np.array([1.0, 0.0]), LAT, LON)
    index.upsert("b", np.array([0.0, 3.0]), LAT, LON)  # not unit: normalised on the way in
    assert [h.item_id for h in index.search(np.array([1.0, 0.0]), LAT, LON, 1)] == ["a", "b"]
    index.upsert("a", np.array([-1.0, 0.0]), LAT, LON)
    hits = index.search(np.array([1.0, 0.0]), LAT, LON, 1)
    assert [h.item_id for h in hits] == ["b", "a"]
    assert hits[1].similarity == pytest.approx(-1.0) and hits[0].similarity == pytest.approx(0.0)
    np.testing.assert_allclose(index.vector("b"), [0.0, 1.0])


def test_empty_buckets_are_dropped_and_expire_removes_ended_items() -> None:
    index = ItemIndex(dim=2)
    index.upsert("a", np.array([1.0, 0.0]), LAT, LON, valid_to=100.0)
    index.upsert("b", np.array([1.0, 0.0]), LAT + 30 * KM_LAT, LON, valid_to=200.0)
    index.upsert("c", np.array([1.0, 0.0]), LAT, LON)  # no end
    assert index.expire(150.0) == 1 and "a" not in index and len(index) == 2
    index.remove("b")
    assert len(index._buckets) == 1


def test_time_window_means_live_at_some_moment() -> None:
    index = ItemIndex(dim=2)
    index.upsert("evening", np.array([1.0, 0.0]), LAT, LON, valid_from=100.0, valid_to=200.0)
    find = lambda **kw: [h.item_id for h in index.search(None, LAT, LON, 1, **kw)]  # noqa: E731
    assert find(at=150.0) == ["evening"]
    assert find(at=50.0) == [] and find(at=50.0, until=100.0) == ["evening"]
    assert find(at=200.0) == []  # ended
    assert find() == ["evening"]  # no time filter


def test_price_bounds_leave_out_unpriced_and_other_currencies() -> None:
    index = ItemIndex(dim=2)
    index.upsert("usd", np.array([1.0, 0.0]), LAT, LON, price=20.0, currency="USD")
    index.upsert("inr", np.array([1.0, 0.0]), LAT, LON, price=20.0, currency="INR")
    index.upsert("free", np.array([1.0, 0.0]), LAT, LON, price=None)
    find = lambda **kw: sorted(h.item_id for h in index.search(None, LAT, LON, 1, **kw))  # noqa: E731
    assert find(max_price=30) == ["inr", "usd"]
    assert find(max_price=30, currency="usd") == ["usd"]
    assert find(min_price=25) == []
    assert find() == ["free", "inr", "usd"]


def test_bad_input() -> None:
    index = ItemIndex(dim=2)
    with pytest.raises(ValueError, match="3 dimensions, expected 2"):
        index.upsert("a", np.ones(3), LAT, LON)
    with pytest.raises(ValueError, match="finite"):
        index.upsert("a", np.array([np.nan, 1.0]), LAT, LON)
    with pytest.raises(ValueError, match="radius_km"):
        index.search(None, LAT, LON, 0)
    with pytest.raises(ValueError, match="query has 3"):
        index.search(np.ones(3), LAT, LON, 1)
    with pytest.raises(ValueError, match="bucket_resolution"):
        ItemIndex(bucket_resolution=16)
    assert index.search(None, LAT, LON, 1, k=0) == []


def test_pickle_round_trip() -> None:
    index = ItemIndex(dim=DIM)
    scatter(index, 100, spread_km=5)
    copy = pickle.loads(pickle.dumps(index))
    query = unit(np.random.default_rng(3))
    assert [h.item_id for h in copy.search(query, LAT, LON, 3)] == [h.item_id for h in index.search(query, LAT, LON, 3)]
    copy.upsert("new", query, LAT, LON)
    assert copy.search(query, LAT, LON, 3)[0].item_id == "new" and "new" not in index


# -- following the catalog --------------------------------------------------------------------------


def catalog_item(item_id: str, title: str, km_north: float = 0.0, *, price: float = 10.0, updated_ts: float = 100.0,
                 deleted: bool = False, valid_to: float | None = 10_000.0, category: str = "spa") -> CatalogItem:
    lat = LAT + km_north * KM_LAT
    return CatalogItem(
        item_id=item_id, business_id="b", kind="offer", category=category, title=title, text=f"{title} — offer",
        lat=lat, lon=LON, cell=h3.latlng_to_cell(lat, LON, 8), price=price, original_price=None, currency="USD",
        valid_from=0.0, valid_to=valid_to, deleted=deleted, updated_ts=updated_ts,
    )


class CountingEncoder:
    """Deterministic fake embeddings; counts the texts it was asked to encode."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts) -> np.ndarray:
        self.texts.extend(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i, hash(text) % DIM] = 1.0
            out[i, (hash(text) // DIM) % DIM] += 0.5
        return out


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    if request.param == "sqlite":
        store = SqliteCatalog(tmp_path / "catalog.sqlite")
        yield store
        store.close()
        return
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    yield RedisCatalog(client, prefix="test:catalog")
    client.flushdb()
    client.close()


def test_indexer_builds_once_then_follows_changes(catalog) -> None:
    catalog.upsert([catalog_item("zen", "Zen spa"), catalog_item("lux", "Lux spa", 1.0),
                    catalog_item("gone", "Old spa", deleted=True), catalog_item("cafe", "Cup", 0.5, category="coffee")])
    encoder = CountingEncoder()
    clock = [0.0]
    indexer = CatalogIndexer(catalog, ItemIndex(dim=DIM), encoder, refresh_interval_s=5.0, clock=lambda: clock[0])
    assert indexer.maybe_refresh() == 3  # the deleted item is never embedded
    assert sorted(indexer.index._items) == ["cafe", "lux", "zen"] and indexer.embedded == 3
    assert encoder.texts[0].startswith("spa: ") or encoder.texts[0].startswith("coffee: ")
    # Nothing changed: nothing re-embedded, even when asked to refresh.
    assert indexer.refresh() == 0 and indexer.embedded == 3
    # A price change, a new item and a delete: three updates, two embeddings.
    catalog.upsert([catalog_item("zen", "Zen spa", price=5.0, updated_ts=200.0),
                    catalog_item("new", "New spa", 0.2, updated_ts=210.0),
                    catalog_item("lux", "Lux spa", 1.0, deleted=True, updated_ts=220.0)])
    assert indexer.maybe_refresh() == 0  # within the refresh interval: not yet
    clock[0] = 10.0
    assert indexer.maybe_refresh() == 3
    assert indexer.embedded == 5 and "lux" not in indexer.index
    assert indexer.index.item("zen").price == 5.0 and "new" in indexer.index
    assert indexer.watermark == 220.0


def test_indexer_catches_late_changes_within_the_lag_and_expires_old_items(catalog) -> None:
    catalog.upsert([catalog_item("a", "A spa", updated_ts=1000.0, valid_to=5000.0)])
    indexer = CatalogIndexer(catalog, ItemIndex(dim=DIM), CountingEncoder(), lag_s=600.0, retain_s=100.0)
    indexer.refresh()
    catalog.upsert([catalog_item("late", "Late spa", updated_ts=700.0, valid_to=50_000.0)])  # older than a
    indexer.refresh()
    assert "late" in indexer.index
    # The catalog moves on far past a's end: a leaves the index.
    catalog.upsert([catalog_item("b", "B spa", updated_ts=6000.0, valid_to=50_000.0)])
    indexer.refresh()
    assert "a" not in indexer.index and {"late", "b"} <= set(indexer.index._items)


def test_catalog_changes_lists_everything_then_only_changes(catalog) -> None:
    catalog.upsert([catalog_item("a", "A", updated_ts=10.0), catalog_item("b", "B", updated_ts=20.0)])
    assert sorted(i.item_id for i in catalog_changes(catalog, -math.inf)) == ["a", "b"]
    assert [i.item_id for i in catalog_changes(catalog, 15.0)] == ["b"]


def test_catalog_changes_prefers_the_catalogs_own_query() -> None:
    class WithChanges:
        def changed_since(self, since: float) -> list:
            return [catalog_item("x", "X", updated_ts=since + 1)]

    assert [i.updated_ts for i in catalog_changes(WithChanges(), 5.0)] == [6.0]
    with pytest.raises(TypeError, match="changed_since"):
        catalog_changes(object(), 0.0)


def test_item_text() -> None:
    assert item_text(catalog_item("a", "Zen spa")) == "spa: Zen spa — offer"
    bare = CatalogItem("b", "biz", "offer", None, None, None, LAT, LON, None, None, None, None, None, None, False, 0.0)
    assert item_text(bare) == ""


def test_catalog_reads_follow_changes_to_an_item(catalog) -> None:
    # RedisCatalog decodes an item once per stored JSON: a changed item must read as changed.
    catalog.upsert([catalog_item("zen", "Zen spa"), catalog_item("lux", "Lux spa", 1.0)])
    assert {i.title for i in catalog.near(LAT, LON, 5.0)} == {"Zen spa", "Lux spa"}
    renamed = catalog_item("zen", "Zen spa, new", updated_ts=catalog.get("zen").updated_ts + 1)
    catalog.upsert([renamed])
    assert {i.title for i in catalog.near(LAT, LON, 5.0)} == {"Zen spa, new", "Lux spa"}
    assert catalog.get("zen") == renamed and catalog.near(LAT, LON, 5.0)[0] == renamed


def test_changed_since_is_a_range_not_a_scan(catalog) -> None:
    catalog.upsert([catalog_item("a", "A", updated_ts=10.0), catalog_item("b", "B", updated_ts=20.0),
                    catalog_item("c", "C", updated_ts=30.0)])
    catalog.upsert([catalog_item("a", "A again", updated_ts=25.0), catalog_item("c", "C old", updated_ts=5.0)])
    assert [(i.item_id, i.title) for i in catalog.changed_since(-math.inf)] == [
        ("b", "B"), ("a", "A again"), ("c", "C")]  # oldest first; the older write of "c" lost
    assert [i.item_id for i in catalog.changed_since(20.0)] == ["b", "a", "c"]
    assert [i.item_id for i in catalog.changed_since(25.5)] == ["c"] and catalog.changed_since(31.0) == []


@pytest.mark.redis
def test_a_catalog_written_before_the_updated_index_is_indexed_once() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    try:
        _backfill_once(RedisCatalog(client, prefix="test:catalog"))
    finally:
        client.flushdb()
        client.close()


def _backfill_once(catalog: RedisCatalog) -> None:
    catalog.upsert([catalog_item(f"i{n}", f"I{n}", updated_ts=float(n)) for n in range(2500)])
    catalog.client.delete(catalog.updated_key)  # as an older Kairos left it: items, no index
    assert [i.item_id for i in catalog.changed_since(2497.0)] == ["i2497", "i2498", "i2499"]
    assert catalog.client.zcard(catalog.updated_key) == 2500
    # The backfill never lowers a newer score that an upsert wrote meanwhile.
    catalog.client.zadd(catalog.updated_key, {"i0": 9999.0})
    catalog.client.zrem(catalog.updated_key, "i1")
    catalog.changed_since(0.0)
    assert catalog.client.zscore(catalog.updated_key, "i0") == 9999.0
    assert catalog.client.zscore(catalog.updated_key, "i1") == 1.0
