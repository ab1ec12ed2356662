"""The dead-letter log: every document the flow could not decode, whole, with the reason.

Dead letters are ``open`` until replayed: after a mapping is fixed, ``kairos deadletters replay``
decodes them again and sends those that now decode back through the flow (see
:mod:`kairos.replay`); they are then marked ``replayed`` so they never enter twice.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kairos.schema import DeadLetter
from kairos.stores.sqlite_conn import thread_connection

_KEYS = ("id", "collection", "position", "op", "source_id", "reason", "document", "received_at", "status")


class SqliteDeadLetters:
    """Dead letters on SQLite. ``(collection, position)`` is unique, so a replayed write is a no-op."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(
            """
            CREATE TABLE IF NOT EXISTS deadletters (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                collection TEXT NOT NULL, position TEXT NOT NULL, op TEXT NOT NULL DEFAULT 'insert',
                source_id TEXT,
                reason TEXT NOT NULL, document TEXT NOT NULL, received_at TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'open', replayed_at TEXT,
                UNIQUE (collection, position)
            );
            CREATE INDEX IF NOT EXISTS deadletters_by_status ON deadletters (status, collection);
            """
        )

    def _conn(self) -> sqlite3.Connection:
        # As the event log: WAL with NORMAL sync survives a process crash; an fsync per commit
        # made a flood of bad documents slow the good ones down.
        return thread_connection(self._local, self.path, sync_normal=True)

    def write(self, letters: Iterable[DeadLetter]) -> None:
        rows = [(d.collection, d.position, d.op, d.source_id, d.reason, d.document, d.received_at.isoformat())
                for d in letters]
        if not rows:
            return
        conn = self._conn()
        # One transaction per batch: a flood of bad documents must cost one commit, not one per row.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO deadletters (collection, position, op, source_id, reason, document,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def list(self, collection: str | None = None, limit: int = 100, status: str | None = None,
             after_id: int = 0) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_KEYS)} FROM deadletters WHERE id > ?"
        args: list[Any] = [after_id]
        if collection:
            sql += " AND collection = ?"
            args.append(collection)
        if status:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [dict(zip(_KEYS, r, strict=True)) for r in self._conn().execute(sql, args)]

    def mark_replayed(self, ids: Iterable[int]) -> None:
        now = datetime.now(timezone.utc).isoformat()
        self._conn().executemany("UPDATE deadletters SET status = 'replayed', replayed_at = ? WHERE id = ?",
                                 [(now, i) for i in ids])

    def update_reason(self, letter_id: int, reason: str) -> None:
        self._conn().execute("UPDATE deadletters SET reason = ? WHERE id = ?", (reason, letter_id))

    def count(self, status: str | None = None) -> int:
        if status:
            return int(self._conn().execute("SELECT COUNT(*) FROM deadletters WHERE status = ?",
                                            (status,)).fetchone()[0])
        return int(self._conn().execute("SELECT COUNT(*) FROM deadletters").fetchone()[0])

    def counts_by_collection(self, status: str | None = None) -> dict[str, int]:
        sql, args = "SELECT collection, COUNT(*) FROM deadletters", []
        if status:
            sql += " WHERE status = ?"
            args.append(status)
        cur = self._conn().execute(sql + " GROUP BY collection", args)
        return {c: int(n) for c, n in cur}

    def counts(self) -> list[tuple[str, str, int]]:
        """(collection, status, count) rows, for metrics."""
        cur = self._conn().execute("SELECT collection, status, COUNT(*) FROM deadletters GROUP BY collection, status")
        return [(c, s, int(n)) for c, s, n in cur]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
