"""Moderation state on SQLite under ``$KAIROS_HOME``: drafts, published items' moderation status,
user reports, the review queue, moderators' decisions, strikes, suspensions and the labelled
examples the text classifier learns from.

It is storage only: *what* to do with a report or a decision (thresholds, strikes, learning) is
decided by the moderation desk (:mod:`serving.routers.moderation`). Suggestions read two sets
from here, :meth:`ModerationStore.suppressed_item_ids` and :meth:`ModerationStore.suspended_user_ids`
(plus :meth:`ModerationStore.suspended_business_ids`), to leave out what is under review,
removed or from a suspended account.

>>> import tempfile, pathlib
>>> store = ModerationStore(pathlib.Path(tempfile.mkdtemp()) / "moderation.sqlite")
>>> store.set_item_status("it-1", "b1", "review", reason="3 reports", ts=0.0)
>>> store.suppressed_item_ids()
{'it-1'}
>>> store.suspend("user", "u9", "harassment", ts=0.0)
>>> store.suspended_user_ids()
{'u9'}
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kairos.stores.sqlite_conn import thread_connection

DRAFT_STATUSES = ("pending_review", "approved", "rejected", "published")
ITEM_STATUSES = ("live", "review", "removed")
REPORT_STATUSES = ("open", "upheld", "dismissed")
QUEUE_TARGETS = ("draft", "item", "user")
ACTOR_TYPES = ("user", "business")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drafts (
    draft_id TEXT PRIMARY KEY,
    business_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    created_ts REAL NOT NULL,
    status TEXT NOT NULL,
    verdict TEXT NOT NULL,
    findings TEXT NOT NULL,
    document TEXT NOT NULL,
    summary TEXT NOT NULL,
    vector BLOB,
    text_vector BLOB,
    published_ts REAL,
    position TEXT
);
CREATE INDEX IF NOT EXISTS drafts_by_business ON drafts (business_id, created_ts);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    business_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    updated_ts REAL NOT NULL,
    draft_id TEXT,
    collection TEXT,
    category TEXT,
    kind TEXT,
    price REAL,
    original_price REAL,
    sku TEXT,
    text TEXT,
    vector BLOB,
    text_vector BLOB,
    published_ts REAL,
    valid_from REAL,
    valid_to REAL,
    starts_at REAL,
    free_words INTEGER,
    settled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_by_business ON items (business_id);
CREATE TABLE IF NOT EXISTS reports (
    report_id TEXT PRIMARY KEY,
    reporter_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT,
    ts REAL NOT NULL,
    status TEXT NOT NULL,
    UNIQUE (reporter_id, target_type, target_id)
);
CREATE INDEX IF NOT EXISTS reports_by_target ON reports (target_type, target_id, ts);
CREATE TABLE IF NOT EXISTS queue (
    queue_id TEXT PRIMARY KEY,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    business_id TEXT,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    opened_ts REAL NOT NULL,
    status TEXT NOT NULL,
    closed_ts REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_entry_per_target ON queue (target_type, target_id)
    WHERE status = 'open';
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    queue_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    action TEXT NOT NULL,
    label TEXT,
    moderator TEXT NOT NULL,
    note TEXT,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS strikes (
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    ts REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS strikes_by_actor ON strikes (actor_type, actor_id, ts);
CREATE TABLE IF NOT EXISTS suspensions (
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    since_ts REAL NOT NULL,
    until_ts REAL,
    PRIMARY KEY (actor_type, actor_id)
);
CREATE TABLE IF NOT EXISTS examples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    label TEXT NOT NULL,
    weight REAL NOT NULL,
    source TEXT NOT NULL,
    vector BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class DraftRecord:
    draft_id: str
    business_id: str
    item_id: str
    collection: str
    created_ts: float
    status: str
    verdict: str
    findings: list[dict[str, Any]]
    document: dict[str, Any]
    summary: dict[str, Any]
    vector: np.ndarray | None
    published_ts: float | None
    position: str | None
    text_vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    item_id: str
    business_id: str
    status: str
    reason: str | None
    updated_ts: float
    draft_id: str | None = None
    collection: str | None = None
    category: str | None = None
    kind: str | None = None
    price: float | None = None
    original_price: float | None = None
    sku: str | None = None
    text: str | None = None
    vector: np.ndarray | None = None
    text_vector: np.ndarray | None = None
    published_ts: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    starts_at: float | None = None
    free_words: int = 0


@dataclass(frozen=True, slots=True)
class ReportRecord:
    report_id: str
    reporter_id: str
    target_type: str
    target_id: str
    reason: str
    details: str | None
    ts: float
    status: str


@dataclass(frozen=True, slots=True)
class QueueEntry:
    queue_id: str
    target_type: str
    target_id: str
    business_id: str | None
    reason: str
    source: str
    opened_ts: float
    status: str
    closed_ts: float | None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    decision_id: str
    queue_id: str
    target_type: str
    target_id: str
    action: str
    label: str | None
    moderator: str
    note: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class Suspension:
    actor_type: str
    actor_id: str
    reason: str
    since_ts: float
    until_ts: float | None

    def active_at(self, ts: float) -> bool:
        return self.since_ts <= ts and (self.until_ts is None or ts < self.until_ts)


class DuplicateReport(Exception):
    """The reporter already reported this target."""


class ModerationStore:
    """SQLite moderation state (the embedded profile); one connection per thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path, sync_normal=True)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested use joins the outer one."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---- drafts ----

    def save_draft(self, record: DraftRecord) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO drafts (draft_id, business_id, item_id, collection, created_ts, status, verdict, "
                "findings, document, summary, vector, text_vector, published_ts, position) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.draft_id, record.business_id, record.item_id, record.collection, record.created_ts,
                 record.status, record.verdict, json.dumps(record.findings), json.dumps(record.document),
                 json.dumps(record.summary, default=str), _blob(record.vector), _blob(record.text_vector),
                 record.published_ts, record.position),
            )

    def get_draft(self, draft_id: str) -> DraftRecord | None:
        row = self._conn().execute(f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE draft_id = ?", (draft_id,)).fetchone()
        return _draft(row) if row else None

    def set_draft_status(self, draft_id: str, status: str, *, published_ts: float | None = None,
                         position: str | None = None) -> None:
        if status not in DRAFT_STATUSES:
            raise ValueError(f"unknown draft status {status!r}")
        with self.transaction() as conn:
            conn.execute(
                "UPDATE drafts SET status = ?, published_ts = COALESCE(?, published_ts), "
                "position = COALESCE(?, position) WHERE draft_id = ?",
                (status, published_ts, position, draft_id),
            )

    def claim_draft(self, draft_id: str, expected: str, status: str, ts: float | None = None) -> bool:
        """Move a draft from ``expected`` to ``status`` atomically; False when it was not in
        ``expected`` (someone else got there first). Publishing claims before appending, so two
        concurrent publishes of one draft append it once."""
        if status not in DRAFT_STATUSES:
            raise ValueError(f"unknown draft status {status!r}")
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE drafts SET status = ?, published_ts = COALESCE(?, published_ts) "
                "WHERE draft_id = ? AND status = ?",
                (status, ts, draft_id, expected),
            )
            return cur.rowcount == 1

    def drafts_of(self, business_id: str, limit: int = 200) -> list[DraftRecord]:
        cur = self._conn().execute(
            f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE business_id = ? ORDER BY created_ts DESC LIMIT ?",
            (business_id, limit),
        )
        return [_draft(r) for r in cur]

    # ---- items ----

    def upsert_item(self, item: ItemRecord) -> None:
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO items ({_ITEM_COLUMNS}) VALUES ({', '.join('?' * len(_ITEM_FIELDS))}) "
                f"ON CONFLICT(item_id) DO UPDATE SET "
                + ", ".join(f"{c} = COALESCE(excluded.{c}, items.{c})" for c in _ITEM_FIELDS if c != "item_id"),
                _item_values(item),
            )

    def set_item_status(self, item_id: str, business_id: str, status: str, *, reason: str | None,
                        ts: float) -> None:
        """Set an item's moderation status, creating the row for items published elsewhere."""
        if status not in ITEM_STATUSES:
            raise ValueError(f"unknown item status {status!r}")
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO items (item_id, business_id, status, reason, updated_ts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(item_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, "
                "updated_ts = excluded.updated_ts",
                (item_id, business_id, status, reason, ts),
            )

    def get_item(self, item_id: str) -> ItemRecord | None:
        row = self._conn().execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def items_of(self, business_id: str) -> list[ItemRecord]:
        cur = self._conn().execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE business_id = ?", (business_id,))
        return [_item(r) for r in cur]

    def published_items(self, since_ts: float, limit: int = 20_000) -> list[ItemRecord]:
        """Items published through Kairos since ``since_ts`` that carry an embedding, newest last."""
        cur = self._conn().execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE vector IS NOT NULL AND published_ts >= ? "
            "ORDER BY published_ts DESC LIMIT ?",
            (since_ts, limit),
        )
        return list(reversed([_item(r) for r in cur]))

    def unsettled_items(self, published_before: float, limit: int = 500) -> list[ItemRecord]:
        """Live Kairos-published items older than ``published_before`` whose outcome has not been
        learned yet (see :meth:`mark_settled`)."""
        cur = self._conn().execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE settled = 0 AND published_ts IS NOT NULL "
            "AND published_ts < ? ORDER BY published_ts LIMIT ?",
            (published_before, limit),
        )
        return [_item(r) for r in cur]

    def mark_settled(self, item_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE items SET settled = 1 WHERE item_id = ?", (item_id,))

    # ---- reports ----

    def add_report(self, reporter_id: str, target_type: str, target_id: str, reason: str,
                   details: str | None, ts: float) -> ReportRecord:
        report = ReportRecord(f"rp-{uuid.uuid4().hex[:16]}", reporter_id, target_type, target_id, reason,
                              details, ts, "open")
        try:
            with self.transaction() as conn:
                conn.execute(
                    "INSERT INTO reports (report_id, reporter_id, target_type, target_id, reason, details, ts, status) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (report.report_id, reporter_id, target_type, target_id, reason, details, ts, "open"),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateReport(f"{reporter_id} already reported {target_type} {target_id}") from exc
        return report

    def reports_on(self, target_type: str, target_id: str, since_ts: float | None = None,
                   status: str | None = None) -> list[ReportRecord]:
        sql = f"SELECT {_REPORT_COLUMNS} FROM reports WHERE target_type = ? AND target_id = ?"
        args: list[Any] = [target_type, target_id]
        if since_ts is not None:
            sql += " AND ts >= ?"
            args.append(since_ts)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        return [ReportRecord(*r) for r in self._conn().execute(sql + " ORDER BY ts", args)]

    def resolve_reports(self, target_type: str, target_id: str, status: str) -> int:
        if status not in REPORT_STATUSES:
            raise ValueError(f"unknown report status {status!r}")
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE reports SET status = ? WHERE target_type = ? AND target_id = ? AND status = 'open'",
                (status, target_type, target_id),
            )
            return cur.rowcount

    # ---- queue ----

    def open_entry(self, target_type: str, target_id: str, reason: str, source: str, ts: float,
                   business_id: str | None = None) -> tuple[QueueEntry, bool]:
        """(the open entry for the target, whether it was created now). One open entry per target."""
        if target_type not in QUEUE_TARGETS:
            raise ValueError(f"unknown queue target type {target_type!r}")
        with self.transaction() as conn:
            existing = conn.execute(
                f"SELECT {_QUEUE_COLUMNS} FROM queue WHERE target_type = ? AND target_id = ? AND status = 'open'",
                (target_type, target_id),
            ).fetchone()
            if existing:
                return QueueEntry(*existing), False
            entry = QueueEntry(f"q-{uuid.uuid4().hex[:16]}", target_type, target_id, business_id, reason, source,
                               ts, "open", None)
            conn.execute(
                f"INSERT INTO queue ({_QUEUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.queue_id, target_type, target_id, business_id, reason, source, ts, "open", None),
            )
            return entry, True

    def get_entry(self, queue_id: str) -> QueueEntry | None:
        row = self._conn().execute(f"SELECT {_QUEUE_COLUMNS} FROM queue WHERE queue_id = ?", (queue_id,)).fetchone()
        return QueueEntry(*row) if row else None

    def open_entry_for(self, target_type: str, target_id: str) -> QueueEntry | None:
        row = self._conn().execute(
            f"SELECT {_QUEUE_COLUMNS} FROM queue WHERE target_type = ? AND target_id = ? AND status = 'open'",
            (target_type, target_id),
        ).fetchone()
        return QueueEntry(*row) if row else None

    def queue(self, status: str = "open", target_type: str | None = None, limit: int = 50,
              offset: int = 0) -> list[QueueEntry]:
        sql = f"SELECT {_QUEUE_COLUMNS} FROM queue WHERE status = ?"
        args: list[Any] = [status]
        if target_type is not None:
            sql += " AND target_type = ?"
            args.append(target_type)
        sql += " ORDER BY opened_ts, queue_id LIMIT ? OFFSET ?"
        args += [limit, offset]
        return [QueueEntry(*r) for r in self._conn().execute(sql, args)]

    def close_entry(self, queue_id: str, ts: float) -> bool:
        """Close an open entry; False when it was not open (someone decided first)."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE queue SET status = 'closed', closed_ts = ? WHERE queue_id = ? AND status = 'open'",
                               (ts, queue_id))
            return cur.rowcount == 1

    # ---- decisions ----

    def add_decision(self, entry: QueueEntry, action: str, label: str | None, moderator: str,
                     note: str | None, ts: float) -> DecisionRecord:
        decision = DecisionRecord(f"dc-{uuid.uuid4().hex[:16]}", entry.queue_id, entry.target_type,
                                  entry.target_id, action, label, moderator, note, ts)
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (decision.decision_id, decision.queue_id, decision.target_type, decision.target_id, action, label,
                 moderator, note, ts),
            )
        return decision

    def decisions(self, limit: int = 50, target_type: str | None = None,
                  target_id: str | None = None) -> list[DecisionRecord]:
        sql = f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE 1 = 1"
        args: list[Any] = []
        if target_type is not None:
            sql += " AND target_type = ?"
            args.append(target_type)
        if target_id is not None:
            sql += " AND target_id = ?"
            args.append(target_id)
        sql += " ORDER BY ts DESC, decision_id LIMIT ?"
        args.append(limit)
        return [DecisionRecord(*r) for r in self._conn().execute(sql, args)]

    # ---- strikes and suspensions ----

    def add_strike(self, actor_type: str, actor_id: str, reason: str, ts: float) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO strikes (actor_type, actor_id, ts, reason) VALUES (?, ?, ?, ?)",
                         (actor_type, actor_id, ts, reason))

    def strikes(self, actor_type: str, actor_id: str, since_ts: float) -> int:
        row = self._conn().execute(
            "SELECT COUNT(*) FROM strikes WHERE actor_type = ? AND actor_id = ? AND ts >= ?",
            (actor_type, actor_id, since_ts),
        ).fetchone()
        return int(row[0])

    def suspend(self, actor_type: str, actor_id: str, reason: str, ts: float, until_ts: float | None = None) -> None:
        if actor_type not in ACTOR_TYPES:
            raise ValueError(f"unknown actor type {actor_type!r}")
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO suspensions (actor_type, actor_id, reason, since_ts, until_ts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(actor_type, actor_id) DO UPDATE SET reason = excluded.reason, "
                "since_ts = excluded.since_ts, until_ts = excluded.until_ts",
                (actor_type, actor_id, reason, ts, until_ts),
            )

    def reinstate(self, actor_type: str, actor_id: str) -> bool:
        with self.transaction() as conn:
            cur = conn.execute("DELETE FROM suspensions WHERE actor_type = ? AND actor_id = ?", (actor_type, actor_id))
            return cur.rowcount == 1

    def suspension(self, actor_type: str, actor_id: str, at: float | None = None) -> Suspension | None:
        row = self._conn().execute(
            "SELECT actor_type, actor_id, reason, since_ts, until_ts FROM suspensions "
            "WHERE actor_type = ? AND actor_id = ?",
            (actor_type, actor_id),
        ).fetchone()
        if not row:
            return None
        suspension = Suspension(*row)
        return suspension if at is None or suspension.active_at(at) else None

    def suspensions(self, at: float | None = None) -> list[Suspension]:
        rows = self._conn().execute(
            "SELECT actor_type, actor_id, reason, since_ts, until_ts FROM suspensions ORDER BY since_ts"
        ).fetchall()
        found = [Suspension(*r) for r in rows]
        return [s for s in found if at is None or s.active_at(at)]

    # ---- what suggestions must leave out ----

    def suppressed_item_ids(self, at: float | None = None) -> set[str]:
        """Items under review or removed, and Kairos-published items of suspended businesses.

        Items of suspended businesses that were published elsewhere (straight into MongoDB) are
        not known here: filter those by :meth:`suspended_business_ids`.
        """
        now = at if at is not None else time.time()
        rows = self._conn().execute(
            "SELECT item_id FROM items WHERE status IN ('review', 'removed') "
            "UNION SELECT i.item_id FROM items i JOIN suspensions s "
            "ON s.actor_type = 'business' AND s.actor_id = i.business_id "
            "AND s.since_ts <= ? AND (s.until_ts IS NULL OR s.until_ts > ?)",
            (now, now),
        ).fetchall()
        return {r[0] for r in rows}

    def suspended_user_ids(self, at: float | None = None) -> set[str]:
        return {s.actor_id for s in self._active(at) if s.actor_type == "user"}

    def suspended_business_ids(self, at: float | None = None) -> set[str]:
        return {s.actor_id for s in self._active(at) if s.actor_type == "business"}

    def _active(self, at: float | None) -> list[Suspension]:
        return self.suspensions(at if at is not None else time.time())

    # ---- classifier examples ----

    def add_example(self, vector: np.ndarray, label: str, weight: float, source: str, ts: float) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO examples (ts, label, weight, source, vector) VALUES (?, ?, ?, ?, ?)",
                         (ts, label, weight, source, _blob(vector)))

    def examples(self) -> Iterator[tuple[np.ndarray, str, float, str]]:
        """Every labelled example in the order it was learned: replaying them rebuilds the classifier."""
        cur = self._conn().execute("SELECT vector, label, weight, source FROM examples ORDER BY seq")
        for vector, label, weight, source in cur:
            yield _vector(vector), label, float(weight), source

    def count_examples(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM examples").fetchone()[0])


_DRAFT_COLUMNS = ("draft_id, business_id, item_id, collection, created_ts, status, verdict, findings, document, "
                  "summary, vector, published_ts, position, text_vector")
_ITEM_FIELDS = ("item_id", "business_id", "status", "reason", "updated_ts", "draft_id", "collection", "category",
                "kind", "price", "original_price", "sku", "text", "vector", "text_vector", "published_ts",
                "valid_from", "valid_to", "starts_at", "free_words")
_ITEM_COLUMNS = ", ".join(_ITEM_FIELDS)
_REPORT_COLUMNS = "report_id, reporter_id, target_type, target_id, reason, details, ts, status"
_QUEUE_COLUMNS = "queue_id, target_type, target_id, business_id, reason, source, opened_ts, status, closed_ts"
_DECISION_COLUMNS = "decision_id, queue_id, target_type, target_id, action, label, moderator, note, ts"


def _blob(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def _vector(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


def _draft(row: tuple[Any, ...]) -> DraftRecord:
    (draft_id, business_id, item_id, collection, created_ts, status, verdict, findings, document, summary,
     vector, published_ts, position, text_vector) = row
    return DraftRecord(draft_id, business_id, item_id, collection, created_ts, status, verdict, json.loads(findings),
                       json.loads(document), json.loads(summary), _vector(vector), published_ts, position,
                       _vector(text_vector))


def _item_values(item: ItemRecord) -> list[Any]:
    values = []
    for name in _ITEM_FIELDS:
        value = getattr(item, name)
        values.append(_blob(value) if name in ("vector", "text_vector") else value)
    return values


def _item(row: tuple[Any, ...]) -> ItemRecord:
    values = dict(zip(_ITEM_FIELDS, row, strict=True))
    values["vector"] = _vector(values["vector"])
    values["text_vector"] = _vector(values["text_vector"])
    values["free_words"] = int(values["free_words"] or 0)
    return ItemRecord(**values)


def open_moderation_store(settings: Any) -> ModerationStore:
    """The moderation store under ``settings.home`` (``moderation_path`` once config has it)."""
    path = getattr(settings, "moderation_path", None) or Path(settings.home) / "moderation.sqlite"
    return ModerationStore(path)


__all__ = [
    "DecisionRecord",
    "DraftRecord",
    "DuplicateReport",
    "ItemRecord",
    "ModerationStore",
    "QueueEntry",
    "ReportRecord",
    "Suspension",
    "open_moderation_store",
]
