"""The MongoDB event store against a real replica set: set KAIROS_TEST_MONGO_URL to run it.

    docker compose -f infra/docker-compose.yml up -d mongo mongo-init
    KAIROS_TEST_MONGO_URL="mongodb://localhost:27017/?replicaSet=rs0&directConnection=true" \\
        .venv/bin/python -m pytest tests/test_mongo_integration.py

Each test works in a fresh database that it drops afterwards. No MongoDB server can be installed on
the machines Kairos is built on, so there this file is skipped; the unit tests in
tests/test_mongo_store.py cover the same paths with change events in MongoDB's shape.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone

import pytest
from bson import Decimal128, ObjectId

from kairos.decoding import decode, load_mappings
from kairos.ingest.inspect import inspect_database
from kairos.schema import Event
from kairos.stores.mongo_store import MongoEventStore, parse_position

URL = os.environ.get("KAIROS_TEST_MONGO_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="KAIROS_TEST_MONGO_URL is not set (needs a MongoDB replica set)")


@pytest.fixture()
def client():
    from pymongo import MongoClient

    client = MongoClient(URL, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture()
def database(client):
    name = f"kairos_test_{uuid.uuid4().hex[:10]}"
    yield name
    client.drop_database(name)


def offer(title: str, price: str) -> dict:
    now = datetime.now(timezone.utc)
    return {"_id": ObjectId(), "business_id": "biz-1", "title": title, "category": "coffee",
            "price": Decimal128(price), "original_price": Decimal128("9.00"), "currency": "USD",
            "location": {"type": "Point", "coordinates": [-73.9855, 40.758]}, "created_at": now, "updated_at": now}


def read_until(store, collection, after, n, timeout_s=15.0):
    """Read until ``n`` records came (changes reach a stream once majority-committed)."""
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < n and time.monotonic() < deadline:
        batch = store.read(collection, after, n - len(records))
        if batch:
            records += batch
            after = batch[-1].position
        else:
            time.sleep(0.05)
    return records


def test_snapshot_changes_resume_and_invalidate_on_a_replica_set(client, database):
    offers = client[database]["offers"]
    offers.insert_many([offer(f"old {i}", "5.00") for i in range(5)])
    store = MongoEventStore(client, database)
    first = store.read("offers", None, 3)
    assert [r.document["title"] for r in first] == ["old 0", "old 1", "old 2"]

    late = [offer("late 0", "4.00"), offer("late 1", "4.50")]
    offers.insert_many(late)
    offers.update_one({"_id": late[0]["_id"]}, {"$set": {"price": Decimal128("3.00"),
                                                         "updated_at": datetime.now(timezone.utc)}})
    offers.delete_one({"_id": late[1]["_id"]})
    rest = read_until(store, "offers", first[-1].position, 6)
    assert [(r.op, r.document.get("title")) for r in rest] == [
        ("insert", "old 3"), ("insert", "old 4"), ("insert", "late 0"), ("insert", "late 1"),
        ("update", "late 0"), ("delete", None)]
    assert rest[4].document["price"] == 3.0 and rest[5].document == {"_id": str(late[1]["_id"])}
    events = [decode(r, load_mappings()) for r in first + rest]
    assert all(isinstance(e, Event) for e in events), events

    # A restart from the position after the first late insert sees the rest again, exactly.
    restarted = MongoEventStore(client, database)
    again = read_until(restarted, "offers", rest[2].position, 3)
    assert [r.op for r in again] == ["insert", "update", "delete"]
    assert [r.position for r in again] == [r.position for r in rest[3:]]
    assert parse_position(again[0].position)["phase"] == "stream"

    # Drop (invalidate), recreate: reading goes on with startAfter.
    offers.drop()
    offers.insert_one(offer("reborn", "6.00"))
    reborn = read_until(restarted, "offers", again[-1].position, 1)
    assert [r.document["title"] for r in reborn] == ["reborn"]
    assert restarted.skipped.get("drop") == 1

    # An idle collection's position moves on with the server's post-batch token.
    assert restarted.read("offers", reborn[-1].position, 10) == []
    refreshed = restarted.caught_up_position("offers", reborn[-1].position)
    offers.insert_one(offer("after idle", "6.50"))
    assert [r.document["title"] for r in read_until(MongoEventStore(client, database), "offers", refreshed, 1)] == [
        "after idle"]
    store.close()
    restarted.close()


def test_append_and_inspect_on_a_replica_set(client, database):
    store = MongoEventStore(client, database)
    ids = store.append("pings", [{"_id": f"api-{i}", "user_id": "u1", "lat": 40.7, "lon": -73.9,
                                  "ts": datetime.now(timezone.utc).isoformat()} for i in range(5)])
    assert ids == [f"api-{i}" for i in range(5)]
    assert store.count("pings") == 5
    client[database]["offers"].insert_many([offer(f"o{i}", "5.00") for i in range(5)])
    proposal = inspect_database(client[database], sample=10)
    assert set(proposal["collections"]) == {"offers", "pings"}
    assert proposal["collections"]["pings"]["mapping"]["kind"] == "location"
    assert proposal["collections"]["offers"]["decoded"] == 5
