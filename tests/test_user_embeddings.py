"""User embeddings: exact time decay in any arrival order, and the SQLite and Redis stores."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.config import Settings
from kairos.schema import Event
from online.user_embeddings import (
    ENGAGEMENT_WEIGHTS,
    EmbeddingState,
    RedisUserEmbeddingStore,
    SqliteUserEmbeddingStore,
    UserEmbeddings,
    cosine,
    decay_factor,
    decayed_update,
    engagement_text,
    learn_events,
    open_user_embedding_store,
    read_one,
)

DAY = 86400.0
REDIS_DB = 13


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def event(kind: str, *, text: str | None = None, item_id: str | None = None, ts: float = 0.0,
          actor_type: str = "user") -> Event:
    return Event(
        event_id=f"e-{kind}-{ts}", ts=datetime.fromtimestamp(ts, UTC), actor_type=actor_type, actor_id="u1",
        kind=kind, item_id=item_id, text=text,
    )


# -- the pure update ---------------------------------------------------------------------------------


def test_decay_factor_halves_per_half_life() -> None:
    assert decay_factor(0, DAY) == 1.0
    assert decay_factor(-5, DAY) == 1.0
    assert decay_factor(DAY, DAY) == pytest.approx(0.5)
    assert decay_factor(3 * DAY, DAY) == pytest.approx(0.125)


def test_newer_engagements_count_more() -> None:
    users = UserEmbeddings(half_life_s=DAY, dim=2)
    users.learn_one("u", unit(1, 0), ts=0)
    users.learn_one("u", unit(0, 1), ts=2 * DAY)  # two half-lives later: 4x the weight
    v = users.vector("u")
    assert v[1] / v[0] == pytest.approx(4.0, rel=1e-5)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6)
    state = users.state("u")
    assert state.ts == 2 * DAY and state.count == 2 and state.weight == pytest.approx(1.25)


def test_weight_scales_the_pull() -> None:
    users = UserEmbeddings(half_life_s=DAY, dim=2)
    users.learn_one("u", unit(1, 0), weight=1.0, ts=0)
    users.learn_one("u", unit(0, 1), weight=5.0, ts=0)  # a purchase beside a view
    v = users.vector("u")
    assert v[1] / v[0] == pytest.approx(5.0, rel=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 30 * DAY, allow_nan=False),
            st.floats(0.1, 5.0),
            st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3).filter(
                lambda v: np.linalg.norm(v) > 0.1
            ),
        ),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_any_arrival_order_gives_the_time_ordered_result(events: list, rnd) -> None:
    in_order = None
    for ts, weight, vector in sorted(events, key=lambda e: e[0]):
        in_order = decayed_update(in_order, np.array(vector), weight, ts, DAY)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    any_order = None
    for ts, weight, vector in shuffled:
        any_order = decayed_update(any_order, np.array(vector), weight, ts, DAY)
    assert any_order.ts == in_order.ts == max(e[0] for e in events)
    assert any_order.weight == pytest.approx(in_order.weight, rel=1e-5)
    np.testing.assert_allclose(any_order.total, in_order.total, rtol=1e-4, atol=1e-5)
    assert any_order.count == len(events)


def test_consistency_tells_a_focused_taste_from_a_scattered_one() -> None:
    focused = UserEmbeddings(dim=2)
    scattered = UserEmbeddings(dim=2)
    for i in range(4):
        focused.learn_one("u", unit(1, 0.1), ts=i)
        scattered.learn_one("u", unit(1, 0) if i % 2 else unit(-1, 0.2), ts=i)
    assert focused.state("u").consistency() > 0.99
    assert scattered.state("u").consistency() < 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vector": np.ones(3)}, "3 dimensions, expected 2"),
        ({"vector": np.zeros(2)}, "non-zero"),
        ({"vector": np.array([np.nan, 1.0])}, "finite"),
        ({"weight": 0.0}, "weight must be a positive number"),
        ({"weight": float("inf")}, "weight must be a positive number"),
        ({"ts": float("nan")}, "ts must be finite"),
    ],
)
def test_learn_one_rejects_bad_input(kwargs: dict, message: str) -> None:
    users = UserEmbeddings(dim=2)
    args = {"user_id": "u", "vector": unit(1, 1), "weight": 1.0, "ts": 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        users.learn_one(**args)
    assert users.vector("u") is None


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        UserEmbeddings(half_life_s=0)
    with pytest.raises(ValueError, match="dim"):
        UserEmbeddings(dim=0)


def test_unknown_user_and_similarity() -> None:
    users = UserEmbeddings(dim=2)
    assert users.vector("ghost") is None and users.similarity("ghost", unit(1, 0)) is None
    users.learn_one("u", unit(1, 0))
    assert users.similarity("u", unit(1, 0)) == pytest.approx(1.0)
    assert users.similarity("u", unit(-1, 0)) == pytest.approx(-1.0)
    assert cosine(unit(1, 0), np.zeros(2)) is None
    with pytest.raises(ValueError, match="different sizes"):
        cosine(unit(1, 0), np.ones(3))


def test_pickle_round_trip_and_dirty_tracking() -> None:
    users = UserEmbeddings(half_life_s=DAY, dim=2)
    users.learn_one("a", unit(1, 0), ts=0)
    users.learn_one("b", unit(0, 1), ts=5)
    copy = pickle.loads(pickle.dumps(users))
    np.testing.assert_array_equal(copy.vector("a"), users.vector("a"))
    assert copy.half_life_s == DAY and len(copy) == 2
    assert set(users.pop_dirty()) == {"a", "b"}
    assert users.pop_dirty() == {}
    users.learn_one("a", unit(1, 1), ts=9)
    assert set(users.pop_dirty()) == {"a"}


# -- which events count --------------------------------------------------------------------------------


def test_engagement_text_uses_query_or_item_text() -> None:
    titles = {"i1": "Zen spa — 38 % off deep tissue massage"}
    assert engagement_text(event("search", text="cheap massage")) == ("cheap massage", ENGAGEMENT_WEIGHTS["search"])
    assert engagement_text(event("voice", text=" spa tonight ")) == ("spa tonight", ENGAGEMENT_WEIGHTS["voice"])
    assert engagement_text(event("purchase", item_id="i1"), titles.get) == (titles["i1"], 5.0)
    assert engagement_text(event("booking", item_id="i1"), titles.get)[1] == 5.0
    # Unknown item: the event's own text, else nothing.
    assert engagement_text(event("click", item_id="zz", text="Jazz night"), titles.get) == ("Jazz night", 2.0)
    assert engagement_text(event("click", item_id="zz"), titles.get) is None
    # Kinds that say nothing about taste, and business events.
    assert engagement_text(event("location")) is None
    assert engagement_text(event("dismiss", item_id="i1"), titles.get) is None
    assert engagement_text(event("search", text="   ")) is None
    assert engagement_text(event("search", text="spa", actor_type="business")) is None


def fake_encode(texts: list[str]) -> np.ndarray:
    """Spa words point one way, food words another: enough to see the taste move."""
    out = np.zeros((len(texts), 3), dtype=np.float32)
    for i, text in enumerate(texts):
        if "spa" in text or "massage" in text:
            out[i] = unit(1, 0, 0)
        elif "pizza" in text:
            out[i] = unit(0, 1, 0)
    return out


def test_learn_event_and_learn_events() -> None:
    users = UserEmbeddings(dim=3)
    assert users.learn_event(event("search", text="massage"), fake_encode) is True
    assert users.learn_event(event("location"), fake_encode) is False
    assert users.learn_event(event("search", text="???"), fake_encode) is False  # encoder gives zeros
    assert users.similarity("u1", unit(1, 0, 0)) == pytest.approx(1.0)
    batch = [event("purchase", item_id="p", ts=10), event("view", item_id="p", ts=11), event("location", ts=12)]
    assert learn_events(users, batch, fake_encode, {"p": "pizza slice"}.get) == 2
    # Five plus one units of pizza against one of spa, all within seconds: mostly pizza now.
    v = users.vector("u1")
    assert v[1] > v[0] > 0


# -- stores --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    if request.param == "sqlite":
        sqlite_store = SqliteUserEmbeddingStore(tmp_path / "emb.sqlite")
        yield sqlite_store
        sqlite_store.close()
        return
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    redis_store = RedisUserEmbeddingStore(client, prefix="test:user_embeddings")
    yield redis_store
    client.flushdb()
    redis_store.close()


def state(vector: np.ndarray, ts: float, count: int = 1, weight: float = 1.0) -> EmbeddingState:
    return EmbeddingState(vector.astype(np.float32), weight, ts, count)


def test_store_round_trip(store) -> None:
    rng = np.random.default_rng(3)
    vector = rng.normal(size=384).astype(np.float32)
    store.write_batch({"u1": state(vector, 100.0, 3, 2.5), "u:2": state(-vector, 50.0)})
    got = store.read(["u1", "nobody", "u:2"])
    assert got[1] is None
    np.testing.assert_array_equal(got[0].total, vector)
    assert (got[0].weight, got[0].ts, got[0].count) == (2.5, 100.0, 3)
    np.testing.assert_array_equal(got[2].total, -vector)
    assert read_one(store, "u1").count == 3
    np.testing.assert_array_equal(store.read(["u:2"])[0].total, -vector)  # one user: read alone
    assert store.read(["nobody"]) == [None]
    assert store.read([]) == []


def test_store_never_lets_an_older_state_win(store) -> None:
    store.write_batch({"u": state(unit(1, 0), 100.0, 5)})
    store.write_batch({"u": state(unit(0, 1), 90.0, 9)})  # older anchor: ignored
    store.write_batch({"u": state(unit(0, 1), 100.0, 4)})  # same anchor, fewer events: ignored
    np.testing.assert_allclose(read_one(store, "u").total, unit(1, 0))
    store.write_batch({"u": state(unit(0, 1), 100.0, 6)})  # same anchor, a late event folded in
    np.testing.assert_allclose(read_one(store, "u").total, unit(0, 1))
    store.write_batch({"u": state(unit(1, 1), 101.0, 1)})
    assert read_one(store, "u").ts == 101.0


def test_store_keeps_what_the_learner_learned(store) -> None:
    users = UserEmbeddings(dim=3)
    users.learn_one("u1", unit(1, 0, 0), ts=0)
    users.learn_one("u1", unit(0, 1, 0), weight=3.0, ts=DAY)
    store.write_batch(users.pop_dirty())
    revived = UserEmbeddings(dim=3)
    revived.set_state("u1", read_one(store, "u1"))
    np.testing.assert_allclose(revived.vector("u1"), users.vector("u1"), rtol=1e-6)
    revived.learn_one("u1", unit(0, 0, 1), ts=2 * DAY)
    users.learn_one("u1", unit(0, 0, 1), ts=2 * DAY)
    np.testing.assert_allclose(revived.vector("u1"), users.vector("u1"), rtol=1e-6)


def test_many_ids_are_read_in_chunks(tmp_path: Path) -> None:
    store = SqliteUserEmbeddingStore(tmp_path / "emb.sqlite")
    store.write_batch({f"u{i}": state(unit(1, float(i)), float(i)) for i in range(1200)})
    got = store.read([f"u{i}" for i in range(1200)])
    assert all(s is not None for s in got) and got[1199].ts == 1199.0


@pytest.mark.redis
def test_open_store_follows_the_profile(tmp_path: Path) -> None:
    local = open_user_embedding_store(Settings(home=tmp_path))
    assert isinstance(local, SqliteUserEmbeddingStore) and local.path == tmp_path / "user_embeddings.sqlite"
    local.close()
    remote = open_user_embedding_store(
        Settings(home=tmp_path, profile="redis", redis_url=f"127.0.0.1:6379,db={REDIS_DB}", feast_project="t")
    )
    try:
        assert isinstance(remote, RedisUserEmbeddingStore) and remote.prefix == "kairos:t:user_embeddings"
        remote.write_batch({"u": state(unit(1, 0), 1.0)})
        assert read_one(remote, "u") is not None
    finally:
        remote.client.flushdb()
        remote.close()
