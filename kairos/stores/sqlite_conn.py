"""One SQLite connection per thread, opened the way every embedded Kairos store opens it.

SQLite connections must not cross threads, and the API, the flow's sinks and background writers
all touch the same files; WAL lets readers run beside one writer.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


def thread_connection(local: threading.local, path: Path | str, *, sync_normal: bool = False) -> sqlite3.Connection:
    """The calling thread's connection to ``path`` (kept in ``local.conn``), opened on first use.

    Autocommit (``isolation_level=None``: stores open their own transactions), a 30 s busy timeout,
    WAL. ``sync_normal`` trades the fsync per commit for durability across process crashes only
    (not power loss): right for logs that a flood of writes must not slow down.
    """
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        if sync_normal:
            conn.execute("PRAGMA synchronous=NORMAL")
        local.conn = conn
    return conn
