"""The item catalog: the latest merged state of every offer, event and service.

The flow keeps it up to date from item lifecycle events; the API asks it for items near a point
that are valid at a time. Local profile: one SQLite file with a lat/lon index (a bounding-box query
pre-filters, the exact distance is computed by the caller).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kairos.geo import bounding_box


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """Merged state of one item as of ``updated_ts`` (epoch seconds of its newest lifecycle event)."""

    item_id: str
    business_id: str
    kind: str
    category: str | None
    title: str | None
    text: str | None
    lat: float | None
    lon: float | None
    cell: str | None
    price: float | None
    original_price: float | None
    currency: str | None
    valid_from: float | None  # epoch seconds
    valid_to: float | None
    deleted: bool
    updated_ts: float
    attrs: dict[str, Any] = field(default_factory=dict)

    def active_at(self, at: float) -> bool:
        if self.deleted:
            return False
        if self.valid_from is not None and at < self.valid_from:
            return False
        return not (self.valid_to is not None and at >= self.valid_to)

    @property
    def discount(self) -> float | None:
        if self.price is None or not self.original_price or self.original_price <= 0:
            return None
        return max(0.0, 1.0 - self.price / self.original_price)


_COLUMNS = [f for f in CatalogItem.__dataclass_fields__]


class SqliteCatalog:
    """Item catalog on SQLite (the embedded profile)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(
            """
            CREATE TABLE IF NOT EXISTS items (
                item_id TEXT PRIMARY KEY, business_id TEXT, kind TEXT, category TEXT, title TEXT,
                text TEXT, lat REAL, lon REAL, cell TEXT, price REAL, original_price REAL,
                currency TEXT, valid_from REAL, valid_to REAL, deleted INTEGER, updated_ts REAL,
                attrs TEXT
            );
            CREATE INDEX IF NOT EXISTS items_by_lat_lon ON items (lat, lon);
            CREATE INDEX IF NOT EXISTS items_by_business ON items (business_id);
            """
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def upsert(self, items: Iterable[CatalogItem]) -> None:
        """Insert or replace items; an older state never overwrites a newer one."""
        rows = []
        for item in items:
            values = asdict(item)
            values["attrs"] = json.dumps(item.attrs, default=str)
            values["deleted"] = int(item.deleted)
            rows.append([values[c] for c in _COLUMNS])
        if not rows:
            return
        placeholders = ", ".join("?" for _ in _COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS if c != "item_id")
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT INTO items ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT(item_id) DO UPDATE SET {updates} WHERE excluded.updated_ts >= items.updated_ts",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def get(self, item_id: str) -> CatalogItem | None:
        row = self._conn().execute(f"SELECT {', '.join(_COLUMNS)} FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return _to_item(row) if row else None

    def near(self, lat: float, lon: float, radius_km: float, at: datetime | None = None,
             limit: int = 2000, until: datetime | None = None) -> list[CatalogItem]:
        """Items inside the bounding box of the circle that are live at some moment of
        ``[at, until]`` (just at ``at`` when ``until`` is None; every state when ``at`` is None)."""
        min_lat, max_lat, min_lon, max_lon = bounding_box(lat, lon, radius_km)
        sql = (f"SELECT {', '.join(_COLUMNS)} FROM items WHERE lat BETWEEN ? AND ? AND lon BETWEEN ? AND ?")
        args: list[Any] = [min_lat, max_lat, min_lon, max_lon]
        if at is not None:
            start = at.astimezone(timezone.utc).timestamp()
            end = (until or at).astimezone(timezone.utc).timestamp()
            sql += (" AND deleted = 0 AND (valid_from IS NULL OR valid_from <= ?)"
                    " AND (valid_to IS NULL OR valid_to > ?)")
            args += [end, start]
        sql += " LIMIT ?"
        args.append(limit)
        return [_to_item(r) for r in self._conn().execute(sql, args)]

    def by_business(self, business_id: str) -> list[CatalogItem]:
        cur = self._conn().execute(f"SELECT {', '.join(_COLUMNS)} FROM items WHERE business_id = ?", (business_id,))
        return [_to_item(r) for r in cur]

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _to_item(row: tuple[Any, ...]) -> CatalogItem:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["attrs"] = json.loads(values["attrs"]) if values["attrs"] else {}
    values["deleted"] = bool(values["deleted"])
    return CatalogItem(**values)


def open_catalog(settings: Any) -> SqliteCatalog:
    return SqliteCatalog(settings.catalog_path)
