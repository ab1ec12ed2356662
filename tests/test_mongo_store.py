"""The MongoDB event store: snapshot, change streams, resume positions, document conversion.

No MongoDB server runs here. Snapshots and writes go to mongomock; change streams come from a fake
collection whose ``watch()`` serves change events in MongoDB's own shape
(tests/fixtures/change_events.py, from the manual's "Change Events" reference) with the semantics
pymongo and the server give them: a new stream's ``resume_token`` is the server's post-batch
token, ``resume_after`` continues after a token, ``resume_after`` an ``invalidate`` token is
refused while ``start_after`` is allowed, and a token that left the oplog fails with
ChangeStreamHistoryLost (286).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import mongomock
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from pymongo.errors import OperationFailure

from flows.source import _CollectionPartition
from kairos.decoding import decode, load_mappings
from kairos.schema import Event
from kairos.stores.mongo_store import (
    MongoEventStore,
    MongoNotReplicaSetError,
    MongoResumeError,
    check_replica_set,
    parse_position,
    stream_position,
    to_json_like,
)
from tests.fixtures import change_events as ce

REPLICA_SET_HELLO = {"isWritablePrimary": True, "setName": "rs0", "hosts": ["mongo:27017"], "ok": 1.0}
STANDALONE_HELLO = {"isWritablePrimary": True, "maxWireVersion": 21, "ok": 1.0}


# --------------------------------------------------------------------------------------------
# Fakes: a replica set's admin command and change streams over mongomock
# --------------------------------------------------------------------------------------------


class FakeOplog:
    """The change events of one collection, in cluster-time order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.watch_calls: list[dict[str, Any]] = []
        self.lost_before = 0  # events below this index have left the oplog
        self.advance_on_empty = True  # whether an empty getMore returns a newer post-batch token

    def add(self, *events: dict[str, Any]) -> None:
        self.events.extend(events)

    @staticmethod
    def high_water_mark(index: int) -> dict[str, str]:
        return {"_data": f"82{ce.T0 + 1000:08X}{index:08X}0104"}

    def start_index(self, token: dict[str, Any], start_after: bool) -> int:
        for i, event in enumerate(self.events):
            if event["_id"] == token:
                if i < self.lost_before:
                    break
                if event["operationType"] == "invalidate" and not start_after:
                    raise OperationFailure("Attempting to resume a change stream using 'resumeAfter' is not "
                                           "allowed from an invalidate notification.", code=260)
                return i + 1
        for i in range(len(self.events) + 1):
            if self.high_water_mark(i) == token and i >= self.lost_before:
                return i
        raise OperationFailure("Resume of change stream was not possible, as the resume point may no longer "
                               "be in the oplog.", code=286)


class FakeChangeStream:
    def __init__(self, oplog: FakeOplog, options: dict[str, Any]) -> None:
        self.oplog = oplog
        resume, start = options.get("resume_after"), options.get("start_after")
        if resume is not None and start is not None:
            raise OperationFailure("Only one type of resume option is allowed", code=50865)
        if resume is not None or start is not None:
            self.index = oplog.start_index(resume if resume is not None else start, start is not None)
            self._token = copy.deepcopy(resume if resume is not None else start)
        else:
            self.index = len(oplog.events)
            self._token = oplog.high_water_mark(self.index)  # the first reply's postBatchResumeToken
        self.closed = False

    @property
    def resume_token(self) -> dict[str, Any]:
        return copy.deepcopy(self._token)

    @property
    def alive(self) -> bool:
        return not self.closed

    def try_next(self) -> dict[str, Any] | None:
        if self.closed:
            return None
        if self.index >= len(self.oplog.events):
            if self.oplog.advance_on_empty:
                self._token = self.oplog.high_water_mark(self.index)
            return None
        change = copy.deepcopy(self.oplog.events[self.index])
        self.index += 1
        self._token = copy.deepcopy(change["_id"])
        if change["operationType"] == "invalidate":
            self.closed = True
        return change

    def close(self) -> None:
        self.closed = True


class FakeCollection:
    def __init__(self, collection: Any, oplog: FakeOplog) -> None:
        self._collection, self.oplog = collection, oplog

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def watch(self, **options: Any) -> FakeChangeStream:
        assert options.get("full_document") == "updateLookup"
        self.oplog.watch_calls.append(options)
        return FakeChangeStream(self.oplog, options)


class FakeDatabase:
    def __init__(self, database: Any, oplogs: dict[str, FakeOplog]) -> None:
        self._database, self._oplogs = database, oplogs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)

    def __getitem__(self, name: str) -> FakeCollection:
        return FakeCollection(self._database[name], self._oplogs.setdefault(name, FakeOplog()))


class FakeAdmin:
    def __init__(self, hello: dict[str, Any], legacy_only: bool) -> None:
        self.hello, self.legacy_only, self.commands = hello, legacy_only, []

    def command(self, name: str) -> dict[str, Any]:
        self.commands.append(name)
        if name == "hello" and self.legacy_only:
            raise OperationFailure("no such command: 'hello'", code=59)
        return dict(self.hello)


class FakeClient:
    """A replica set (or, with another ``hello``, a standalone server) over mongomock."""

    def __init__(self, hello: dict[str, Any] = REPLICA_SET_HELLO, legacy_only: bool = False) -> None:
        self.mongo = mongomock.MongoClient(tz_aware=True)
        self.admin = FakeAdmin(hello, legacy_only)
        self.oplogs: dict[str, dict[str, FakeOplog]] = {}
        self.closed = False

    def __getitem__(self, name: str) -> FakeDatabase:
        return FakeDatabase(self.mongo[name], self.oplogs.setdefault(name, {}))

    def oplog(self, collection: str, database: str = ce.DB) -> FakeOplog:
        return self.oplogs.setdefault(database, {}).setdefault(collection, FakeOplog())

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def client() -> FakeClient:
    return FakeClient()


def old_offers(n: int) -> list[dict[str, Any]]:
    """Offers that existed before the flow started, with ObjectIds from before the story."""
    created = datetime(2023, 8, 30, 12, 0, tzinfo=timezone.utc)
    return [
        ce.offer_document(ObjectId.from_datetime(created + timedelta(minutes=i)), f"{3 + i}.00", created,
                          title=f"old offer {i}")
        for i in range(n)
    ]


# --------------------------------------------------------------------------------------------
# Snapshot, then stream
# --------------------------------------------------------------------------------------------


def test_snapshot_then_stream_delivers_every_document_then_every_change(client):
    client["marketplace"]["offers"].insert_many(old_offers(5))
    store = MongoEventStore(client, ce.DB)
    first = store.read("offers", None, 3)
    # The resume token is taken before the snapshot reads anything, from a fresh stream.
    assert client.oplog("offers").watch_calls == [{"full_document": "updateLookup", "max_await_time_ms": 100}]
    assert [r.document["title"] for r in first] == ["old offer 0", "old offer 1", "old offer 2"]
    assert {r.op for r in first} == {"insert"}
    assert {parse_position(r.position)["phase"] for r in first} == {"snapshot"}

    client.oplog("offers").add(*ce.offers_story())  # changes made while/after the snapshot ran
    rest = store.read("offers", first[-1].position, 100)
    assert [r.op for r in rest] == ["insert", "insert", "insert", "update", "replace", "insert", "delete"]
    assert [r.document.get("title") for r in rest[:2]] == ["old offer 3", "old offer 4"]
    assert [parse_position(r.position)["phase"] for r in rest] == ["snapshot"] * 2 + ["stream"] * 5
    # The stream resumes from the token taken before the snapshot, so nothing in between is lost.
    calls = client.oplog("offers").watch_calls
    assert calls[1]["resume_after"] == FakeOplog.high_water_mark(0)
    # drop + invalidate close the stream; the next one starts *after* the invalidate.
    assert calls[2] == {"full_document": "updateLookup", "max_await_time_ms": 100,
                        "start_after": ce.offers_story()[-1]["_id"]}
    assert store.skipped == {"drop": 1}
    assert store.read("offers", rest[-1].position, 100) == []
    # Positions are distinct and say where to resume; none names the invalidate.
    positions = [r.position for r in first + rest]
    assert len(set(positions)) == len(positions)


def test_an_empty_collection_goes_straight_to_the_stream(client):
    store = MongoEventStore(client, ce.DB)
    assert store.read("pings", None, 10) == []
    client.oplog("pings").add(*ce.pings_story())
    records = store.read("pings", None, 10)  # the flow still holds no position: same reader continues
    assert [r.document["uid"] for r in records] == ["u-42", "u-42"]
    assert client.oplog("pings").watch_calls[1]["resume_after"] == FakeOplog.high_water_mark(0)


def test_the_snapshot_stops_at_the_newest_id_of_its_start(client):
    """A document inserted after the snapshot began with a larger ObjectId comes from the stream
    only, not twice."""
    client["marketplace"]["offers"].insert_many(old_offers(3))
    store = MongoEventStore(client, ce.DB)
    first = store.read("offers", None, 1)
    late = ce.offer_document(ObjectId(), "9.00", datetime.now(timezone.utc), title="late offer")
    client["marketplace"]["offers"].insert_one(late)
    client.oplog("offers").add(ce.insert("offers", late, int(time.time())))
    rest = store.read("offers", first[-1].position, 100)
    titles = [r.document["title"] for r in first + rest]
    assert titles == ["old offer 0", "old offer 1", "old offer 2", "late offer"]
    assert parse_position(rest[-1].position)["phase"] == "stream"


def test_mixed_id_types_are_snapshotted_once_each_in_bson_order(client):
    docs = [{"_id": "api-b"}, {"_id": ObjectId("64f000000000000000000002")}, {"_id": 7}, {"_id": "api-a"},
            {"_id": 3.5}, {"_id": ObjectId("64f000000000000000000001")}, {"_id": Int64(2**40)}]
    client["marketplace"]["pings"].insert_many(docs)
    store = MongoEventStore(client, ce.DB)
    seen, position = [], None
    while page := store.read("pings", position, 2):
        seen += [r.document["_id"] for r in page]
        position = page[-1].position
        # Each page is resumable on its own, as after a restart.
        store = MongoEventStore(client, ce.DB)
    assert seen == [3.5, 7, 2**40, "api-a", "api-b", "64f000000000000000000001", "64f000000000000000000002"]


# --------------------------------------------------------------------------------------------
# Resuming from a stored position (a restart)
# --------------------------------------------------------------------------------------------


def test_resume_mid_snapshot_continues_after_the_last_id_and_keeps_the_early_token(client):
    client["marketplace"]["offers"].insert_many(old_offers(4))
    first = MongoEventStore(client, ce.DB).read("offers", None, 2)
    token = parse_position(first[-1].position)["token"]
    client.oplog("offers").add(*ce.offers_story()[:2])
    client.oplog("offers").watch_calls.clear()

    restarted = MongoEventStore(client, ce.DB)
    records = restarted.read("offers", first[-1].position, 10)
    assert [r.document["title"] for r in records[:2]] == ["old offer 2", "old offer 3"]
    assert [r.op for r in records[2:]] == ["insert", "update"]
    # No new token was taken: the stream resumes from the one stored with the snapshot.
    assert client.oplog("offers").watch_calls == [
        {"full_document": "updateLookup", "max_await_time_ms": 100, "resume_after": token}]


def test_resume_mid_stream_continues_after_the_stored_change(client):
    story = ce.offers_story()
    client.oplog("offers").add(*story)
    # The position a recovered flow holds after it processed the update.
    after_update = stream_position(story[1]["_id"])
    restarted = MongoEventStore(client, ce.DB)
    records = restarted.read("offers", after_update, 10)
    assert [r.op for r in records] == ["replace", "insert", "delete"]
    calls = client.oplog("offers").watch_calls
    assert [c.get("resume_after") for c in calls] == [story[1]["_id"], None]  # then start_after the drop
    assert records[0].document["title"] == "Espresso happy hour"


def test_a_position_naming_an_invalidate_resumes_with_start_after(client):
    story = ce.offers_story()
    oplog = client.oplog("offers")
    oplog.add(*story)
    recreated = ce.offer_document(ObjectId("64f0004b1c9d440000a1b2e0"), "5.00",
                                  datetime(2023, 8, 31, 12, 0, tzinfo=timezone.utc), title="after the drop")
    oplog.add(ce.insert("offers", recreated, ce.T0 + 36_000))  # after the drop
    position = stream_position(story[-1]["_id"], invalidated=True)
    records = MongoEventStore(client, ce.DB).read("offers", position, 10)
    assert [r.document["title"] for r in records] == ["after the drop"]
    assert oplog.watch_calls[-1] == {"full_document": "updateLookup", "max_await_time_ms": 100,
                                     "start_after": story[-1]["_id"]}
    # resume_after would have been refused, as the server refuses it.
    with pytest.raises(MongoResumeError, match="rejected its resume token"):
        MongoEventStore(client, ce.DB).read("offers", stream_position(story[-1]["_id"]), 10)


def test_caught_up_position_carries_the_newest_token_and_the_invalidate_flag(client):
    oplog = client.oplog("offers")
    oplog.advance_on_empty = False  # the server has nothing newer than the invalidate to offer
    store = MongoEventStore(client, ce.DB)
    assert store.read("offers", None, 10) == []
    oplog.add(*ce.offers_story())
    records = store.read("offers", None, 100)
    held = records[-1].position
    assert store.read("offers", held, 100) == []
    refreshed = store.caught_up_position("offers", held)
    state = parse_position(refreshed)
    assert state["invalidated"] is True and state["token"] == ce.offers_story()[-1]["_id"]
    assert store.read("offers", refreshed, 10) == []  # the same reader continues from it
    restarted = MongoEventStore(client, ce.DB)
    assert restarted.read("offers", refreshed, 10) == []
    assert "start_after" in oplog.watch_calls[-1]

    # A quiet collection: the post-batch token moves on while no change arrives.
    oplog.advance_on_empty = True
    oplog.add(ce.insert("offers", ce.offer_document(ObjectId(), "1.00", datetime.now(timezone.utc)), ce.T0 + 99))
    last = restarted.read("offers", refreshed, 10)[-1].position
    oplog.events.append(ce.drop("other", ce.T0 + 100))  # stand-in for unrelated oplog traffic
    assert restarted.read("offers", last, 10) == []
    newer = restarted.caught_up_position("offers", last)
    assert newer != last and parse_position(newer)["invalidated"] is False
    assert restarted.caught_up_position("offers", "not the held position") == "not the held position"


def test_flow_partition_snapshots_mongo_positions_and_resumes_from_them(client):
    """The Bytewax source partition over this store: what it snapshots resumes exactly."""
    client["marketplace"]["offers"].insert_many(old_offers(3))
    part = _CollectionPartition(MongoEventStore(client, ce.DB), "offers", None, follow=True, batch_size=2,
                                poll_interval_s=0.05)
    assert [r.document["title"] for r in part.next_batch()] == ["old offer 0", "old offer 1"]
    saved = part.snapshot()
    client.oplog("offers").add(*ce.offers_story()[:1])
    resumed = _CollectionPartition(MongoEventStore(client, ce.DB), "offers", saved, follow=True, batch_size=5,
                                   poll_interval_s=0.05)
    batch = resumed.next_batch()
    assert [(r.op, r.document["title"]) for r in batch] == [("insert", "old offer 2"),
                                                            ("insert", "Espresso 2 for 1")]
    assert resumed.next_batch() == [] and resumed.next_awake() is not None


def test_history_lost_and_foreign_positions_fail_with_clear_messages(client):
    story = ce.offers_story()
    client.oplog("offers").add(*story)
    client.oplog("offers").lost_before = 3
    store = MongoEventStore(client, ce.DB)
    with pytest.raises(MongoResumeError, match="no longer in the oplog.*recovery directory"):
        store.read("offers", stream_position(story[0]["_id"]), 10)
    with pytest.raises(ValueError, match="not a MongoDB event-store position"):
        store.read("offers", "42", 10)  # a SQLite row id from another event store
    with pytest.raises(ValueError, match="no resume token"):
        store.read("offers", json.dumps({"phase": "stream"}), 10)


# --------------------------------------------------------------------------------------------
# Replica-set check
# --------------------------------------------------------------------------------------------


def test_a_standalone_server_is_refused_with_how_to_start_a_replica_set():
    with pytest.raises(MongoNotReplicaSetError) as raised:
        MongoEventStore(FakeClient(hello=STANDALONE_HELLO), ce.DB)
    message = str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    for needed in ("standalone", "change streams", "replica set", "--replSet rs0", "rs.initiate", "replicaSet=rs0"):
        assert needed in message


def test_replica_sets_and_mongos_pass_and_old_servers_use_is_master():
    check_replica_set({"setName": "rs0"})
    check_replica_set({"msg": "isdbgrid"})  # mongos of a sharded cluster
    legacy = FakeClient(legacy_only=True)
    MongoEventStore(legacy, ce.DB)
    assert legacy.admin.commands == ["hello", "isMaster"]
    with pytest.raises(MongoNotReplicaSetError):
        MongoEventStore(FakeClient(hello=STANDALONE_HELLO, legacy_only=True), ce.DB)


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


def test_documents_are_converted_to_json_like_values(client):
    oid = ObjectId("64f0000a1c9d440000a1b2c3")
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    client["marketplace"]["offers"].insert_one({
        "_id": oid, "price": Decimal128("12.50"), "nan": Decimal128("NaN"), "big": Int64(2**40),
        "when": datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc),
        "nested": {"ids": [ObjectId("64f0000a1c9d440000a1b2c4")], "uuid": Binary.from_uuid(uid)},
    })
    (record,) = MongoEventStore(client, ce.DB).read("offers", None, 10)
    doc = record.document
    assert doc["_id"] == str(oid) and isinstance(doc["_id"], str)
    assert doc["price"] == 12.5 and isinstance(doc["price"], float)
    assert doc["nan"] is None
    assert doc["big"] == 2**40 and type(doc["big"]) is int
    assert doc["when"] == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc) and doc["when"].tzinfo is not None
    assert doc["nested"] == {"ids": ["64f0000a1c9d440000a1b2c4"], "uuid": str(uid)}
    assert record.appended_at == oid.generation_time  # snapshot: when the ObjectId was made
    json.dumps({k: v for k, v in doc.items() if k != "when"})  # JSON-like indeed
    # Naive datetimes (a client without tz_aware) are read as UTC.
    assert to_json_like(datetime(2024, 5, 1, 10, 0)) == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


def test_change_records_carry_converted_documents_and_cluster_time(client):
    story = ce.offers_story()
    store = MongoEventStore(client, ce.DB)
    store.read("offers", None, 1)
    client.oplog("offers").add(*story)
    records = store.read("offers", None, 100)
    insert, update, replace, _, delete = records
    assert insert.document["_id"] == str(ce.OFFER_ID) and insert.document["price"] == 3.5
    assert update.document["price"] == 2.9  # the looked-up document, as it is now
    assert replace.document["title"] == "Espresso happy hour"
    assert delete.document == {"_id": str(ce.SECOND_OFFER_ID)}  # only the documentKey
    assert [r.appended_at for r in records] == [e["clusterTime"].as_datetime() for e in story[:5]]
    assert all(r.appended_at.tzinfo is not None for r in records)


def test_an_update_whose_document_is_gone_keeps_what_the_change_says(client):
    gone = ce.update("offers", ce.OFFER_ID, {"price": Decimal128("1.99"), "note.text": "last call"}, ce.T0 + 5)
    store = MongoEventStore(client, ce.DB)
    store.read("offers", None, 1)
    client.oplog("offers").add(gone)
    (record,) = store.read("offers", None, 10)
    assert record.op == "update"
    assert record.document == {"_id": str(ce.OFFER_ID), "price": 1.99, "note.text": "last call"}


def test_every_record_decodes_with_the_packaged_mapping(client):
    client["marketplace"]["offers"].insert_many(old_offers(2))
    store = MongoEventStore(client, ce.DB)
    records = store.read("offers", None, 2)
    assert store.read("pings", None, 100) == []  # the pings stream starts here
    client.oplog("offers").add(*ce.offers_story())
    client.oplog("pings").add(*ce.pings_story())
    records += store.read("offers", records[-1].position, 100) + store.read("pings", None, 100)
    mappings = load_mappings()
    events = [decode(r, mappings) for r in records]
    assert all(isinstance(e, Event) for e in events), [e for e in events if not isinstance(e, Event)]
    offers = [e for e in events if e.collection == "offers"]
    assert [e.attrs["op"] for e in offers] == ["create"] * 3 + ["update", "update", "create", "delete"]
    assert offers[3].price == 2.9 and offers[3].original_price == 7.0 and offers[3].category == "coffee"
    assert offers[0].item_id == records[0].document["_id"]
    # A delete carries only its _id: its time is the change's cluster time.
    assert offers[-1].item_id == str(ce.SECOND_OFFER_ID)
    assert offers[-1].ts == ce.offers_story()[4]["clusterTime"].as_datetime()
    pings = [e for e in events if e.collection == "pings"]
    assert [(p.kind, p.actor_id, p.lat) for p in pings] == [("location", "u-42", 40.73), ("location", "u-42", 40.74)]
    assert len({e.event_id for e in events}) == len(events)


# --------------------------------------------------------------------------------------------
# Writing, listing, counting, closing
# --------------------------------------------------------------------------------------------


def test_append_inserts_replaces_and_deletes_by_id(client):
    store = MongoEventStore(client, ce.DB)
    assert store.append("pings", [{"_id": "api-1", "user_id": "u1"}, {"_id": "api-2", "user_id": "u2"}]) == [
        "api-1", "api-2"]
    (generated,) = store.append("pings", [{"user_id": "u3"}])
    assert ObjectId.is_valid(generated)
    store.append("pings", [{"_id": "api-1", "user_id": "u1", "lat": 1.0}], op="update")
    store.append("pings", [{"_id": "api-2"}], op="delete")
    stored = {d["_id"]: d for d in client.mongo[ce.DB]["pings"].find()}
    assert set(stored) == {"api-1", ObjectId(generated)} and stored["api-1"]["lat"] == 1.0
    with pytest.raises(ValueError, match="unknown op"):
        store.append("pings", [{"_id": "x"}], op="upsert")
    with pytest.raises(ValueError, match="needs the document's _id"):
        store.append("pings", [{"user_id": "u1"}], op="replace")
    with pytest.raises(ValueError, match="must not be empty"):
        store.append("", [{"_id": "x"}])
    assert store.append("pings", []) == []


def test_collections_and_counts(client):
    db = client.mongo[ce.DB]
    db["offers"].insert_many(old_offers(5))
    db["pings"].insert_one({"_id": 1})
    db["sessions"].insert_one({"_id": 1})
    db["system.views"].insert_one({"_id": 1})
    assert MongoEventStore(client, ce.DB).collections() == ["offers", "pings", "sessions"]
    store = MongoEventStore(client, ce.DB, collections=["offers", "pings", "voice"])
    assert store.collections() == ["offers", "pings"]
    assert store.count() == 6 and store.count("offers") == 5
    page = store.read("offers", None, 2)
    assert store.count("offers", page[-1].position) == 3  # still to snapshot
    assert store.count("offers", stream_position({"_data": "8264"})) == 0
    with pytest.raises(ValueError, match="belongs to one collection"):
        store.count(None, page[-1].position)


def test_close_closes_open_streams_and_an_owned_client(client):
    store = MongoEventStore(client, ce.DB, owns_client=True)
    store.read("offers", None, 1)
    reader = store._readers["offers"]
    stream = reader.stream
    store.close()
    assert stream.closed and client.closed
    borrowed = FakeClient()
    MongoEventStore(borrowed, ce.DB).close()
    assert not borrowed.closed


def test_open_mongo_event_store_needs_a_url():
    from kairos.stores.mongo_store import open_mongo_event_store

    class NoUrl:
        mongo_url = ""
        mongo_db = "kairos"
        collections_file = ""

    with pytest.raises(ValueError, match="KAIROS_MONGO_URL is not set"):
        open_mongo_event_store(NoUrl())


# --------------------------------------------------------------------------------------------
# The whole feature flow over MongoDB
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_feature_flow_reads_mongo_and_resumes_from_its_recovery_snapshot(tmp_path, monkeypatch, client):
    """Bytewax flow, recovery on: a snapshot run, then changes while it is down, then a resumed run
    that reads only the changes (the event store is switched the way KAIROS_EVENT_STORE=mongo will)."""
    from flows import dataflow, runner, source
    from kairos.config import Settings
    from kairos.stores.catalog import open_catalog
    from kairos.stores.offline_log import OfflineLog

    def open_store(settings):
        return MongoEventStore(client, ce.DB, collections=list(load_mappings()))

    for module in (dataflow, runner, source):
        monkeypatch.setattr(module, "open_event_store", open_store)
    settings = Settings(home=tmp_path, feast_project="mongo_flow", epoch_interval_s=0.5)
    db = client.mongo[ce.DB]
    db["offers"].insert_many(old_offers(3))

    first = runner.run_flow(settings, progress=False)
    assert first.records == 3 and not first.resumed

    # While the flow is down: the offers change (the stream has them) and pings arrive.
    client.oplog("offers").add(*ce.offers_story())
    pings = ce.pings_story()
    db["pings"].insert_many([change["fullDocument"] for change in pings])
    client.oplog("pings").add(*pings)

    second = runner.run_flow(settings, progress=False)
    assert second.resumed and second.records == 5 + 2  # the story's five records and the two pings
    events = OfflineLog(settings.offline_dir).read_events()
    assert len(events) == 10 and events["event_id"].is_unique
    assert sorted(events["kind"].value_counts().items()) == [("location", 2), ("offer", 8)]
    catalog = open_catalog(settings)
    kept, removed = catalog.get(str(ce.OFFER_ID)), catalog.get(str(ce.SECOND_OFFER_ID))
    assert kept.title.startswith("Espresso happy hour") and kept.price == 2.5 and not kept.deleted
    assert removed.deleted
