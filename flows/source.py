"""Bytewax input over the event store: partitions per collection, resumable by position.

A collection is one partition, or ``shards`` of them when the store can read it in disjoint slices
(the SQLite log: rows by sequence number modulo ``shards``). Splitting matters because reading and
decoding run on the worker that owns a partition, and one collection (location pings) is most of
the stream: read whole, it held that worker at about two thirds of the reading and decoding while
the other waited (``kairos bench flow``, 2 processes). Bytewax 0.21 hands a source's partitions to
workers round-robin in name order (``calc_primaries``), so a collection's shards, named
``<collection>#<i>/<n>`` and sorting next to each other, land on different workers when ``shards``
is the cluster's worker count (tests/test_source.py checks this on 2 workers).

The partition names are part of the recovery state: Bytewax refuses to resume when they change, so
the shard count a recovery directory was started with is kept (:func:`flows.runner.keep_source_layout`).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows import timing
from kairos.config import Settings
from kairos.stores.event_store import EventStore, Shard, SourceRecord, open_event_store, supports_shards


class ReadProgress:
    """Records read per collection in this process (the demo's progress bar polls it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, collection: str, n: int) -> None:
        with self._lock:
            self.counts[collection] += n

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


PROGRESS = ReadProgress()


def part_name(collection: str, shard: Shard | None) -> str:
    """A partition's name: the collection's, with ``#<i>/<n>`` for a shard (``i`` zero-padded so
    that names sort in shard order)."""
    if shard is None:
        return collection
    width = len(str(shard.count - 1))
    return f"{collection}#{shard.index:0{width}d}/{shard.count}"


class _CollectionPartition(StatefulSourcePartition[SourceRecord, str | None]):
    def __init__(self, store: EventStore, collection: str, position: str | None, follow: bool,
                 batch_size: int, poll_interval_s: float, shard: Shard | None = None) -> None:
        self.store, self.collection, self.position = store, collection, position
        self.shard = shard
        self.follow, self.batch_size = follow, batch_size
        self.poll = timedelta(seconds=poll_interval_s)
        self._awake: datetime | None = None
        self._started = False

    def next_batch(self) -> list[SourceRecord]:
        if not self._started:
            timing.mark("start")
            self._started = True
        if self.shard is None:
            records = self.store.read(self.collection, self.position, self.batch_size)
        else:
            records = self.store.read(self.collection, self.position, self.batch_size,  # type: ignore[call-arg]
                                      shard=self.shard)
        if records:
            self.position = records[-1].position
            self._awake = None
            PROGRESS.add(self.collection, len(records))
            return records
        # A quiet collection's change-stream token must keep moving or it ages out of the oplog.
        refresh = getattr(self.store, "caught_up_position", None)
        if refresh is not None:
            self.position = refresh(self.collection, self.position)
        if not self.follow:
            raise StopIteration()
        # Caught up: sleep instead of spinning on an empty log.
        self._awake = datetime.now(timezone.utc) + self.poll
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> str | None:
        return self.position

    def close(self) -> None:
        self.store.close()


class EventStoreSource(FixedPartitionedSource[SourceRecord, str | None]):
    """Reads every collection from its snapshot position; ``follow`` keeps tailing when caught up.

    ``shards`` > 1 reads each collection as that many partitions where the store supports it (the
    SQLite log; a MongoDB collection stays one change stream).
    """

    def __init__(self, settings: Settings, collections: list[str], follow: bool = False,
                 batch_size: int = 2000, shards: int = 1) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, not {shards}")
        self.settings = settings
        self.collections = sorted(set(collections))
        self.follow = follow
        self.batch_size = batch_size
        self.shards = shards if shards > 1 and supports_shards(settings) else 1
        self._parts: dict[str, tuple[str, Shard | None]] = {}
        for collection in self.collections:
            for shard in ([None] if self.shards == 1 else [Shard(i, self.shards) for i in range(self.shards)]):
                self._parts[part_name(collection, shard)] = (collection, shard)

    def list_parts(self) -> list[str]:
        return sorted(self._parts)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _CollectionPartition:
        try:
            collection, shard = self._parts[for_part]
        except KeyError:  # Bytewax checks recovery state against list_parts first; this is a bug guard
            raise ValueError(f"unknown source partition {for_part!r}; known: {sorted(self._parts)}") from None
        return _CollectionPartition(open_event_store(self.settings), collection, resume_state, self.follow,
                                    self.batch_size, self.settings.poll_interval_s, shard)
