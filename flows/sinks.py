"""Bytewax outputs: Feast online store, Parquet offline log, item catalog, dead-letter log."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar
from zlib import adler32

from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

from flows import timing
from kairos.config import Settings
from kairos.features import VIEWS
from kairos.schema import DeadLetter, Event
from kairos.stores.catalog import CatalogItem, open_catalog
from kairos.stores.deadletters import SqliteDeadLetters
from kairos.stores.offline_log import OfflineLog
from kairos.stores.online_features import OnlineFeatures

log = logging.getLogger(__name__)

FeatureRow = tuple[str, dict[str, Any]]  # (view name, row)
T = TypeVar("T")


def with_backoff(write: Callable[[], T], what: str, first_delay_s: float = 0.1, max_delay_s: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Retry ``write`` until it succeeds, doubling the pause up to ``max_delay_s``.

    A store outage (Redis restarting, a network blip) must not kill the flow or drop rows: the
    worker waits, which holds back the source too, and carries on where it was when the store
    returns. Writes are idempotent, so a retried half-applied batch is harmless.
    """
    delay = first_delay_s
    attempt = 1
    while True:
        try:
            return write()
        except Exception as exc:  # any store error: connection refused, timeout, busy
            log.warning("%s failed (attempt %d: %s); retrying in %.1f s", what, attempt, exc, delay)
            RETRIES[what] += 1
            sleep(delay)
            delay = min(max_delay_s, delay * 2)
            attempt += 1


#: Retries per sink since the process started (exported with the flow's metrics).
RETRIES: Counter[str] = Counter()


def latest_per_key(rows: list[FeatureRow]) -> dict[str, list[dict[str, Any]]]:
    """Keep, per view and entity key, only the newest row of a batch (by ``as_of``, then arrival):
    the online store holds one row per key, so older ones in the same batch are wasted writes."""
    newest: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    for view, row in rows:
        key = (view, tuple(row[e] for e in VIEWS[view].entities))
        current = newest.get(key)
        if current is None or row["as_of"] >= current["as_of"]:
            newest[key] = row
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (view, _), row in newest.items():
        grouped[view].append(row)
    return grouped


class _OnlineFeaturePartition(StatelessSinkPartition[FeatureRow]):
    def __init__(self, settings: Settings) -> None:
        self.features = OnlineFeatures(settings, apply=False)

    def write_batch(self, items: list[FeatureRow]) -> None:
        for view, rows in latest_per_key(items).items():
            with_backoff(lambda v=view, r=rows: self.features.write(v, r), "online store write")

    def close(self) -> None:
        timing.mark("end")


class OnlineFeatureSink(DynamicSink[FeatureRow]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OnlineFeaturePartition:
        return _OnlineFeaturePartition(self.settings)


class _OfflinePartition(StatefulSinkPartition[Any, None]):
    """Buffers rows; writes a Parquet part file per ``flush_rows`` rows or ``flush_s`` seconds, and
    always before Bytewax snapshots the epoch, so nothing a snapshot counts as done is only in memory.

    The files are written by a thread of the partition's own: a flush of thousands of rows took
    the worker away from the stream for a few hundred milliseconds, a stall every reader of fresh
    features saw. ``snapshot`` and ``close`` wait until every handed-over buffer is on disk.
    """

    def __init__(self, settings: Settings, writer: str, on_close: Callable[[], None] | None = None) -> None:
        self.on_close = on_close
        self.log = OfflineLog(settings.offline_dir)
        self.writer = writer
        self.flush_rows = settings.offline_flush_rows
        self.flush_s = settings.offline_flush_s
        self.last_flush = time.monotonic()
        self.events: list[Event] = []
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.buffered = 0
        self._queue: queue.Queue[tuple[list[Event], dict[str, list[dict[str, Any]]]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_files, daemon=True, name=f"offline-{writer}")
        self._thread.start()

    def _write_files(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                events, rows = job
                if self._error is None:
                    self.log.write_events(events, self.writer)
                    for view, view_rows in rows.items():
                        self.log.write_rows(view, view_rows, self.writer)
            except BaseException as exc:  # surfaced on the worker thread at the next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the offline log failed: {self._error}") from self._error

    def write_batch(self, items: list[Any]) -> None:
        self._raise_error()
        for item in items:
            if isinstance(item, Event):
                self.events.append(item)
            else:
                view, row = item
                self.rows[view].append(row)
        self.buffered += len(items)
        if self.buffered >= self.flush_rows or time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Hand the buffer to the writing thread (returns at once)."""
        self.last_flush = time.monotonic()
        if self.buffered:
            self._queue.put((self.events, dict(self.rows)))
        self.events, self.rows, self.buffered = [], defaultdict(list), 0

    def _durable(self) -> None:
        self.flush()
        self._queue.join()
        self._raise_error()

    def snapshot(self) -> None:
        self._durable()

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()
        self._durable()
        self._queue.put(None)
        self._thread.join()
        timing.mark("end")


#: Per offline sink name, the parts built in this process: where its items can be written
#: without crossing to another process (see :meth:`OfflineLogSink.key`).
_LOCAL_PARTS: defaultdict[str, list[str]] = defaultdict(list)


class OfflineLogSink(FixedPartitionedSink[Any, None]):
    """Canonical events and feature rows to the Parquet offline log, spread over a fixed set of
    partitions.

    Where an item lands does not matter (the log is read whole, rows deduplicated by id), so the
    input is keyed with :meth:`key`: a part built in the process the item is already in. Keyed by
    event id, as before, half of all events crossed to the other process with 2 processes, pickled
    both ways — with both offline sinks that traffic cost the flow about a third of its rate.
    """

    PARTS = tuple(f"part{i}" for i in range(4))
    _INDEX = {part: i for i, part in enumerate(sorted(PARTS))}

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings, self.name = settings, name

    def list_parts(self) -> list[str]:
        return list(self.PARTS)

    def part_fn(self, item_key: str) -> int:
        # Keys are part names (from ``key``): route each to that part. Bytewax indexes into the
        # sorted set of all parts; any other key is hashed as Bytewax's default does.
        index = self._INDEX.get(item_key)
        return index if index is not None else adler32(item_key.encode())

    def key(self, fallback: str) -> str:
        """The key to give an item: a part of this sink built in this process (spread by
        ``fallback``, e.g. the event id), else ``fallback`` itself (hashed to any part)."""
        local = _LOCAL_PARTS.get(self.name)
        if not local:
            return fallback
        return local[0] if len(local) == 1 else local[adler32(fallback.encode()) % len(local)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OfflinePartition:
        partition = _OfflinePartition(self.settings, f"{self.name}-{for_part}-{int(time.time() * 1000)}",
                                      on_close=partial(_forget_part, self.name, for_part))
        _LOCAL_PARTS[self.name].append(for_part)
        return partition


def _forget_part(name: str, part: str) -> None:
    if part in _LOCAL_PARTS.get(name, ()):
        _LOCAL_PARTS[name].remove(part)


class _CatalogPartition(StatelessSinkPartition[CatalogItem]):
    def __init__(self, settings: Settings) -> None:
        self.catalog = open_catalog(settings)

    def write_batch(self, items: list[CatalogItem]) -> None:
        newest: dict[str, CatalogItem] = {}
        for item in items:
            if item.item_id not in newest or item.updated_ts >= newest[item.item_id].updated_ts:
                newest[item.item_id] = item
        with_backoff(lambda: self.catalog.upsert(list(newest.values())), "catalog write")

    def close(self) -> None:
        self.catalog.close()


class CatalogSink(DynamicSink[CatalogItem]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CatalogPartition:
        return _CatalogPartition(self.settings)


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, settings: Settings) -> None:
        self.letters = SqliteDeadLetters(settings.deadletter_path)

    def write_batch(self, items: list[DeadLetter]) -> None:
        self.letters.write(items)


class DeadLetterSink(DynamicSink[DeadLetter]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.settings)
