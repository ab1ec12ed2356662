"""The item catalog: the latest merged state of every offer, event and service.

The flow keeps it up to date from item lifecycle events; the API asks it for items near a point
that are valid at a time. Local profile: one SQLite file with a lat/lon index (a bounding-box query
pre-filters, the exact distance is computed by the caller).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kairos.geo import bounding_box
from kairos.stores.sqlite_conn import thread_connection


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
            CREATE INDEX IF NOT EXISTS items_by_updated_ts ON items (updated_ts);
            """
        )

    def _conn(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)

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

    def changed_since(self, since: float) -> list[CatalogItem]:
        """Items whose ``updated_ts`` is at or after ``since`` (every item for ``-inf``), oldest first."""
        cur = self._conn().execute(f"SELECT {', '.join(_COLUMNS)} FROM items WHERE updated_ts >= ? "
                                   "ORDER BY updated_ts, item_id", (since,))
        return [_to_item(r) for r in cur]

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


# Compare-and-set in one round trip: an older state never overwrites a newer one, even when two
# writers (or a replayed epoch) race.
_UPSERT_LUA = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(cjson.decode(current)['updated_ts']) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('GEOADD', KEYS[2], ARGV[5], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""


#: Decoded items :class:`RedisCatalog` keeps, by their stored JSON (all dropped when full).
DECODED_ITEMS_KEPT = 50_000


class RedisCatalog:
    """Item catalog on Redis (the ``redis`` profile): a hash of item JSON, a GEO set for radius
    queries (GEOSEARCH) and a set per business. Same interface as :class:`SqliteCatalog`."""

    def __init__(self, client: Any, prefix: str = "kairos:catalog") -> None:
        self.client = client
        self.prefix = prefix
        self.items_key, self.geo_key = f"{prefix}:items", f"{prefix}:geo"
        #: Item ids scored by their ``updated_ts``: what :meth:`changed_since` asks.
        self.updated_key = f"{prefix}:updated"
        self._upsert = client.register_script(_UPSERT_LUA)
        self._decoded: dict[bytes | str, CatalogItem] = {}

    def _business_key(self, business_id: str) -> str:
        return f"{self.prefix}:business:{business_id}"

    def upsert(self, items: Iterable[CatalogItem]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            values = asdict(item)
            has_point = item.lat is not None and item.lon is not None
            self._upsert(
                keys=[self.items_key, self.geo_key, self._business_key(item.business_id), self.updated_key],
                args=[item.item_id, json.dumps(values, default=str), item.updated_ts,
                      item.lat if has_point else "", item.lon if has_point else ""],
                client=pipe,
            )
        pipe.execute()

    def get(self, item_id: str) -> CatalogItem | None:
        raw = self.client.hget(self.items_key, item_id)
        return _from_json(raw) if raw else None

    def _many(self, ids: list[Any]) -> list[CatalogItem]:
        if not ids:
            return []
        # The API reads the same items for every cell around them, and most have not changed since
        # the last read: an item is decoded once per stored JSON, not once per read (the JSON is
        # the key, so a changed item is decoded afresh). Items are frozen; their attrs are read only.
        decoded = self._decoded
        out = []
        for raw in self.client.hmget(self.items_key, ids):
            if not raw:
                continue
            item = decoded.get(raw)
            if item is None:
                if len(decoded) >= DECODED_ITEMS_KEPT:
                    decoded.clear()
                item = decoded[raw] = _from_json(raw)
            out.append(item)
        return out

    def near(self, lat: float, lon: float, radius_km: float, at: datetime | None = None,
             limit: int = 2000, until: datetime | None = None) -> list[CatalogItem]:
        ids = self.client.geosearch(self.geo_key, longitude=lon, latitude=lat, radius=radius_km, unit="km",
                                    sort="ASC", count=limit * 4 if at is not None else limit)
        items = self._many(ids)
        if at is not None:
            start = at.astimezone(timezone.utc).timestamp()
            end = (until or at).astimezone(timezone.utc).timestamp()
            items = [i for i in items if not i.deleted and (i.valid_from is None or i.valid_from <= end)
                     and (i.valid_to is None or i.valid_to > start)]
        return items[:limit]

    def changed_since(self, since: float) -> list[CatalogItem]:
        """Items whose ``updated_ts`` is at or after ``since`` (every item for ``-inf``), oldest first:
        a range of the ``updated`` sorted set, so the item index's refresh costs what changed, not the
        whole catalogue."""
        with self.client.pipeline(transaction=False) as pipe:  # one round trip for the check
            indexed, items = pipe.zcard(self.updated_key).hlen(self.items_key).execute()
        if indexed < items:
            self._index_updated_ts()
        low = "-inf" if math.isinf(since) and since < 0 else since
        ids = self.client.zrangebyscore(self.updated_key, low, "+inf")
        return [item for item in self._many(ids) if item.updated_ts >= since]

    def _index_updated_ts(self) -> None:
        """Fill the ``updated`` set from the items hash: once, for a catalogue written before the
        set existed. ``GT``: a racing upsert's newer score is never lowered to the scanned one."""
        batch: dict[Any, float] = {}
        for item_id, raw in self.client.hscan_iter(self.items_key, count=1000):
            batch[item_id] = float(json.loads(raw).get("updated_ts") or 0.0)
            if len(batch) >= 1000:
                self.client.zadd(self.updated_key, batch, gt=True)
                batch = {}
        if batch:
            self.client.zadd(self.updated_key, batch, gt=True)

    def by_business(self, business_id: str) -> list[CatalogItem]:
        return self._many(sorted(self.client.smembers(self._business_key(business_id))))

    def count(self) -> int:
        return int(self.client.hlen(self.items_key))

    def close(self) -> None:
        self.client.close()


def _from_json(raw: bytes | str) -> CatalogItem:
    values = json.loads(raw)
    return CatalogItem(**{k: values.get(k) for k in _COLUMNS})


def open_catalog(settings: Any) -> SqliteCatalog | RedisCatalog:
    """The configured catalog: SQLite under KAIROS_HOME, or Redis for the ``redis`` profile."""
    if settings.profile == "redis":
        from kairos.stores.redis_conn import redis_client

        return RedisCatalog(redis_client(settings.redis_url), prefix=f"kairos:{settings.feast_project}:catalog")
    return SqliteCatalog(settings.catalog_path)
