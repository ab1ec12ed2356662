"""Bytewax input over the event store: partitions per collection, resumable by position.

A collection is one partition, or ``shards`` of them when the store can read it in disjoint slices
(the SQLite log: rows by sequence number modulo ``shards``). Splitting matters because reading and
decoding run on the worker that owns a partition, and one collection (location pings) is most of
the stream: read whole, it held that worker at about two thirds of the reading and decoding while
the other waited (``kairos bench flow``, 2 processes). Bytewax 0.21 hands a source's partitions to
workers round-robin in name order (``calc_primaries``), so a collection's shards, named
``<collection>#<i>/<n>`` and sorting next to each other, land on different workers when ``shards``
is the cluster's worker count (tests/test_source.py checks this on 2 workers).

The partition names are part of the recovery state: Bytewax refuses to resume when they change
(a panic about a key "not in this worker's routing map"), so a flow resuming from snapshots reads
them with the shard count they were written with (:func:`with_recorded_shards`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sqlite3
import sys
import threading
from collections import Counter
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
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
log = logging.getLogger(__name__)
#: The source step's id in both flows (``flows.dataflow.decoded_events``): its snapshots hold the
#: partition names.
SOURCE_STEP = "event_store"
_SHARD_SUFFIX = re.compile(r"#(\d+)/(\d+)$")


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
        self.shards = shards
        self._parts: dict[str, tuple[str, Shard | None]] | None = None

    def _layout(self) -> dict[str, tuple[str, Shard | None]]:
        """Partition name -> (collection, shard); decided on first use, from the store itself."""
        if self._parts is None:
            if self.shards > 1:
                store = open_event_store(self.settings)
                try:
                    if not getattr(store, "supports_shards", False):
                        self.shards = 1
                finally:
                    store.close()
            shards = [None] if self.shards == 1 else [Shard(i, self.shards) for i in range(self.shards)]
            self._parts = {part_name(c, shard): (c, shard) for c in self.collections for shard in shards}
        return self._parts

    def list_parts(self) -> list[str]:
        return sorted(self._layout())

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _CollectionPartition:
        parts = self._layout()
        try:
            collection, shard = parts[for_part]
        except KeyError:  # Bytewax checks recovery state against list_parts first; this is a bug guard
            raise ValueError(f"unknown source partition {for_part!r}; known: {sorted(parts)}") from None
        return _CollectionPartition(open_event_store(self.settings), collection, resume_state, self.follow,
                                    self.batch_size, self.settings.poll_interval_s, shard)


def recorded_shards(folder: Path) -> int | None:
    """The shard count of the source partitions in the snapshots of the Bytewax recovery
    directory ``folder`` (1: plain collection names, as written before shards existed), or
    ``None`` when it holds no source snapshot yet (a fresh start: any count will do)."""
    counts: set[int] = set()
    for part in sorted(folder.glob("part-*.sqlite3")):
        try:
            with closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as conn:
                keys = conn.execute("SELECT DISTINCT state_key FROM snaps WHERE step_id LIKE ?",
                                    (f"%.{SOURCE_STEP}",)).fetchall()
        except sqlite3.Error as exc:
            raise RuntimeError(f"cannot read the source's partitions from the recovery partition {part} ({exc}): "
                               "is it a Bytewax 0.21 recovery directory?") from None
        for (key,) in keys:
            shard = _SHARD_SUFFIX.search(key)
            counts.add(int(shard.group(2)) if shard else 1)
    if len(counts) > 1:
        raise RuntimeError(f"the recovery directory {folder} holds source snapshots of several shard counts "
                           f"({sorted(counts)}); Bytewax cannot resume it: start it afresh")
    return counts.pop() if counts else None


def with_recorded_shards(settings: Settings, folder: Path) -> Settings:
    """``settings`` with ``source_shards`` as the snapshots in ``folder`` name the partitions: a
    changed ``KAIROS_SOURCE_SHARDS`` is ignored, with a warning, until the directory is started
    afresh (resuming needs the same partitions); a directory from before shards reads one
    partition per collection."""
    recorded = recorded_shards(folder) if folder.is_dir() else None
    if recorded is None or recorded == settings.source_shards:
        return settings
    if supports_shards(settings):
        log.warning("KAIROS_SOURCE_SHARDS=%d ignored: the snapshots in %s were written with %d source shard(s) "
                    "per collection, and resuming needs the same partitions (start the directory afresh to change)",
                    settings.source_shards, folder, recorded)
    return replace(settings, source_shards=recorded)


def bytewax_recovery_dir() -> Path | None:
    """The recovery directory ``python -m bytewax.run`` was given (``-r`` or
    ``BYTEWAX_RECOVERY_DIRECTORY``), when this process is that command; else ``None``."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) != "bytewax.run":
        return None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", default=os.environ.get("BYTEWAX_RECOVERY_DIRECTORY"))
    found = parser.parse_known_args(sys.argv[1:])[0].recovery_directory
    return Path(found) if found else None
