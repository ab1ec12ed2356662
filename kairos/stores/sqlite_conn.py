"""One SQLite connection per thread, opened the way every embedded Kairos store opens it.

SQLite connections must not cross threads, and the API, the flow's sinks and background writers
all touch the same files; WAL lets readers run beside one writer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

_BUSY_TIMEOUT_S = 30.0


def _set_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked"
    # at once instead of waiting on the busy timeout when another connection holds one (two flow
    # workers creating the same catalog file did): wait for it here.
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def thread_connection(local: threading.local, path: Path | str, *, sync_normal: bool = False) -> sqlite3.Connection:
    """The calling thread's connection to ``path`` (kept in ``local.conn``), opened on first use.

    Autocommit (``isolation_level=None``: stores open their own transactions), a 30 s busy timeout,
    WAL. ``sync_normal`` trades the fsync per commit for durability across process crashes only
    (not power loss): right for logs that a flood of writes must not slow down.
    """
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        _set_wal(conn)
        if sync_normal:
            conn.execute("PRAGMA synchronous=NORMAL")
        local.conn = conn
    return conn
