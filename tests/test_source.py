"""The Bytewax source over the event store: positions, resume, caught-up behaviour."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from flows.dataflow import collections_to_read
from flows.source import EventStoreSource
from kairos.config import Settings
from kairos.decoding import load_mappings
from kairos.stores.event_store import Shard, SqliteEventStore, open_event_store


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


# -- shards: a busy collection split over several partitions -------------------------------------


def drain(part) -> list[int]:
    """Every ``n`` a batch-mode partition reads until it is caught up."""
    got: list[int] = []
    while True:
        try:
            got += [r.document["n"] for r in part.next_batch()]
        except StopIteration:
            return got


def test_sharded_source_reads_every_record_once_and_in_order_within_each_shard(settings):
    store = open_event_store(settings)
    store.append("pings", [{"n": i} for i in range(11)])
    store.append("orders", [{"n": 100}])
    source = EventStoreSource(settings, ["pings", "orders"], batch_size=3, shards=2)
    # Sorted so that a collection's shards sit next to each other (Bytewax assigns in this order).
    assert source.list_parts() == ["orders#0/2", "orders#1/2", "pings#0/2", "pings#1/2"]
    seen = [drain(source.build_part("s", name, None)) for name in ("pings#0/2", "pings#1/2")]
    assert all(s == sorted(s) and s for s in seen)
    assert sorted(seen[0] + seen[1]) == list(range(11))  # every record, none in both shards
    orders = [n for name in ("orders#0/2", "orders#1/2") for n in drain(source.build_part("s", name, None))]
    assert orders == [100]


def test_a_shard_resumes_from_its_own_position(settings):
    store = open_event_store(settings)
    store.append("pings", [{"n": i} for i in range(8)])
    source = EventStoreSource(settings, ["pings"], batch_size=2, shards=2)
    part = source.build_part("s", "pings#1/2", None)
    first = [r.document["n"] for r in part.next_batch()]
    resumed = source.build_part("s", "pings#1/2", part.snapshot())
    rest = [r.document["n"] for r in resumed.next_batch()]
    assert len(first) == len(rest) == 2 and not set(first) & set(rest)
    assert max(first) < min(rest)


def test_shard_names_sort_in_shard_order_past_ten_shards(settings):
    parts = EventStoreSource(settings, ["pings"], shards=12).list_parts()
    assert parts[:2] == ["pings#00/12", "pings#01/12"] and parts[-1] == "pings#11/12"
    assert len(parts) == 12


def test_one_shard_keeps_the_plain_collection_names(settings):
    # What a recovery directory written before shards existed holds: it must resume unchanged.
    assert EventStoreSource(settings, ["pings", "orders"], shards=1).list_parts() == ["orders", "pings"]


def test_a_store_that_cannot_shard_keeps_one_partition_per_collection(settings, monkeypatch):
    from flows import source as source_module
    from kairos.stores.event_store import supports_shards
    from kairos.stores.mongo_store import MongoEventStore

    class ChangeStreams:  # like MongoEventStore: one change stream per collection, no Shard reads
        closed = False

        def close(self) -> None:
            self.closed = True

    opened = ChangeStreams()
    monkeypatch.setattr(source_module, "open_event_store", lambda s: opened)
    source = EventStoreSource(settings, ["pings", "orders"], shards=4)
    assert source.list_parts() == ["orders", "pings"] and source.shards == 1
    assert opened.closed  # asked, then let go
    assert not getattr(MongoEventStore, "supports_shards", False)
    mongo = Settings(home=settings.home, event_store="mongo", mongo_url="mongodb://localhost:27017/?replicaSet=rs0")
    assert not supports_shards(mongo) and supports_shards(settings)


def test_bad_shard_requests_are_refused_with_a_clear_error(settings):
    with pytest.raises(ValueError, match="shards must be at least 1"):
        EventStoreSource(settings, ["pings"], shards=0)
    with pytest.raises(ValueError, match="shard index 2 is not in 0..1"):
        open_event_store(settings).read("pings", None, 10, shard=Shard(2, 2))
    with pytest.raises(ValueError, match="unknown source partition 'pings#3/4'"):
        EventStoreSource(settings, ["pings"], shards=2).build_part("s", "pings#3/4", None)
    with pytest.raises(ValueError, match="KAIROS_SOURCE_SHARDS"):
        Settings(home=settings.home, source_shards=0).validate()


class _RecordingSource(EventStoreSource):
    """Notes which worker thread built each partition."""

    built: dict[str, int]

    def build_part(self, step_id, for_part, resume_state):
        self.built[for_part] = threading.get_ident()
        return super().build_part(step_id, for_part, resume_state)


def test_two_workers_each_read_one_shard_of_every_collection(settings):
    """What the speed-up rests on: Bytewax hands a collection's shards to different workers (a
    Bytewax upgrade that assigns partitions differently would fail here, not silently slow down)."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, cluster_main

    store = open_event_store(settings)
    store.append("pings", [{"n": i} for i in range(40)])
    store.append("orders", [{"n": 100 + i} for i in range(6)])
    store.append("searches", [{"n": 200 + i} for i in range(5)])
    store.append("voice", [{"n": 300}])
    source = _RecordingSource(settings, ["pings", "orders", "searches", "voice"], batch_size=7, shards=2)
    source.built = {}
    out: list[int] = []
    flow = Dataflow("shards_on_two_workers")
    records = op.input("in", flow, source)
    op.output("out", op.map("n", records, lambda r: r.document["n"]), TestingSink(out))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert sorted(out) == list(range(40)) + [100 + i for i in range(6)] + [200 + i for i in range(5)] + [300]
    assert len(set(source.built.values())) == 2
    for collection in ("pings", "orders", "searches", "voice"):
        assert source.built[f"{collection}#0/2"] != source.built[f"{collection}#1/2"], collection
