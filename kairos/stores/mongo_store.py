"""MongoDB behind the event-store interface: a snapshot (backfill), then change streams.

Each collection is read in two phases, and the *position* handed to the flow (the Bytewax
partition snapshot) says which:

``{"phase": "snapshot", "last_id": <_id>, "until_id": <_id>, "token": <resume token>}``
    Backfill: documents are read in ``_id`` order after ``last_id``, up to ``until_id`` (the
    largest ``_id`` when the snapshot began). ``token`` is a change-stream resume token taken
    *before* the snapshot started, so nothing written between the snapshot and the stream is lost.

``{"phase": "stream", "token": <resume token>, "invalidated": false}``
    Live: the collection's change stream, resumed after ``token`` (with ``startAfter`` when the
    token is an ``invalidate`` event: a dropped or renamed collection).

Positions are canonical extended JSON, so ``ObjectId`` and other ``_id`` types survive the trip.

Documents come out JSON-like (:func:`to_json_like`): ``ObjectId`` → text, ``Decimal128`` → float,
datetimes → aware UTC datetimes. An insert or replace carries the full document, an update the
document as it is now (``updateLookup``), a delete only its ``documentKey`` (``_id``, and the
shard key on a sharded collection). ``appended_at`` is the change's cluster time; for snapshot
documents the ``ObjectId``'s creation time when the ``_id`` is one, else the time of reading.

Change streams need a replica set (one node is enough) or a sharded cluster; the constructor
checks with ``hello`` and raises :class:`MongoNotReplicaSetError` on a standalone server.

Delivery is at least once at the seam between snapshot and stream: a document inserted while the
snapshot runs, whose ``_id`` sorts below ``until_id`` (client-chosen or random ids), may be read
by the snapshot and again as an insert from the stream. Monotonic ids (``ObjectId`` from the
driver) land above ``until_id`` and come from the stream only.

Example (a backfill only, on an in-memory stand-in for MongoDB)::

    >>> import mongomock
    >>> client = mongomock.MongoClient(tz_aware=True)
    >>> _ = client.shop.offers.insert_many([{"_id": 1, "title": "2 for 1"}, {"_id": 2, "title": "spa"}])
    >>> store = MongoEventStore(client, "shop", snapshot_only=True)
    >>> [(r.op, r.document["title"]) for r in store.read("offers", None, 10)]
    [('insert', '2 for 1'), ('insert', 'spa')]
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from bson import DBRef, Decimal128, ObjectId, Timestamp, json_util
from bson.binary import Binary
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.regex import Regex

from kairos.stores.event_store import OPS, SourceRecord

log = logging.getLogger(__name__)

#: Server error codes meaning the resume point is gone from the oplog (ChangeStreamFatalError,
#: ChangeStreamHistoryLost) or the token cannot be used (InvalidResumeToken).
HISTORY_LOST_CODES = frozenset({280, 286})
INVALID_TOKEN_CODE = 260
#: BSON comparison order of the ``_id`` types a snapshot walks through. A range query on ``_id``
#: only matches values of its own type ("type bracketing"), so a collection mixing, say, string
#: and ObjectId ids is read one type after another, each with an index range scan.
ID_TYPE_ORDER = ("number", "string", "object", "binData", "objectId", "bool", "date")
#: Change types that are not document changes: consumed (their token moves the position on)
#: but turned into no record.
DDL_EVENTS = frozenset({"drop", "rename", "dropDatabase", "create", "createIndexes", "dropIndexes",
                        "modify", "shardCollection", "refineCollectionShardKey", "reshardCollection"})

_NO_ID = object()  # "no _id read yet": None is a legal (if odd) _id


class MongoNotReplicaSetError(RuntimeError):
    """The MongoDB deployment cannot serve change streams (a standalone server)."""


class MongoResumeError(RuntimeError):
    """A stored position cannot be resumed (its history left the oplog, or it is malformed)."""


def check_replica_set(hello: Mapping[str, Any], where: str = "the configured MongoDB") -> None:
    """Raise :class:`MongoNotReplicaSetError` unless ``hello`` describes a replica-set member or a
    ``mongos`` (``msg: "isdbgrid"``)."""
    if hello.get("setName") or hello.get("msg") == "isdbgrid":
        return
    raise MongoNotReplicaSetError(
        f"MongoDB at {where} is a standalone server, but Kairos reads MongoDB through change streams, "
        "which need a replica set (or a sharded cluster). One node is enough: start it with "
        "`mongod --replSet rs0 --bind_ip_all`, initiate it once with "
        "`mongosh --eval 'rs.initiate({_id: \"rs0\", members: [{_id: 0, host: \"localhost:27017\"}]})'`, "
        "and connect with mongodb://localhost:27017/?replicaSet=rs0 "
        "(infra/docker-compose.yml starts one this way)."
    )


# --------------------------------------------------------------------------------------------
# Documents and positions
# --------------------------------------------------------------------------------------------


def to_json_like(value: Any) -> Any:
    """A JSON-like copy of a BSON value: ObjectId → text, Decimal128 → float, datetimes → aware
    UTC, Timestamp → its UTC datetime, UUID/binary → text; dicts and lists recursively.

    >>> from bson import Decimal128, ObjectId
    >>> to_json_like({"_id": ObjectId("64f000000000000000000001"), "price": Decimal128("9.50")})
    {'_id': '64f000000000000000000001', 'price': 9.5}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # Int64 → int
    if isinstance(value, float):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_json_like(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_like(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return _finite_or_none(float(value.to_decimal()))
    if isinstance(value, Decimal):
        return _finite_or_none(float(value))
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, Timestamp):
        return value.as_datetime()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Binary):
        if value.subtype in (3, 4) and len(value) == 16:
            return str(value.as_uuid(value.subtype))
        return bytes(value).hex()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, DBRef):
        return to_json_like(value.id)
    if isinstance(value, Regex):
        return value.pattern
    return str(value)  # MinKey, MaxKey, Code, ...: kept readable rather than dropped


def _finite_or_none(number: float) -> float | None:
    # NaN and infinities are not JSON; the decoder treats a missing price as missing.
    return number if math.isfinite(number) else None


def _dumps(position: dict[str, Any]) -> str:
    return json_util.dumps(position, json_options=CANONICAL_JSON_OPTIONS, separators=(",", ":"))


def snapshot_position(last_id: Any, until_id: Any, token: Mapping[str, Any]) -> str:
    return _dumps({"phase": "snapshot", "last_id": last_id, "until_id": until_id, "token": dict(token)})


def stream_position(token: Mapping[str, Any], invalidated: bool = False) -> str:
    return _dumps({"phase": "stream", "token": dict(token), "invalidated": bool(invalidated)})


def parse_position(position: str) -> dict[str, Any]:
    """The fields of a position written by this module; ``ValueError`` naming what is wrong."""
    try:
        data = json_util.loads(position, json_options=CANONICAL_JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        data = exc
    if not isinstance(data, dict) or data.get("phase") not in ("snapshot", "stream"):
        raise ValueError(
            f"{position[:80]!r} is not a MongoDB event-store position (is the recovery directory from "
            "another event store? Remove it to start over from a fresh snapshot)"
        )
    if not isinstance(data.get("token"), dict):
        raise ValueError(f"position {position[:80]!r} has no resume token")
    if data["phase"] == "snapshot" and ("last_id" not in data or "until_id" not in data):
        raise ValueError(f"snapshot position {position[:80]!r} lacks last_id or until_id")
    return data


def id_type(value: Any) -> str | None:
    """The ``$type`` alias of an ``_id`` among :data:`ID_TYPE_ORDER` (None for exotic types)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal128)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (bytes, uuid.UUID)):
        return "binData"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, datetime):
        return "date"
    return None


def snapshot_filters(last_id: Any, until_id: Any) -> Iterator[dict[str, Any]]:
    """Queries that together select ``last_id < _id <= until_id`` in BSON order, one per ``_id``
    type, in that order (``last_id`` may be the "nothing read yet" sentinel)."""
    low = id_type(last_id) if last_id is not _NO_ID else ID_TYPE_ORDER[0]
    high = id_type(until_id)
    if low is None or high is None:  # exotic _id types: one type-bracketed range, as Mongo reads it
        bounds = {"$lte": until_id} if last_id is _NO_ID else {"$gt": last_id, "$lte": until_id}
        yield {"_id": bounds}
        return
    first, last = ID_TYPE_ORDER.index(low), ID_TYPE_ORDER.index(high)
    for index in range(first, last + 1):
        bounds: dict[str, Any] = {}
        if index == first and last_id is not _NO_ID:
            bounds["$gt"] = last_id
        if index == last:
            bounds["$lte"] = until_id
        yield {"_id": bounds or {"$type": ID_TYPE_ORDER[index]}}


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


@dataclass
class _Reader:
    """Where the reading of one collection stands, kept between ``read`` calls."""

    handed_out: str | None  # the position the flow holds: a read with it continues from here
    phase: str
    token: dict[str, Any]
    invalidated: bool = False
    last_id: Any = _NO_ID
    until_id: Any = _NO_ID
    stream: Any = None

    def close_stream(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except Exception:  # noqa: BLE001 - a dead cursor is closed either way
                log.debug("closing a change stream failed", exc_info=True)
            self.stream = None


class MongoEventStore:
    """The event store on MongoDB: per collection, a snapshot of the documents, then its change
    stream. ``client`` is a ``pymongo.MongoClient`` (``tz_aware=True`` recommended).

    ``collections`` limits :meth:`collections` to those names (None: every collection but
    ``system.*``). ``max_await_ms`` bounds how long a caught-up ``read`` waits for a change.
    One instance serves one reader at a time; appends may come from any thread.
    ``snapshot_only`` skips the replica-set check and stops after the snapshot (for tools and
    tests that only backfill).
    """

    def __init__(self, client: Any, database: str, collections: Iterable[str] | None = None, *,
                 max_await_ms: int = 100, owns_client: bool = False, snapshot_only: bool = False) -> None:
        if not database:
            raise ValueError("the MongoDB database name must not be empty")
        self.client = client
        self.database_name = database
        self.db = client[database]
        self.allowed = None if collections is None else frozenset(collections)
        self.max_await_ms = max_await_ms
        self.owns_client = owns_client
        self.snapshot_only = snapshot_only
        #: Change types seen that carry no document (drop, rename, …), for operators' curiosity.
        self.skipped: dict[str, int] = {}
        self._readers: dict[str, _Reader] = {}
        if not snapshot_only:
            check_replica_set(self._hello(), _describe(client))

    def _hello(self) -> Mapping[str, Any]:
        from pymongo.errors import OperationFailure

        try:
            return self.client.admin.command("hello")
        except OperationFailure:  # servers before 4.4.2 know only the legacy name
            return self.client.admin.command("isMaster")

    # ---- writing ----

    def append(self, collection: str, documents: Iterable[dict[str, Any]], op: str = "insert") -> list[str]:
        """Write documents; returns their ``_id``s as text (a change-stream position exists only once
        the flow reads the change). ``update``/``replace`` replace by ``_id`` (upsert), ``delete``
        deletes by ``_id``."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
        if not collection:
            raise ValueError("collection name must not be empty")
        docs = list(documents)
        if not docs:
            return []
        target = self.db[collection]
        if op == "insert":
            result = target.insert_many(docs, ordered=True)
            return [str(i) for i in result.inserted_ids]
        for doc in docs:
            if "_id" not in doc:
                raise ValueError(f"a {op} needs the document's _id")
        if op == "delete":
            for doc in docs:
                target.delete_one({"_id": doc["_id"]})
        else:
            for doc in docs:
                target.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        return [str(doc["_id"]) for doc in docs]

    # ---- reading ----

    def collections(self) -> list[str]:
        names = (n for n in self.db.list_collection_names() if not n.startswith("system."))
        return sorted(n for n in names if self.allowed is None or n in self.allowed)

    def read(self, collection: str, after: str | None, limit: int) -> list[SourceRecord]:
        if limit <= 0:
            return []
        reader = self._readers.get(collection)
        if reader is None or reader.handed_out != after:
            if reader is not None:
                reader.close_stream()
            reader = self._readers[collection] = self._reader_from(collection, after)
        records: list[SourceRecord] = []
        if reader.phase == "snapshot":
            records += self._snapshot_page(collection, reader, limit)
        if reader.phase == "stream" and len(records) < limit and not self.snapshot_only:
            records += self._changes(collection, reader, limit - len(records))
        if records:
            reader.handed_out = records[-1].position
        return records

    def caught_up_position(self, collection: str, after: str | None) -> str | None:
        """After a ``read`` from ``after`` came back empty: a position that resumes at the same
        place but carries the stream's newest resume token (the server's post-batch token), so a
        quiet collection's stored position does not age out of the oplog. Returns ``after`` when
        there is nothing newer."""
        reader = self._readers.get(collection)
        if reader is None or reader.handed_out != after or reader.phase != "stream" or reader.stream is None:
            return after
        token = reader.stream.resume_token
        if not token:
            return after
        invalidated = reader.invalidated and token == reader.token
        position = stream_position(token, invalidated)
        if position != after:
            reader.handed_out = position
        return reader.handed_out

    def count(self, collection: str | None = None, after: str | None = None) -> int:
        """Documents in the collection(s) (estimated), or those a snapshot position has still to
        read; a stream position has an unknown number of changes ahead and counts 0."""
        if collection is None:
            if after is not None:
                raise ValueError("a position belongs to one collection: pass the collection too")
            return sum(self.count(name) for name in self.collections())
        target = self.db[collection]
        if after is None:
            return int(target.estimated_document_count())
        state = parse_position(after)
        if state["phase"] == "stream":
            return 0
        return sum(int(target.count_documents(f)) for f in snapshot_filters(state["last_id"], state["until_id"]))

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close_stream()
        self._readers.clear()
        if self.owns_client:
            self.client.close()

    # ---- phases ----

    def _reader_from(self, collection: str, after: str | None) -> _Reader:
        if after is not None:
            state = parse_position(after)
            if state["phase"] == "stream":
                return _Reader(after, "stream", state["token"], bool(state.get("invalidated")))
            return _Reader(after, "snapshot", state["token"], last_id=state["last_id"],
                           until_id=state["until_id"])
        # A fresh start. The token comes first: whatever is written after it reaches the stream,
        # and whatever the snapshot then finds below until_id is at least as new as the token.
        token = self._current_token(collection)
        newest = list(self.db[collection].find({}, {"_id": 1}).sort("_id", -1).limit(1))
        if not newest:
            return _Reader(None, "stream", token)
        return _Reader(None, "snapshot", token, until_id=newest[0]["_id"])

    def _current_token(self, collection: str) -> dict[str, Any]:
        if self.snapshot_only:
            return {}
        stream = self._watch(collection, {})
        try:
            token = stream.resume_token
            if not token:  # no post-batch token in the first reply: one getMore brings it
                stream.try_next()
                token = stream.resume_token
        finally:
            stream.close()
        if not token:
            raise RuntimeError(
                f"MongoDB gave no change-stream resume token for '{self.database_name}.{collection}'; "
                "Kairos needs MongoDB 4.2 or newer"
            )
        return dict(token)

    def _snapshot_page(self, collection: str, reader: _Reader, limit: int) -> list[SourceRecord]:
        records: list[SourceRecord] = []
        target = self.db[collection]
        for query in snapshot_filters(reader.last_id, reader.until_id):
            for doc in target.find(query).sort("_id", 1).limit(limit - len(records)):
                reader.last_id = doc["_id"]
                records.append(SourceRecord(
                    collection=collection,
                    position=snapshot_position(reader.last_id, reader.until_id, reader.token),
                    op="insert",
                    document=to_json_like(doc),
                    appended_at=_id_time(doc["_id"]),
                ))
            if len(records) >= limit:
                return records
        # Every document up to until_id is read: from here on the stream, from the token taken
        # before the snapshot began.
        reader.phase = "stream"
        return records

    def _changes(self, collection: str, reader: _Reader, limit: int) -> list[SourceRecord]:
        records: list[SourceRecord] = []
        while len(records) < limit:
            if reader.stream is None:
                reader.stream = self._open_stream(collection, reader)
            change = self._next_change(collection, reader)
            if change is None:
                break
            kind = change.get("operationType")
            reader.token, reader.invalidated = dict(change["_id"]), kind == "invalidate"
            if kind == "invalidate":
                # The collection was dropped or renamed. The stream is over; the next one starts
                # after the invalidate event (resumeAfter may not name one) and sees the collection
                # if it is created again.
                reader.close_stream()
                continue
            record = self._record(collection, change, kind)
            if record is None:
                self.skipped[str(kind)] = self.skipped.get(str(kind), 0) + 1
                continue
            records.append(record)
        return records

    def _open_stream(self, collection: str, reader: _Reader) -> Any:
        option = "start_after" if reader.invalidated else "resume_after"
        return self._watch(collection, {option: reader.token})

    def _watch(self, collection: str, options: dict[str, Any]) -> Any:
        from pymongo.errors import OperationFailure

        try:
            return self.db[collection].watch(full_document="updateLookup", max_await_time_ms=self.max_await_ms,
                                             **options)
        except OperationFailure as exc:
            _raise_resume_error(self.database_name, collection, exc)
            raise

    def _next_change(self, collection: str, reader: _Reader) -> Mapping[str, Any] | None:
        from pymongo.errors import OperationFailure

        try:
            return reader.stream.try_next()
        except OperationFailure as exc:
            reader.close_stream()
            _raise_resume_error(self.database_name, collection, exc)
            raise

    def _record(self, collection: str, change: Mapping[str, Any], kind: Any) -> SourceRecord | None:
        if kind not in OPS:
            if kind not in DDL_EVENTS:
                log.warning("%s: ignoring change of unknown type %r", collection, kind)
            return None
        key = to_json_like(change.get("documentKey") or {})
        full = change.get("fullDocument")
        if kind == "delete":
            document = key
        elif full is not None:
            document = to_json_like(full)
        else:
            # updateLookup found nothing: the document was deleted after this update (its delete
            # follows). Hand on what the change itself says rather than dropping it.
            fields = (change.get("updateDescription") or {}).get("updatedFields") or {}
            document = {**to_json_like(fields), **key}
        return SourceRecord(
            collection=collection,
            position=stream_position(change["_id"]),
            op=kind,
            document=document,
            appended_at=_change_time(change),
        )


def _raise_resume_error(database: str, collection: str, exc: Exception) -> None:
    """Raise :class:`MongoResumeError` for failures that mean a position cannot be resumed."""
    code = getattr(exc, "code", None)
    if code in HISTORY_LOST_CODES:
        raise MongoResumeError(
            f"the change stream of '{database}.{collection}' cannot resume: its position is no longer in "
            f"the oplog ({exc}). Enlarge the oplog (replSetResizeOplog) so it covers the longest outage, "
            "or start over from a fresh snapshot by removing the flow's recovery directory."
        ) from exc
    if code == INVALID_TOKEN_CODE:
        raise MongoResumeError(
            f"the change stream of '{database}.{collection}' rejected its resume token: {exc}") from exc


def _id_time(value: Any) -> datetime:
    if isinstance(value, ObjectId):
        return value.generation_time
    return datetime.now(timezone.utc)


def _change_time(change: Mapping[str, Any]) -> datetime:
    cluster_time = change.get("clusterTime")
    if isinstance(cluster_time, Timestamp):
        return cluster_time.as_datetime()
    wall_time = change.get("wallTime")
    if isinstance(wall_time, datetime):
        return to_json_like(wall_time)
    return datetime.now(timezone.utc)


def _describe(client: Any) -> str:
    try:
        address = client.address
    except Exception:  # noqa: BLE001 - only for the error message
        address = None
    if isinstance(address, tuple) and len(address) == 2:
        return f"{address[0]}:{address[1]}"
    return "the configured URL"


def open_mongo_event_store(settings: Any) -> MongoEventStore:
    """The MongoDB event store of ``settings`` (``mongo_url``, ``mongo_db``), reading the collections
    named in the collection mapping file (others in the database are not Kairos's business)."""
    from pymongo import MongoClient

    from kairos.decoding import load_mappings

    url = getattr(settings, "mongo_url", "") or ""
    if not url:
        raise ValueError("KAIROS_MONGO_URL is not set: KAIROS_EVENT_STORE=mongo needs a MongoDB URL, e.g. "
                         "mongodb://localhost:27017/?replicaSet=rs0")
    database = getattr(settings, "mongo_db", "kairos") or "kairos"
    collections = load_mappings(getattr(settings, "collections_file", "") or None)
    client: Any = MongoClient(url, tz_aware=True, serverSelectionTimeoutMS=10_000, appname="kairos")
    try:
        return MongoEventStore(client, database, collections, owns_client=True)
    except BaseException:
        client.close()
        raise


__all__ = [
    "MongoEventStore",
    "MongoNotReplicaSetError",
    "MongoResumeError",
    "check_replica_set",
    "open_mongo_event_store",
    "parse_position",
    "snapshot_filters",
    "to_json_like",
]
