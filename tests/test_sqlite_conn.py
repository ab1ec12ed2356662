"""Threads opening one new SQLite file at once all get a WAL connection (none sees "locked")."""

from __future__ import annotations

import threading
from pathlib import Path

from kairos.stores.sqlite_conn import thread_connection


def open_concurrently(path: Path, n: int) -> tuple[list[str], list[BaseException]]:
    local, start = threading.local(), threading.Barrier(n)
    modes: list[str] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            conn = thread_connection(local, path)
            conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
            modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
        except BaseException as error:  # noqa: BLE001 - the test reports any failure
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return modes, errors


def test_concurrent_first_opens_of_a_new_file_all_succeed(tmp_path) -> None:
    for attempt in range(60):
        modes, errors = open_concurrently(tmp_path / f"store{attempt}.sqlite", 8)
        assert not errors, errors
        assert modes == ["wal"] * 8
