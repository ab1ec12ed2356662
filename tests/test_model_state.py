"""Versioned model state (files and Redis) and the watcher that swaps models into the API."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kairos.config import Settings
from online.model_state import (
    FileModelStateStore,
    ModelPublisher,
    ModelWatcher,
    RedisModelStateStore,
    open_model_state,
    redis_client,
)

REDIS_DB = 12  # this module's own database, flushed before and after


def _redis_or_skip() -> Any:
    client = redis_client("127.0.0.1:6379", db=REDIS_DB)
    try:
        client.ping()
    except Exception as exc:  # pragma: no cover - CI starts Redis (.ci/run)
        pytest.fail(f"Redis at 127.0.0.1:6379 is required for the redis tests: {exc}")
    return client


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "file":
        yield FileModelStateStore(tmp_path / "models", retain=3)
        return
    client = _redis_or_skip()
    client.flushdb()
    yield RedisModelStateStore(client, prefix=f"test{uuid.uuid4().hex[:6]}:models:", retain=3)
    client.flushdb()
    client.close()


def test_publish_numbers_versions_and_load_reads_them(store: Any) -> None:
    assert store.latest_version("ranker") is None and store.load("ranker") is None
    assert [store.publish("ranker", {"w": k}) for k in range(1, 4)] == [1, 2, 3]
    assert store.latest_version("ranker") == 3
    assert store.load("ranker") == (3, {"w": 3})
    assert store.load("ranker", 2) == (2, {"w": 2})
    assert store.latest_version("other") is None  # names are separate


def test_old_versions_are_pruned(store: Any) -> None:
    for k in range(1, 7):
        store.publish("ranker", {"w": k})
    assert store.versions("ranker") == [4, 5, 6]
    assert store.load("ranker", 1) is None and store.load("ranker") == (6, {"w": 6})


def test_names_are_checked(store: Any) -> None:
    for bad in ("", "../etc", "a b", "x" * 65, "."):
        with pytest.raises(ValueError, match="model name"):
            store.publish(bad, 1)


def test_concurrent_publishers_get_distinct_versions_and_latest_never_goes_back(store: Any) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def publish(k: int) -> None:
        for j in range(5):
            version = store.publish("shared", (k, j))
            with lock:
                got.append(version)

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 21))
    assert store.latest_version("shared") == 20


def test_file_store_writes_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FileModelStateStore(tmp_path, retain=2)
    store.publish("m", b"x" * 100_000)
    store.publish("m", b"y" * 10)
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == [".lock", "LATEST", "v0000000001.pkl", "v0000000002.pkl"]
    (tmp_path / "m" / "LATEST").write_text("garbage")
    assert store.latest_version("m") is None  # a corrupt pointer reads as "nothing published"


def test_redis_client_parses_feast_style_urls() -> None:
    client = redis_client("10.0.0.5:6380,db=3,password=s3cret")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("10.0.0.5", 6380, 3, "s3cret")
    assert redis_client("localhost", db=7).connection_pool.connection_kwargs["db"] == 7


def test_open_model_state_follows_the_profile(tmp_path: Path) -> None:
    local = open_model_state(Settings(home=tmp_path))
    assert isinstance(local, FileModelStateStore) and local.root == tmp_path / "models"
    remote = open_model_state(Settings(home=tmp_path, profile="redis", feast_project="proj"))
    assert isinstance(remote, RedisModelStateStore) and remote.prefix == "proj:models:"
    remote.close()


def test_publisher_throttles_and_only_publishes_changes(tmp_path: Path) -> None:
    now = [0.0]
    store = FileModelStateStore(tmp_path)
    publisher = ModelPublisher(store, "m", interval_s=1.0, clock=lambda: now[0])
    assert publisher.maybe_publish("v0") is None  # nothing changed
    publisher.changed()
    assert publisher.maybe_publish("v1") == 1
    publisher.changed()
    now[0] = 0.5
    assert publisher.maybe_publish("v2") is None
    now[0] = 1.2
    assert publisher.maybe_publish("v2") == 2
    assert publisher.flush("v2") is None and store.load("m") == (2, "v2")


# -- watcher ---------------------------------------------------------------------------------------


def test_watcher_picks_up_new_versions_within_the_staleness_bound(store: Any) -> None:
    watcher = ModelWatcher(store, "ranker", interval_s=0.1, default="fallback")
    try:
        assert watcher.current() == "fallback" and watcher.version is None
        for k in (1, 2, 3):
            published_at = time.monotonic()
            version = store.publish("ranker", f"model-{k}")
            assert watcher.wait_for(version, timeout_s=5.0)
            assert time.monotonic() - published_at < 1.0  # polls every 0.1 s; bound promised: 5 s
            assert watcher.current() == f"model-{k}"
        assert watcher.swaps == 3 and watcher.staleness_s() < 1.0
    finally:
        watcher.close()


def test_watcher_starts_with_the_newest_published_model(store: Any) -> None:
    store.publish("ranker", "old")
    store.publish("ranker", "new")
    watcher = ModelWatcher(store, "ranker", interval_s=0.5)
    try:
        assert (watcher.version, watcher.current()) == (2, "new")
    finally:
        watcher.close()


class SlowStore:
    """A store whose loads take long: requests must not wait for them."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.fail = False

    def latest_version(self, name: str) -> int | None:
        if self.fail:
            raise ConnectionError("store is down")
        return self.inner.latest_version(name)

    def load(self, name: str, version: int | None = None) -> Any:
        time.sleep(self.delay_s)
        return self.inner.load(name, version)


def test_current_never_waits_for_a_slow_load_and_swaps_atomically(tmp_path: Path) -> None:
    inner = FileModelStateStore(tmp_path)
    inner.publish("m", {"version": 1})
    slow = SlowStore(inner, delay_s=0.6)
    watcher = ModelWatcher(slow, "m", interval_s=0.05)
    try:
        assert watcher.current() == {"version": 1}
        inner.publish("m", {"version": 2})
        time.sleep(0.1)  # the watcher is now inside its slow load
        began = time.monotonic()
        seen = [watcher.current() for _ in range(1000)]
        assert time.monotonic() - began < 0.1
        assert all(model in ({"version": 1}, {"version": 2}) for model in seen)
        assert watcher.wait_for(2, timeout_s=5.0) and watcher.current() == {"version": 2}
    finally:
        watcher.close()


def test_a_failing_store_keeps_the_last_model_in_service(tmp_path: Path) -> None:
    inner = FileModelStateStore(tmp_path)
    inner.publish("m", "good")
    flaky = SlowStore(inner, delay_s=0.0)
    watcher = ModelWatcher(flaky, "m", interval_s=0.05)
    try:
        flaky.fail = True
        time.sleep(0.3)
        assert watcher.current() == "good"
        assert watcher.last_error is not None and "store is down" in watcher.last_error
        assert watcher.staleness_s() >= 0.2  # honest about how old its knowledge is
        flaky.fail = False
        inner.publish("m", "better")
        assert watcher.wait_for(2) and watcher.last_error is None
    finally:
        watcher.close()


def test_watcher_never_goes_back_to_an_older_version(tmp_path: Path) -> None:
    store = FileModelStateStore(tmp_path)
    for k in range(3):
        store.publish("m", k)
    watcher = ModelWatcher(store, "m", interval_s=0.05)
    try:
        assert watcher.version == 3
        (tmp_path / "m" / "LATEST").write_text("2")  # e.g. a stale replica answering
        assert watcher.refresh() is False and watcher.version == 3
    finally:
        watcher.close()


def test_watcher_validates_its_interval_and_stops(tmp_path: Path) -> None:
    store = FileModelStateStore(tmp_path)
    with pytest.raises(ValueError, match="interval_s"):
        ModelWatcher(store, "m", interval_s=2.0)
    watcher = ModelWatcher(store, "m", interval_s=0.05)
    watcher.close()
    store.publish("m", "late")
    time.sleep(0.2)
    assert watcher.current() is None  # closed: no thread polls any more
