"""The Bytewax source over the event store: positions, resume, caught-up behaviour."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from flows.dataflow import collections_to_read
from flows.source import EventStoreSource
from kairos.config import Settings
from kairos.decoding import load_mappings
from kairos.stores.event_store import SqliteEventStore, open_event_store


@pytest.fixture()
def settings(tmp_path):
    return Settings(home=tmp_path, poll_interval_s=0.5)


def test_partition_reads_in_order_snapshots_position_and_resumes(settings):
    store = open_event_store(settings)
    store.append("pings", [{"n": i} for i in range(5)])
    store.append("orders", [{"n": 99}])
    source = EventStoreSource(settings, ["pings", "orders"], batch_size=2)
    assert source.list_parts() == ["orders", "pings"]
    part = source.build_part("s", "pings", None)
    assert [r.document["n"] for r in part.next_batch()] == [0, 1]
    position = part.snapshot()
    resumed = source.build_part("s", "pings", position)
    assert [r.document["n"] for r in resumed.next_batch()] == [2, 3]
    assert [r.document["n"] for r in resumed.next_batch()] == [4]
    with pytest.raises(StopIteration):  # batch mode ends when the collection is caught up
        resumed.next_batch()


def test_following_partition_sleeps_when_caught_up_then_sees_new_documents(settings):
    store = open_event_store(settings)
    part = EventStoreSource(settings, ["pings"], follow=True).build_part("s", "pings", None)
    assert part.next_batch() == []
    awake = part.next_awake()
    assert awake is not None and awake > datetime.now(timezone.utc)
    store.append("pings", [{"n": 1}])
    assert [r.document["n"] for r in part.next_batch()] == [1]
    assert part.next_awake() is None


def test_unmapped_collections_in_the_store_are_read_not_ignored(settings):
    SqliteEventStore(settings.event_log_path).append("mystery", [{"x": 1}])
    mappings = load_mappings()
    assert "mystery" in collections_to_read(settings, mappings)
    assert set(mappings) <= set(collections_to_read(settings, mappings))


def test_event_store_rejects_unknown_ops_and_appends_batches_whole(settings):
    store = open_event_store(settings)
    with pytest.raises(ValueError, match="unknown op"):
        store.append("pings", [{"n": 1}], op="upsert")
    with pytest.raises(TypeError):
        store.append("pings", [{"n": 1}, {"bad": object()}])
    assert store.count() == 0  # the good document of the failed batch was not half-written
