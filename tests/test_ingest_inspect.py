"""`kairos ingest inspect`: proposing collection mappings from sampled MongoDB documents."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone

import mongomock
import pytest
import yaml
from bson import Decimal128, ObjectId
from typer.testing import CliRunner

from kairos.decoding import KINDS, decode, load_mappings, parse_mappings
from kairos.ingest import cli as ingest_cli
from kairos.ingest.inspect import (
    KIND_SYNONYMS,
    inspect_database,
    point_shape,
    propose_collection,
    render_yaml,
)
from kairos.schema import Event
from kairos.simulate import SimConfig, simulate
from kairos.stores.event_store import SourceRecord
from kairos.stores.mongo_store import MongoEventStore, to_json_like

NOW = datetime(2024, 5, 1, 18, 0, tzinfo=timezone.utc)
CANONICAL = ("kind", "actor_type", "actor_id", "item_id", "category", "lat", "lon", "price", "original_price",
             "currency", "ts", "valid_from", "valid_to", "text")


@pytest.fixture(scope="module")
def city() -> mongomock.MongoClient:
    """The simulated city's documents, every business style and client shape, in a Mongo database."""
    client = mongomock.MongoClient(tz_aware=True)
    config = SimConfig(seed=5, days=1, n_users=60, n_businesses=24)
    simulate(MongoEventStore(client, "city", snapshot_only=True), config, tempfile.mkdtemp())
    return client


def decode_all(name, docs, mappings):
    return [decode(SourceRecord(name, str(i), "insert", to_json_like(d), NOW), mappings) for i, d in enumerate(docs)]


def test_inspecting_the_simulated_city_rediscovers_the_packaged_mapping(city):
    proposal = inspect_database(city["city"], sample=5000)
    packaged = load_mappings()
    assert set(proposal["collections"]) == set(city["city"].list_collection_names()) <= set(packaged)
    assert proposal["skipped"] == {}
    proposed = parse_mappings(render_yaml(proposal))
    for name in proposed:
        docs = list(city["city"][name].find())
        mine, theirs = decode_all(name, docs, proposed), decode_all(name, docs, packaged)
        for doc, a, b in zip(docs, mine, theirs, strict=True):
            # Whatever the hand-written mapping decodes, the proposal decodes to the same event.
            if isinstance(b, Event):
                assert isinstance(a, Event), (name, doc, a.reason)
                assert [getattr(a, f) for f in CANONICAL] == [getattr(b, f) for f in CANONICAL], (name, doc)
        result = proposal["collections"][name]
        assert result["decoded"] >= sum(isinstance(b, Event) for b in theirs) * result["sampled"] / len(docs) - 1
        assert 0.8 <= result["confidence"] <= 1.0, (name, result["reasons"])
        assert result["reasons"] and result["role"]
    roles = {name: r["role"] for name, r in proposal["collections"].items()}
    assert roles["offers"] == roles["services"] == "item"
    assert roles["users"] == "user_profile" and roles["businesses"] == "business_profile"
    assert {roles[n] for n in ("pings", "searches", "voice", "interactions", "orders")} == {"behaviour"}


def test_rendered_yaml_loads_and_carries_confidence_and_reasons_as_comments(city):
    proposal = inspect_database(city["city"], sample=50)
    text = render_yaml(proposal)
    loaded = yaml.safe_load(text)
    assert loaded["version"] == 1 and set(loaded["collections"]) == set(proposal["collections"])
    kind_map = loaded["collections"]["interactions"]["kind_map"]
    assert kind_map["view"] == "view" and set(kind_map.items()) <= set(KIND_SYNONYMS.items())
    assert "# interactions: behaviour — confidence" in text
    assert "  # - kind from action" in text
    assert all(r["sampled"] <= 50 for r in proposal["collections"].values())


def test_yaml_quotes_names_yaml_would_misread():
    docs = [{"_id": i, "user_id": "u1", "ts": 1714557600 + i, "action": "yes" if i % 2 else "view",
             "item": "i1"} for i in range(10)]
    result = propose_collection("on", docs)  # `on:` is a boolean key to YAML 1.1
    text = render_yaml({"database": "d", "sample": 10, "collections": {"on": result}, "skipped": {}})
    assert list(parse_mappings(text)) == ["on"]
    assert "values with no kind (dead letters until mapped): yes" in " ".join(result["reasons"])
    assert result["mapping"]["kind_map"] == {"view": "view"}
    assert result["decoded"] == 5 and result["confidence"] == pytest.approx(0.5 * 0.5)


def test_camel_case_names_epoch_seconds_and_tokyo_coordinates():
    docs = [{"_id": ObjectId(), "userId": f"u{i}", "createdAt": 1714557600 + 60 * i,
             "geo": [35.68 + i / 1000, 139.76], "query": "ramen near me"} for i in range(30)]
    result = propose_collection("app_searches", docs)
    mapping = result["mapping"]
    assert mapping["actor_id"] == ["userId"] and mapping["ts"] == ["createdAt"]
    assert mapping["kind"] == "search" and mapping["text"] == ["query"] and mapping["category_from_text"]
    assert mapping["location"] == ["geo"] and mapping["list_order"] == "latlng"
    assert result["decoded"] == 30 and result["confidence"] == 1.0
    (event,) = decode_all("app_searches", docs[:1], parse_mappings(render_yaml(
        {"collections": {"app_searches": result}, "skipped": {}})))
    assert (event.lat, event.lon, event.category) == (35.68, 139.76, "food")


def test_items_without_a_telling_name_are_guessed_from_their_fields_with_less_confidence():
    start = NOW + timedelta(days=2)
    docs = [{"_id": ObjectId(), "vendor": {"id": "v1", "name": "Blue Note"}, "headline": "Jazz night",
             "price": Decimal128("25.00"), "loc": {"type": "Point", "coordinates": [-73.99, 40.73]},
             "start_time": start, "modified": NOW - timedelta(hours=i)} for i in range(12)]
    result = propose_collection("things", docs)
    mapping = result["mapping"]
    assert result["role"] == "item" and mapping["kind"] == "event"
    assert mapping["actor_id"] == ["vendor.id"] and mapping["title"] == ["headline"]
    assert mapping["starts_at"] == ["start_time"] and mapping["ts"] == ["modified"]
    assert "vendor.name" not in mapping.get("title", [])  # the business's name is not the item's
    assert result["decoded"] == 12 and result["confidence"] == pytest.approx(0.85)


def test_documents_without_time_fall_back_to_the_insert_time_and_say_so():
    docs = [{"_id": ObjectId(), "uid": f"u{i}", "lat": 40.7, "lng": -73.9} for i in range(5)]
    result = propose_collection("gps_pings", docs)
    assert result["mapping"]["ts_fallback"] == "appended"
    assert any("no timestamp field" in r for r in result["reasons"])
    assert result["decoded"] == 5 and result["confidence"] == pytest.approx(0.6)


def test_collections_that_are_not_events_are_skipped_with_the_reason():
    client = mongomock.MongoClient(tz_aware=True)
    db = client["shop"]
    db["sessions"].insert_many([{"_id": i, "token": "abc", "expires": NOW} for i in range(3)])
    db["audit"].insert_many([{"_id": i, "user_id": "u1", "blob": "x"} for i in range(3)])
    db.create_collection("empty")
    db["pings"].insert_many([{"_id": i, "user_id": "u1", "ts": NOW, "lat": 1.0, "lon": 2.0} for i in range(3)])
    proposal = inspect_database(db, sample=10)
    assert list(proposal["collections"]) == ["pings"]
    assert proposal["skipped"]["empty"] == "empty collection"
    assert "no user or business id" in proposal["skipped"]["sessions"]
    assert "cannot tell what kind of behaviour" in proposal["skipped"]["audit"]
    text = render_yaml(proposal)
    assert "#   sessions: no user or business id" in text
    assert set(parse_mappings(text)) == {"pings"}
    with pytest.raises(ValueError, match="at least 1"):
        inspect_database(db, sample=0)


def test_point_shapes_and_kind_vocabulary():
    assert point_shape({"type": "Point", "coordinates": [-73.9, 40.7]}) == "geojson"
    assert point_shape({"lat": "40.7", "lng": "-73.9"}) == "object"
    assert point_shape("40.7,-73.9") == "text"
    assert point_shape([-73.9, 40.7]) == "list"
    assert point_shape({"type": "Polygon", "coordinates": [[1, 2]]}) is None
    assert point_shape([200, 10]) is None and point_shape("Brooklyn") is None
    assert set(KIND_SYNONYMS.values()) <= set(KINDS)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def mongo(monkeypatch, city):
    monkeypatch.setattr(ingest_cli, "connect", lambda url, timeout_s: city)
    return city


def test_cli_prints_the_yaml_and_writes_it_with_out(mongo, tmp_path):
    out = tmp_path / "collections.yaml"
    result = CliRunner().invoke(ingest_cli.ingest_app, ["inspect", "--mongo-url", "mongodb://db:27017/city",
                                                        "--sample", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "version: 1" in result.stdout
    assert set(parse_mappings(out.read_text())) == set(mongo["city"].list_collection_names())
    assert "collections proposed" in result.stderr


def test_cli_finds_the_only_database_or_asks_which(mongo):
    runner = CliRunner()
    assert runner.invoke(ingest_cli.ingest_app, ["inspect", "--mongo-url", "mongodb://db:27017"]).exit_code == 0
    mongo["other"]["x"].insert_one({"_id": 1})
    try:
        result = runner.invoke(ingest_cli.ingest_app, ["inspect", "--mongo-url", "mongodb://db:27017"])
    finally:
        mongo.drop_database("other")
    assert result.exit_code == 2 and "--db" in result.output and "city, other" in result.output
    result = runner.invoke(ingest_cli.ingest_app, ["inspect", "--mongo-url", "mongodb://db:27017", "--db", "void"])
    assert result.exit_code == 2 and "has no collections" in result.output


def test_cli_reports_bad_urls_unreachable_servers_and_nothing_to_propose(monkeypatch):
    runner = CliRunner()
    result = runner.invoke(ingest_cli.ingest_app, ["inspect", "--mongo-url", "http://not-mongo"])
    assert result.exit_code == 2 and "--mongo-url" in result.output
    result = runner.invoke(ingest_cli.ingest_app, ["inspect", "--mongo-url", "mongodb://127.0.0.1:1/x",
                                                   "--timeout-s", "0.2"])
    assert result.exit_code == 2 and "cannot read MongoDB" in result.output
    client = mongomock.MongoClient()
    client["x"]["sessions"].insert_one({"_id": 1, "token": "t"})
    monkeypatch.setattr(ingest_cli, "connect", lambda url, timeout_s: client)
    result = runner.invoke(ingest_cli.ingest_app, ["inspect", "--mongo-url", "mongodb://db/x"])
    assert result.exit_code == 1 and "no collection of 'x' looks like" in result.output
