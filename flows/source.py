"""Bytewax input over the event store: one partition per collection, resumable by position."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows import timing
from kairos.config import Settings
from kairos.stores.event_store import EventStore, SourceRecord, open_event_store


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


class _CollectionPartition(StatefulSourcePartition[SourceRecord, str | None]):
    def __init__(self, store: EventStore, collection: str, position: str | None, follow: bool,
                 batch_size: int, poll_interval_s: float) -> None:
        self.store, self.collection, self.position = store, collection, position
        self.follow, self.batch_size = follow, batch_size
        self.poll = timedelta(seconds=poll_interval_s)
        self._awake: datetime | None = None
        self._started = False

    def next_batch(self) -> list[SourceRecord]:
        if not self._started:
            timing.mark("start")
            self._started = True
        records = self.store.read(self.collection, self.position, self.batch_size)
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
    """Reads every collection from its snapshot position; ``follow`` keeps tailing when caught up."""

    def __init__(self, settings: Settings, collections: list[str], follow: bool = False,
                 batch_size: int = 2000) -> None:
        self.settings = settings
        self.collections = sorted(set(collections))
        self.follow = follow
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return self.collections

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _CollectionPartition:
        return _CollectionPartition(open_event_store(self.settings), for_part, resume_state, self.follow,
                                    self.batch_size, self.settings.poll_interval_s)
