"""The event store interface and its embedded SQLite implementation.

The event store is the system of record's stand-in: documents are appended per collection and read
back in order from a *position*. For SQLite the position of a collection is the last row id read;
for MongoDB (a later adapter behind the same interface) it is a change-stream resume token. The
Bytewax source keeps a partition per collection and snapshots its position; a store that can read
a collection in disjoint shards (:attr:`SqliteEventStore.supports_shards`: rows by sequence number
modulo the shard count) lets the source split a busy collection over several partitions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

from kairos.stores.sqlite_conn import thread_connection

OPS = ("insert", "update", "replace", "delete")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One document as the event store hands it out."""

    collection: str
    position: str  # opaque, stable; unique within the collection
    op: str
    document: dict[str, Any]
    appended_at: datetime  # when the store received it (fallback event time)


class Shard(NamedTuple):
    """One of ``count`` disjoint slices of a collection: the records whose position is ``index``
    modulo ``count``."""

    index: int
    count: int


class EventStore(Protocol):
    """What the flow and the API need from an event store."""

    def append(self, collection: str, documents: Iterable[dict[str, Any]], op: str = "insert") -> list[str]:
        """Append documents to a collection; returns their positions."""
        ...

    def collections(self) -> list[str]:
        """Collections that hold at least one document."""
        ...

    def read(self, collection: str, after: str | None, limit: int) -> list[SourceRecord]:
        """Up to ``limit`` records of ``collection`` after position ``after`` (None: the start)."""
        ...

    def count(self, collection: str | None = None, after: str | None = None) -> int:
        """How many records there are (after a position), for progress bars."""
        ...

    def close(self) -> None: ...


class SqliteEventStore:
    """Append-only SQLite event log; the position is the row id.

    >>> import tempfile, pathlib
    >>> store = SqliteEventStore(pathlib.Path(tempfile.mkdtemp()) / "events.sqlite")
    >>> store.append("pings", [{"_id": "p1", "user": "u1"}])
    ['1']
    >>> [r.document["user"] for r in store.read("pings", None, 10)]
    ['u1']
    """

    #: :meth:`read` takes a :class:`Shard`: the source may split a collection over partitions.
    supports_shards: ClassVar[bool] = True

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per thread: the API appends from worker threads, the flow reads from its own.
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    collection TEXT NOT NULL,
                    op TEXT NOT NULL,
                    document TEXT NOT NULL,
                    appended_at REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS events_by_collection ON events (collection, seq);
                """
            )

    def _conn(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path, sync_normal=True)

    def append(self, collection: str, documents: Iterable[dict[str, Any]], op: str = "insert") -> list[str]:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
        if not collection:
            raise ValueError("collection name must not be empty")
        now = time.time()
        rows = [(collection, op, json.dumps(doc, default=_json_default), now) for doc in documents]
        conn = self._conn()
        # One transaction per call: a batch is appended whole or not at all.
        conn.execute("BEGIN IMMEDIATE")
        try:
            positions = []
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO events (collection, op, document, appended_at) VALUES (?, ?, ?, ?)", row
                )
                positions.append(str(cur.lastrowid))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return positions

    def collections(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT DISTINCT collection FROM events ORDER BY collection")]

    def read(self, collection: str, after: str | None, limit: int,
             shard: Shard | None = None) -> list[SourceRecord]:
        """Up to ``limit`` records of ``collection`` after ``after``; only ``shard``'s when given
        (``seq % count == index``: each record is in exactly one shard, in order within it)."""
        where, args = "collection = ? AND seq > ?", [collection, int(after or 0)]
        if shard is not None and shard.count > 1:
            if not 0 <= shard.index < shard.count:
                raise ValueError(f"shard index {shard.index} is not in 0..{shard.count - 1}")
            where += " AND seq % ? = ?"
            args += [shard.count, shard.index]
        cur = self._conn().execute(
            f"SELECT seq, op, document, appended_at FROM events WHERE {where} ORDER BY seq LIMIT ?", (*args, limit))
        return [
            SourceRecord(
                collection=collection,
                position=str(seq),
                op=op,
                document=json.loads(doc),
                appended_at=datetime.fromtimestamp(at, timezone.utc),
            )
            for seq, op, doc, at in cur
        ]

    def count(self, collection: str | None = None, after: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM events WHERE seq > ?", [int(after or 0)]
        if collection is not None:
            sql += " AND collection = ?"
            args.append(collection)
        return int(self._conn().execute(sql, args).fetchone()[0])

    def tail(self, collection: str, after: str | None, poll_interval_s: float = 0.2,
             stop: threading.Event | None = None) -> Iterator[SourceRecord]:
        """Yield records as they are appended, until ``stop`` is set."""
        position = after
        while stop is None or not stop.is_set():
            batch = self.read(collection, position, 1000)
            if batch:
                position = batch[-1].position
                yield from batch
            else:
                time.sleep(poll_interval_s)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in the event log: {value!r}")


def open_event_store(settings: Any) -> EventStore:
    """The configured event store: the embedded SQLite log, or MongoDB change streams."""
    if getattr(settings, "event_store", "sqlite") == "mongo":
        from kairos.stores.mongo_store import open_mongo_event_store

        return open_mongo_event_store(settings)
    return SqliteEventStore(settings.event_log_path)


def supports_shards(settings: Any) -> bool:
    """Whether the configured kind of store reads a collection in :class:`Shard` slices (the
    SQLite log does; a MongoDB collection is one change stream), without opening it."""
    if getattr(settings, "event_store", "sqlite") == "mongo":
        from kairos.stores.mongo_store import MongoEventStore

        return bool(getattr(MongoEventStore, "supports_shards", False))
    return SqliteEventStore.supports_shards
