"""The dead-letter log: every document the flow could not decode, whole, with the reason."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kairos.schema import DeadLetter


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
                collection TEXT NOT NULL, position TEXT NOT NULL, source_id TEXT,
                reason TEXT NOT NULL, document TEXT NOT NULL, received_at TEXT NOT NULL,
                UNIQUE (collection, position)
            );
            """
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def write(self, letters: Iterable[DeadLetter]) -> None:
        rows = [(d.collection, d.position, d.source_id, d.reason, d.document, d.received_at.isoformat())
                for d in letters]
        if rows:
            self._conn().executemany(
                "INSERT OR IGNORE INTO deadletters (collection, position, source_id, reason, document, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", rows)

    def list(self, collection: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql, args = "SELECT collection, position, source_id, reason, document, received_at FROM deadletters", []
        if collection:
            sql += " WHERE collection = ?"
            args.append(collection)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        keys = ("collection", "position", "source_id", "reason", "document", "received_at")
        return [dict(zip(keys, r, strict=True)) for r in self._conn().execute(sql, args)]

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM deadletters").fetchone()[0])

    def counts_by_collection(self) -> dict[str, int]:
        cur = self._conn().execute("SELECT collection, COUNT(*) FROM deadletters GROUP BY collection")
        return {c: int(n) for c, n in cur}
