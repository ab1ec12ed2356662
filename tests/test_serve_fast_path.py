"""Serving's fast path gives the answers of the direct path: Feast's direct read equals
``get_online_features``; the per-cell candidate cache equals a per-request read, follows catalog
changes and never caches an outage; the taste part ranks and explains."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.geo import cell_of
from kairos.stores.catalog import CatalogItem
from kairos.stores.online_features import OnlineFeatures
from online.transparent_ranker import Candidate, RankContext, TransparentRanker
from online.user_embeddings import EmbeddingState
from serving.deps import Services
from serving.suggestions import build_suggestions, candidate_cache, candidate_rows, gather_candidates

AT = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
T0 = AT.timestamp()
LAT, LON = 40.7580, -73.9855
KM = 1 / 111.2


def item(item_id: str, category: str, km_north: float, km_east: float = 0.0, price: float = 10.0,
         valid_from: float | None = T0 - 3600, valid_to: float | None = T0 + 7200) -> CatalogItem:
    lat, lon = LAT + km_north * KM, LON + km_east * KM / 0.758
    return CatalogItem(item_id, f"biz-{item_id}", "offer", category, f"{item_id} title", None, lat, lon,
                       cell_of(lat, lon, 8), price, price * 1.5, "USD", valid_from, valid_to, False, T0 - 7200)


# A grid of items around the point, some expired, some starting later, some far away.
CATALOG = [item(f"i{n}", ("spa", "coffee", "food")[n % 3], (n % 9 - 4) * 0.7, (n // 9 - 4) * 0.7,
                price=5.0 + n, valid_from=T0 - 3600 if n % 5 else T0 + (n % 7) * 3600,
                valid_to=T0 + 7200 if n % 11 else T0 - 60) for n in range(81)]


def row(view: str, **values: Any) -> dict[str, Any]:
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    out = {f.name: defaults[f.dtype] for f in VIEWS[view].fields} | {"as_of": T0 - 60}
    return out | values


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    settings = Settings(home=tmp_path_factory.mktemp("kairos_fast"), feast_project=f"fast{uuid.uuid4().hex[:8]}",
                        auth_required=False, ranker="transparent", suggest_cache_ttl_s=30.0)
    services = Services.start(settings)
    services.catalog.upsert(CATALOG)
    services.features.write("item_stats", [row("item_stats", item_id=i.item_id, view_count_24h=10 + n,
                                               click_count_24h=n % 4) for n, i in enumerate(CATALOG)])
    services.features.write("cell_supply", [row("cell_supply", cell=i.cell, category=i.category,
                                                 median_price=12.0) for i in CATALOG[::2]])
    yield services
    services.close()


def uncached(services: Services) -> Services:
    """The same stores (and extras), read per request."""
    return replace(services, settings=services.settings.with_(suggest_cache_ttl_s=0))


@pytest.mark.parametrize(("dlat", "dlon", "radius", "minutes"),
                         [(0, 0, 3.0, 0), (0.004, -0.006, 1.0, 30), (-0.01, 0.01, 2.5, 59), (0.02, 0, 6.0, 100)])
def test_cached_candidates_equal_a_direct_read(services: Services, dlat: float, dlon: float, radius: float,
                                               minutes: int) -> None:
    lat, lon, at = LAT + dlat, LON + dlon, AT + timedelta(minutes=minutes)
    items, candidates, area, degraded = gather_candidates(services, lat, lon, radius, at)
    d_items, d_candidates, d_area, d_degraded = gather_candidates(uncached(services), lat, lon, radius, at)
    assert not degraded and not d_degraded and d_items  # a real comparison, not two empty lists
    assert sorted(c.item_id for c in candidates) == sorted(c.item_id for c in d_candidates)
    by_id = {c.item_id: c for c in candidates}
    assert all(by_id[c.item_id] == c for c in d_candidates)  # same stats, same cells
    assert all(area[k] == v for k, v in d_area.items())
    # And so the same response.
    cached = build_suggestions(services, "u", lat, lon, at, radius, 10, None)
    direct = build_suggestions(uncached(services), "u", lat, lon, at, radius, 10, None)
    assert [i.model_dump() for i in cached.items] == [i.model_dump() for i in direct.items]


def test_cache_serves_stale_while_refreshing_then_follows_the_catalog(services: Services,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cache = candidate_cache(services)
    monkeypatch.setattr(cache, "ttl_s", 0.2)
    lat = LAT + 0.05  # a cell of its own
    gather_candidates(services, lat, LON, 1.0, AT)
    services.catalog.upsert([item("newcomer", "spa", 0.05 / KM + 0.1)])
    ids = {c.item_id for c in gather_candidates(services, lat, LON, 1.0, AT)[1]}
    assert "newcomer" not in ids  # within the TTL: the cached cell
    time.sleep(0.25)
    refreshes = cache.refreshes
    gather_candidates(services, lat, LON, 1.0, AT)  # stale: served, and a refresh is queued
    deadline = time.monotonic() + 5
    while cache.refreshes == refreshes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "newcomer" in {c.item_id for c in gather_candidates(services, lat, LON, 1.0, AT)[1]}


def test_an_outage_is_never_cached(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    lat = LAT - 0.05
    real_read = services.features.read
    # Rows read by earlier tests' cells would answer from the shared memo: make every read reach the store.
    monkeypatch.setattr(candidate_rows(services), "max_age_s", 0.0)

    def down(view: str, keys: Any, fields: Any = None) -> Any:
        raise ConnectionError("redis down")

    monkeypatch.setattr(services.features, "read", down)
    assert gather_candidates(services, lat, LON, 2.0, AT)[3] is True
    monkeypatch.setattr(services.features, "read", real_read)
    assert gather_candidates(services, lat, LON, 2.0, AT)[3] is False  # read again, not the outage's entry


def test_neighbouring_cells_share_their_feature_rows(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    memo = candidate_rows(services)
    monkeypatch.setattr(memo, "_rows", type(memo._rows)())  # nothing kept from earlier tests
    asked: list[str] = []
    real_read = services.features.read

    def counting(view: str, keys: Any, fields: Any = None) -> Any:
        if view == "item_stats":
            asked.extend(k["item_id"] for k in keys)
        return real_read(view, keys, fields)

    monkeypatch.setattr(services.features, "read", counting)
    at = AT + timedelta(minutes=7)  # a time bucket of its own: these cells are built here, not cached
    first = {c.item_id for c in gather_candidates(services, LAT, LON, 2.0, at)[1]}
    read_once = len(asked)
    next_cell = LAT + 0.012  # the next H3 cell north: most of its candidates are the first cell's
    assert cell_of(next_cell, LON, services.settings.suggest_cache_resolution) != cell_of(
        LAT, LON, services.settings.suggest_cache_resolution)
    second = {c.item_id for c in gather_candidates(services, next_cell, LON, 2.0, at)[1]}
    assert first & second and read_once == len(set(asked[:read_once]))
    assert set(asked[read_once:]).isdisjoint(asked[:read_once])  # shared rows were not read again
    # Past the memo's age every row is read again (and a direct read still equals the cache).
    monkeypatch.setattr(memo, "max_age_s", 0.0)
    before = len(asked)
    gather_candidates(services, LAT, LON, 2.0, at + timedelta(minutes=1))
    assert first <= set(asked[before:])
    cached = gather_candidates(services, next_cell, LON, 2.0, at + timedelta(minutes=1))[1]
    direct = gather_candidates(uncached(services), next_cell, LON, 2.0, at + timedelta(minutes=1))[1]
    assert sorted(cached, key=lambda c: c.item_id) == sorted(direct, key=lambda c: c.item_id)


def test_moderation_applies_to_cached_cells(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.suggestions import moderation_filter

    ids = [c.item_id for c in gather_candidates(services, LAT, LON, 3.0, AT)[1]]
    monkeypatch.setattr(moderation_filter(services), "current", lambda: ({ids[0]}, {f"biz-{ids[1]}"}))
    after = {c.item_id for c in gather_candidates(services, LAT, LON, 3.0, AT)[1]}
    assert after == set(ids) - {ids[0], ids[1]}


def test_read_fast_equals_read_local(services: Services) -> None:
    features = services.features.features
    keys = [{"item_id": i.item_id} for i in CATALOG[:20]] + [{"item_id": "missing"}]
    for fields in (None, ("view_count_24h", "ctr_24h")):
        assert features.read_fast("item_stats", keys, fields) == features.read("item_stats", keys, fields)
    assert features.read_fast("item_stats", [{"item_id": "missing"}]) == [None]


def test_read_fast_equals_read_redis(tmp_path) -> None:
    from kairos.stores.redis_conn import redis_client

    url, project = "127.0.0.1:6379,db=8", f"fast{uuid.uuid4().hex[:8]}"
    try:
        redis_client(url).ping()
    except Exception:
        pytest.fail("the tests need Redis at 127.0.0.1:6379")
    features = OnlineFeatures(Settings(home=tmp_path, profile="redis", redis_url=url, feast_project=project))
    rows = [row("user_activity", user_id=f"u{n}", category_affinity='{"spa": 1}', last_lat=40.0 + n,
                last_lon=float("nan"), travelling=bool(n % 2)) for n in range(5)]
    try:
        features.write("user_activity", rows)
        keys = [{"user_id": f"u{n}"} for n in range(7)]
        fast = features.read_fast("user_activity", keys)
        assert fast == features.read("user_activity", keys)
        assert fast[0]["last_lon"] is None and fast[1]["travelling"] is True and fast[6] is None
    finally:
        client = redis_client(url)
        for key in client.scan_iter(count=1000):
            if key.endswith(project.encode()):
                client.delete(key)


def test_taste_is_a_score_part_and_explains_when_it_dominates() -> None:
    items = [Candidate("a", "spa", LAT + 0.5 * KM, LON, price=30.0, valid_to=T0 + 7200),
             Candidate("b", "spa", LAT + 0.5 * KM, LON, price=30.0, valid_to=T0 + 7200)]
    ranker = TransparentRanker()
    plain = RankContext.build(LAT, LON, AT, items, radius_km=2.0)
    assert [s.item.item_id for s in ranker.rank(plain, items)] == ["a", "b"]  # a tie, broken by id
    tasteful = RankContext.build(LAT, LON, AT, items, radius_km=2.0, taste={"a": 0.1, "b": 0.9})
    ranked = ranker.rank(tasteful, items)
    assert [s.item.item_id for s in ranked] == ["b", "a"]
    assert ranked[0].parts["taste"] == pytest.approx(0.9)
    assert ranked[0].contributions["taste"] == pytest.approx(1.5 * 0.9)
    assert "like what you usually choose" in ranked[0].reason
    assert "like what you usually choose" not in ranked[1].reason
    assert ranker.rank(RankContext.build(LAT, LON, AT, items, taste={"a": -0.4}), items)[1].parts["taste"] == 0.0


def test_suggestions_use_the_users_taste_embedding(services: Services) -> None:
    """The user's embedding against the item index's vectors (a stand-in index: no MiniLM here)."""
    from serving.taste import user_embedding_store

    ids = [c.item_id for c in gather_candidates(services, LAT, LON, 3.0, AT)[1]]
    liked = ids[-1]
    rng = np.random.default_rng(0)
    vectors = {i: rng.normal(size=8).astype(np.float32) for i in ids}
    vectors[liked] = np.ones(8, dtype=np.float32)

    class Index:
        def __len__(self) -> int:
            return len(vectors)

        def vectors(self, item_ids: list[str]) -> dict[str, np.ndarray]:
            return {i: vectors[i] for i in item_ids if i in vectors}

    services.extras["item_index"] = SimpleNamespace(index=Index(), maybe_refresh=lambda: 0)
    user_embedding_store(services).write_batch({"taster": EmbeddingState(np.ones(8, dtype=np.float32), 1.0, T0, 5)})
    user = row("user_activity", user_id="taster", category_affinity="{}")
    body = build_suggestions(services, "taster", LAT, LON, AT, 3.0, 50, user)
    parts = {i.item_id: i.score_parts["taste"] for i in body.items}
    assert parts[liked] == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= v <= 1.0 for v in parts.values()) and len(set(parts.values())) > 2
    stranger = build_suggestions(services, "stranger", LAT, LON, AT, 3.0, 50, replace_user(user, "stranger"))
    assert {i.score_parts["taste"] for i in stranger.items} == {0.0}  # no embedding: no taste


def replace_user(user: dict[str, Any], user_id: str) -> dict[str, Any]:
    return {**user, "user_id": user_id}


def test_candidate_dataclass_round_trip() -> None:
    # The cache stores candidates built once per cell: they must be immutable to be shared.
    candidate = Candidate("x", "spa", LAT, LON)
    with pytest.raises(AttributeError):
        candidate.item_id = "y"  # type: ignore[misc]
    assert replace(candidate, price=3.0).price == 3.0


def test_feast_gets_socket_timeouts_unless_the_url_sets_them(tmp_path) -> None:
    from kairos.stores.online_features import feast_redis_connection

    settings = Settings(home=tmp_path, profile="redis", redis_url="10.0.0.5:6379,db=3", redis_timeout_s=0.75)
    assert feast_redis_connection(settings) == "10.0.0.5:6379,db=3,socket_timeout=0.75,socket_connect_timeout=0.75"
    own = settings.with_(redis_url="10.0.0.5:6379,socket_timeout=9")
    assert feast_redis_connection(own) == "10.0.0.5:6379,socket_timeout=9,socket_connect_timeout=0.75"
    with pytest.raises(ValueError, match="KAIROS_REDIS_TIMEOUT_S"):
        settings.with_(redis_timeout_s=0).validate()
