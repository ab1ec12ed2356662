"""Canonical decoding: every supported shape decodes, every bad document dead-letters with a
reason, and nothing (property-tested) makes ``decode`` raise."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kairos import geo
from kairos.decoding import (
    MAX_TS,
    MIN_TS,
    CollectionMapping,
    category_from_text,
    decode,
    load_mappings,
    normalise_category,
    parse_mappings,
)
from kairos.schema import CATEGORIES, DeadLetter, Event
from kairos.stores.event_store import SourceRecord

UTC = timezone.utc
APPENDED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
T0_S = int(T0.timestamp())
MAPPINGS = load_mappings()


def record(collection: str, doc: object, op: str = "insert", position: str = "7") -> SourceRecord:
    return SourceRecord(collection=collection, position=position, op=op, document=doc, appended_at=APPENDED)


def ok(collection: str, doc: dict, op: str = "insert", mappings: dict | None = None) -> Event:
    result = decode(record(collection, doc, op), mappings or MAPPINGS)
    assert isinstance(result, Event), getattr(result, "reason", result)
    return result


def dead(collection: str, doc: object, op: str = "insert", mappings: dict | None = None) -> DeadLetter:
    result = decode(record(collection, doc, op), mappings or MAPPINGS)
    assert isinstance(result, DeadLetter), f"expected a dead letter, got {result}"
    assert result.reason
    return result


def ping(**fields: object) -> dict:
    return {"_id": "p1", "user_id": "u1", "ts": T0_S, **fields}


# ---- mapping file -----------------------------------------------------------------------------


def test_packaged_mappings_cover_every_simulated_collection() -> None:
    expected = {
        "offers",
        "events",
        "services",
        "pings",
        "searches",
        "voice",
        "interactions",
        "orders",
        "users",
        "businesses",
    }
    assert expected <= set(MAPPINGS)
    assert all(isinstance(m, CollectionMapping) for m in MAPPINGS.values())
    assert MAPPINGS["offers"].is_item and not MAPPINGS["pings"].is_item
    assert load_mappings("") == load_mappings(None)


def test_load_mappings_from_a_file(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "collections:\n  clicks:\n    actor_type: user\n    actor_id: who\n    kind: click\n"
        "    ts: when\n    item_id: what\n"
    )
    mappings = load_mappings(path)
    event = ok(
        "clicks", {"_id": 1, "who": "u9", "when": "2024-05-01T10:00:00Z", "what": "i3"}, mappings=mappings
    )
    assert (event.actor_id, event.kind, event.item_id, event.ts) == ("u9", "click", "i3", T0)
    assert event.event_id == "clicks/1/insert/7"


GOOD = {"actor_type": "user", "actor_id": "a", "kind": "click", "ts": "t"}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"actor_type": "robot"}, "'actor_type'"),
        ({"actor_id": None}, "'actor_id'"),
        ({"ts": None}, "'ts'"),
        ({"kind": "flying"}, "'kind'"),
        ({"kind": None}, "'kind'"),
        ({"kind": None, "kind_field": "v"}, "'kind_map'"),
        ({"colour": "red"}, "'colour'"),
        ({"actor_id": [1, 2]}, "'actor_id'"),
        ({"list_order": "xy"}, "'list_order'"),
        ({"required": ["price"]}, "'required'"),
        ({"ts_fallback": "sometimes"}, "'ts_fallback'"),
        ({"category_from_text": "yes"}, "'category_from_text'"),
    ],
)
def test_config_errors_name_file_collection_and_field(tmp_path, changes: dict, fragment: str) -> None:
    config = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"collections": {"x": config}}))
    with pytest.raises(ValueError) as info:
        load_mappings(path)
    message = str(info.value)
    assert str(path) in message and "'x'" in message and fragment in message


@pytest.mark.parametrize("text", ["", "collections: 3\n", "just: text\n", "collections: {a: [\n"])
def test_malformed_mapping_files_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="conf.yaml"):
        parse_mappings(text, "conf.yaml")


def test_missing_mapping_file_is_a_value_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="nope.yaml"):
        load_mappings(tmp_path / "nope.yaml")


# ---- locations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"location": {"type": "Point", "coordinates": [-73.98, 40.73]}},
        {"location": {"lat": 40.73, "lon": -73.98}},
        {"location": {"lat": 40.73, "lng": -73.98}},
        {"location": {"latitude": 40.73, "longitude": -73.98}},
        {"location": "40.73,-73.98"},
        {"location": " 40.73 , -73.98 "},
        {"coords": [-73.98, 40.73]},  # pings declare GeoJSON list order
        {"lat": 40.73, "lon": -73.98},
        {"latitude": "40.73", "longitude": "-73.98"},
        {"position": {"lat": 40.73, "lng": -73.98}},
    ],
)
def test_location_shapes(fields: dict) -> None:
    event = ok("pings", ping(**fields))
    assert (event.lat, event.lon) == (40.73, -73.98)
    assert event.cell == geo.cell_of(40.73, -73.98, 8)
    assert not set(fields) & set(event.attrs), "consumed location fields leave attrs"


def test_h3_resolution_is_honoured() -> None:
    event = decode(record("pings", ping(lat=40.73, lon=-73.98)), MAPPINGS, h3_resolution=5)
    assert isinstance(event, Event) and event.cell == geo.cell_of(40.73, -73.98, 5)


def test_bare_list_needs_a_declared_order() -> None:
    mappings = parse_mappings(
        "collections:\n  p:\n    actor_type: user\n    actor_id: u\n    kind: location\n    ts: t\n"
        "    location: xy\n"
    )
    letter = dead("p", {"u": "u1", "t": T0_S, "xy": [-73.98, 40.73]}, mappings=mappings)
    assert "list_order" in letter.reason
    latlng = parse_mappings(
        "collections:\n  p:\n    actor_type: user\n    actor_id: u\n    kind: location\n    ts: t\n"
        "    location: xy\n    list_order: latlng\n"
    )
    event = ok("p", {"u": "u1", "t": T0_S, "xy": [40.73, -73.98]}, mappings=latlng)
    assert (event.lat, event.lon) == (40.73, -73.98)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"lat": 123.4, "lon": 10.0}, "latitude 123.4 out of range"),
        ({"lat": 10.0, "lon": 200.0}, "longitude 200 out of range"),
        ({"lat": float("nan"), "lon": 10.0}, "not finite"),
        ({"lat": float("inf"), "lon": 10.0}, "not finite"),
        ({"lat": True, "lon": 10.0}, "not a number"),
        ({"lat": 10.0}, "latitude without longitude"),
        ({"location": "somewhere"}, "not 'lat,lon'"),
        ({"location": {"type": "Polygon", "coordinates": [[1, 2]]}}, "not a Point"),
        ({"location": {"x": 1}}, "no coordinates"),
        ({"location": 42}, "not a location"),
        ({"coords": [1.0, 2.0, 3.0, 4.0]}, "not a point"),
        ({}, "no location"),
    ],
)
def test_bad_locations_dead_letter(fields: dict, fragment: str) -> None:
    letter = dead("pings", ping(**fields))
    assert letter.reason.startswith("pings: ")
    assert fragment in letter.reason
    assert letter.source_id == "p1" and letter.position == "7" and letter.collection == "pings"
    json.loads(letter.document)  # kept whole, as JSON text


def test_bad_location_on_optional_field_still_dead_letters() -> None:
    """A search may have no place, but a wrong place is an error, never silently dropped."""
    assert ok("searches", {"user_id": "u1", "ts": T0_S, "query": "spa"}).lat is None
    dead("searches", {"user_id": "u1", "ts": T0_S, "query": "spa", "location": {"lat": 95, "lng": 0}})


# ---- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00.000Z",
        "2024-05-01T06:00:00-04:00",
        "2024-05-01T15:30:00+05:30",
        "2024-05-01T10:00:00",  # naive is UTC
        "2024-05-01 10:00:00",
        "Wed, 01 May 2024 10:00:00 GMT",
        T0_S,
        float(T0_S),
        T0_S * 1000,
        T0_S * 1_000_000,
        str(T0_S),
        str(T0_S * 1000),
        datetime(2024, 5, 1, 10, 0),
        datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        {"$date": "2024-05-01T10:00:00Z"},
        {"$date": T0_S * 1000},
        {"$date": {"$numberLong": str(T0_S * 1000)}},
    ],
)
def test_timestamp_formats(value: object) -> None:
    event = ok("pings", {"user_id": "u1", "ts": value, "lat": 1.0, "lon": 2.0})
    assert event.ts == T0
    assert event.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (12345, "outside 1990-2100"),
        ("1985-01-01T00:00:00Z", "outside 1990-2100"),
        ("2150-01-01T00:00:00Z", "outside 1990-2100"),
        ("yesterday", "not a readable time"),
        (True, "not a timestamp"),
        ({"when": 1}, "not a timestamp"),
        (float("nan"), "not finite"),
        (1e300, "readable"),
    ],
)
def test_bad_timestamps_dead_letter(value: object, fragment: str) -> None:
    letter = dead("pings", {"user_id": "u1", "ts": value, "lat": 1.0, "lon": 2.0})
    assert fragment in letter.reason


def test_missing_timestamp_names_the_aliases() -> None:
    letter = dead("offers", {"_id": "o1", "business_id": "b1", "price": 5, "lat": 1, "lon": 2})
    assert letter.reason.startswith("offers: no timestamp in any of [updated_at, modified")


def test_profiles_fall_back_to_receive_time() -> None:
    event = ok("users", {"_id": "u1", "name": "Ava"})
    assert event.ts == APPENDED and event.kind == "profile" and event.actor_type == "user"
    business = ok("businesses", {"_id": "b1", "category": "Café", "location": "40.7,-73.9"})
    assert (business.kind, business.actor_type, business.category) == ("profile", "business", "coffee")


# ---- aliases, kinds, items --------------------------------------------------------------------


def test_first_present_alias_wins_and_dotted_paths_resolve() -> None:
    doc = {
        "_id": "o1",
        "merchant": {"id": "b7", "name": "Lotus"},
        "name": "Facial",
        "amount": 40,
        "was": 50,
        "geo": {"lat": 40.7, "lon": -73.9},
        "updated_at": None,
        "ts": T0_S * 1000,
        "created": "2020-01-01",
        "valid": {"from": T0_S * 1000, "to": (T0_S + 3600) * 1000},
    }
    event = ok("offers", doc)
    assert event.actor_id == "b7" and event.ts == T0  # null updated_at skipped, ts before created
    assert event.valid_from == T0 and event.valid_to == T0 + timedelta(hours=1)
    assert event.attrs["merchant"] == {"name": "Lotus"}  # the consumed leaf leaves, the rest stays
    assert "valid" not in event.attrs and event.attrs["created"] == "2020-01-01"


def test_item_event_fields() -> None:
    doc = {
        "_id": "b1-001",
        "business_id": "b1",
        "title": "50% off facials",
        "description": "Lotus Spa",
        "category": "Beauty",
        "price": "45.00",
        "original_price": 90,
        "currency": "usd",
        "location": {"type": "Point", "coordinates": [-73.98, 40.73]},
        "starts": "2024-05-01T10:00:00Z",
        "ends": "2024-05-02T10:00:00Z",
        "created_at": "2024-05-01T09:00:00Z",
        "event_start": "2024-05-01T18:00:00Z",
        "media": ["https://cdn.example.com/x.jpg"],
    }
    event = ok("offers", doc)
    assert (event.kind, event.actor_type, event.actor_id, event.item_id) == (
        "offer",
        "business",
        "b1",
        "b1-001",
    )
    assert event.category == "spa" and event.text == "50% off facials — Lotus Spa"
    assert (event.price, event.original_price, event.currency) == (45.0, 90.0, "USD")
    assert event.discount == pytest.approx(0.5)
    assert event.ts == T0 - timedelta(hours=1)
    assert event.attrs["op"] == "create" and event.attrs["business_id"] == "b1"
    assert event.attrs["starts_at"] == "2024-05-01T18:00:00+00:00"
    assert event.attrs["media"] == doc["media"]
    assert "price" not in event.attrs and "title" not in event.attrs
    assert event.event_id == "offers/b1-001/insert/7"
    updated = ok("offers", {**doc, "price": 40, "updated_at": "2024-05-01T11:00:00Z"}, op="update")
    assert updated.attrs["op"] == "update" and updated.ts == T0 + timedelta(hours=1) and updated.price == 40


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (12, 12.0),
        ("12.50", 12.5),
        ("$12.50", 12.5),
        ("1,200", 1200.0),
        ("₹450", 450.0),
        ({"$numberDecimal": "9.99"}, 9.99),
        ({"amount": 7, "currency": "EUR"}, 7.0),
        (0, 0.0),
    ],
)
def test_price_shapes(price: object, expected: float) -> None:
    event = ok("events", {"_id": "e1", "biz": "b1", "ts": T0_S, "lat": 1, "lon": 2, "cost": price})
    assert event.price == expected


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"price": "free??"}, "price 'free??' is not a number"),
        ({"price": -3}, "price -3 is negative"),
        ({"price": float("nan")}, "not finite"),
        ({"price": float("inf")}, "not finite"),
        ({"price": True}, "not a number"),
        ({"price": 30, "original_price": 20}, "reduced price 30 above original price 20"),
        ({"price": 5, "original_price": "lots"}, "original price"),
        (
            {"price": 5, "valid_from": "2024-05-02T00:00:00Z", "valid_to": "2024-05-01T00:00:00Z"},
            "before valid_from",
        ),
        ({}, "no price"),
        ({"price": 5, "category": 7}, "not a category"),
        ({"price": 5, "title": {"en": "x"}}, "not text"),
    ],
)
def test_bad_item_fields_dead_letter(fields: dict, fragment: str) -> None:
    doc = {"_id": "o1", "business_id": "b1", "ts": T0_S, "lat": 40.7, "lon": -73.9, **fields}
    assert fragment in dead("offers", doc).reason


def test_item_without_id_dead_letters() -> None:
    assert (
        "no item id"
        in dead("offers", {"business_id": "b1", "ts": T0_S, "lat": 1, "lon": 2, "price": 1}).reason
    )


def test_delete_with_only_an_id() -> None:
    event = ok("offers", {"_id": "o1"}, op="delete")
    assert (event.kind, event.item_id, event.actor_id, event.ts) == ("offer", "o1", "unknown", APPENDED)
    assert event.attrs["op"] == "delete" and event.attrs["business_id"] == "unknown"
    assert event.event_id == "offers/o1/delete/7"
    timed = ok(
        "services", {"_id": "s1", "business_id": "b2", "deleted_at": "2024-05-01T10:00:00Z"}, op="delete"
    )
    assert (timed.actor_id, timed.ts) == ("b2", T0)


def test_delete_ignores_broken_optional_fields() -> None:
    """A delete must take the item down even if the rest of its document is rubbish."""
    event = ok("offers", {"_id": "o1", "price": "free??", "lat": 999, "ts": "never"}, op="delete")
    assert (
        event.attrs["op"] == "delete" and event.price is None and event.lat is None and event.ts == APPENDED
    )


def test_behaviour_delete_without_fields_dead_letters() -> None:
    assert "no user id" in dead("interactions", {"_id": "i1"}, op="delete").reason


@pytest.mark.parametrize(
    ("action", "kind"),
    [("view", "view"), ("CLICK", "click"), (" tap ", "click"), ("bookmark", "save"), ("dismiss", "dismiss")],
)
def test_interaction_kinds(action: str, kind: str) -> None:
    doc = {
        "user_id": "u1",
        "item_id": "o1",
        "action": action,
        "ts": T0_S * 1000,
        "category": "Café",
        "loc": {"type": "Point", "coordinates": [-73.98, 40.73]},
        "price_seen": 4.5,
        "business_id": "b1",
    }
    event = ok("interactions", doc)
    assert (event.kind, event.item_id, event.category, event.price) == (kind, "o1", "coffee", 4.5)
    assert event.attrs["business_id"] == "b1" and "op" not in event.attrs


def test_web_interaction_shape() -> None:
    doc = {
        "uid": "u1",
        "item": "o1",
        "event": "click",
        "timestamp": "2024-05-01T10:00:00Z",
        "position": "40.7,-73.9",
    }
    event = ok("interactions", doc)
    assert (event.actor_id, event.item_id, event.kind, event.lat) == ("u1", "o1", "click", 40.7)


def test_unknown_or_missing_kind_dead_letters() -> None:
    base = {"user_id": "u1", "item_id": "o1", "ts": T0_S}
    assert "unknown action 'teleport'" in dead("interactions", {**base, "action": "teleport"}).reason
    assert "no kind" in dead("interactions", base).reason
    assert "no item id" in dead("interactions", {"user_id": "u1", "action": "view", "ts": T0_S}).reason


@pytest.mark.parametrize(
    ("order_type", "kind"),
    [("booking", "booking"), ("purchase", "purchase"), ("Reservation", "booking"), (None, "purchase")],
)
def test_order_kinds(order_type: str | None, kind: str) -> None:
    doc = {
        "user_id": "u1",
        "item_id": "o1",
        "type": order_type,
        "amount": 18.0,
        "list_price": 24.0,
        "currency": "USD",
        "created_at": "2024-05-01T10:00:00Z",
        "location": {"lat": 40.7, "lon": -73.9},
    }
    event = ok("orders", doc)
    assert (event.kind, event.price, event.original_price, event.currency) == (kind, 18.0, 24.0, "USD")


def test_search_and_voice_categories_from_text() -> None:
    search = ok(
        "searches",
        {
            "user_id": "u1",
            "query": "cheap spa near me",
            "created_at": "2024-05-01T06:00:00-04:00",
            "location": {"lat": 40.7, "lng": -73.9},
        },
    )
    assert (search.kind, search.category, search.text, search.ts) == (
        "search",
        "spa",
        "cheap spa near me",
        T0,
    )
    voice = ok(
        "voice",
        {
            "user": {"id": "u2"},
            "transcript": "find me a football match tonight",
            "recorded_at": {"$date": "2024-05-01T10:00:00.000Z"},
            "position": {"latitude": 19.07, "longitude": 72.87},
        },
    )
    assert (voice.kind, voice.actor_id, voice.category, voice.lat) == ("voice", "u2", "sport", 19.07)
    assert ok("searches", {"user_id": "u1", "query": "deals near me", "ts": T0_S}).category is None
    assert (
        ok("searches", {"user_id": "u1", "query": "x", "category": "Yoga", "ts": T0_S}).category == "fitness"
    )
    assert "no text" in dead("searches", {"user_id": "u1", "ts": T0_S}).reason


def test_unknown_collection_and_non_object_documents() -> None:
    letter = dead("foo", {"_id": "x"})
    assert letter.reason == "foo: no mapping for collection 'foo'" and letter.source_id == "x"
    assert "not an object" in dead("pings", ["not", "a", "dict"]).reason
    assert "unknown change op" in dead("pings", ping(lat=1, lon=2), op="upsert").reason


def test_mongo_object_ids() -> None:
    event = ok(
        "pings",
        {
            "_id": {"$oid": "65f0a1b2c3d4e5f601234567"},
            "user_id": {"$oid": "abc"},
            "ts": T0_S,
            "lat": 1,
            "lon": 2,
        },
    )
    assert event.event_id.startswith("pings/65f0a1b2c3d4e5f601234567/") and event.actor_id == "abc"


# ---- categories --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Café", "coffee"),
        ("coffee shop", "coffee"),
        ("beauty", "spa"),
        ("Salon", "spa"),
        ("massage", "spa"),
        ("Beauty Salon", "spa"),
        ("gym", "fitness"),
        ("Yoga", "fitness"),
        ("restaurant", "food"),
        ("Pizza", "food"),
        ("concert", "culture"),
        ("Theatre", "culture"),
        ("museum", "culture"),
        ("match", "sport"),
        ("Football", "sport"),
        ("shop", "retail"),
        ("fashion", "retail"),
        ("repair", "services"),
        ("cleaning", "services"),
        ("  SPA ", "spa"),
        ("Spas", "spa"),
        ("Underwater Basket Weaving", "underwater basket weaving"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalise_category(raw: str | None, expected: str | None) -> None:
    assert normalise_category(raw) == expected


def test_every_category_normalises_to_itself() -> None:
    assert [normalise_category(c) for c in CATEGORIES] == list(CATEGORIES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cheap spa near me", "spa"),
        ("coffee", "coffee"),
        ("football match tonight", "sport"),
        ("where can I get a latte", "coffee"),
        ("yoga class tomorrow", "fitness"),
        ("jazz night", "culture"),
        ("phone repair", "services"),
        ("sneakers sale", "retail"),
        ("sushi for dinner", "food"),
        ("spa and dinner", "spa"),
        ("what's open now", None),
        ("", None),
    ],
)
def test_category_from_text(text: str, expected: str | None) -> None:
    assert category_from_text(text) == expected


# ---- properties: decode never raises ----------------------------------------------------------

ALIAS_KEYS = sorted(
    {
        alias.split(".")[0]
        for mapping in MAPPINGS.values()
        for name in (
            "actor_id",
            "kind_field",
            "item_id",
            "category",
            "title",
            "description",
            "text",
            "ts",
            "location",
            "lat",
            "lon",
            "price",
            "original_price",
            "currency",
            "valid_from",
            "valid_to",
            "starts_at",
        )
        for alias in getattr(mapping, name)
    }
    | {"_id", "type", "coordinates", "$date", "$oid", "from", "to"}
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "2024-05-01T10:00:00Z",
            "40.7,-73.9",
            "free??",
            "view",
            "booking",
            "Café",
            "Point",
            "1e400",
            "nan",
            "1714557600000",
            "-0",
            "12,5",
        ]
    ),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
)
keys = st.one_of(st.sampled_from(ALIAS_KEYS), st.text(max_size=8))
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=20,
)
documents = st.dictionaries(keys, json_like, max_size=10)
collections = st.sampled_from(sorted(MAPPINGS) + ["unknown"])
ops = st.sampled_from(["insert", "update", "replace", "delete", "bogus"])


def assert_well_formed(result: Event | DeadLetter, collection: str, resolution: int = 8) -> None:
    if isinstance(result, DeadLetter):
        assert isinstance(result.reason, str) and result.reason.strip()
        assert result.collection == collection
        assert isinstance(result.document, str)
        return
    assert isinstance(result, Event)
    assert result.ts.tzinfo is not None and result.ts.utcoffset() == timedelta(0)
    assert MIN_TS <= result.ts < MAX_TS
    for value in (result.valid_from, result.valid_to):
        assert value is None or (value.utcoffset() == timedelta(0) and MIN_TS <= value < MAX_TS)
    if result.valid_from is not None and result.valid_to is not None:
        assert result.valid_from <= result.valid_to
    assert (result.lat is None) == (result.lon is None) == (result.cell is None)
    if result.lat is not None:
        assert geo.valid_point(result.lat, result.lon)
        assert result.cell == geo.cell_of(result.lat, result.lon, resolution)
    for price in (result.price, result.original_price):
        assert price is None or (math.isfinite(price) and price >= 0)
    if result.price is not None and result.original_price is not None:
        assert result.price <= result.original_price
    assert result.actor_type in ("user", "business") and isinstance(result.actor_id, str)
    assert result.category is None or isinstance(result.category, str)
    assert result.text is None or isinstance(result.text, str)
    json.dumps(result.attrs, allow_nan=False)
    if result.is_item:
        assert result.attrs["op"] in ("create", "update", "delete")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(collection=collections, op=ops, doc=documents)
def test_decode_never_raises_on_random_documents(collection: str, op: str, doc: dict) -> None:
    assert_well_formed(decode(record(collection, doc, op), MAPPINGS), collection)


@settings(max_examples=100, deadline=None)
@given(collection=collections, doc=json_like)
def test_decode_never_raises_on_non_object_documents(collection: str, doc: object) -> None:
    assert_well_formed(decode(record(collection, doc), MAPPINGS), collection)


VALID_DOCS: dict[str, dict] = {
    "offers": {
        "_id": "o1",
        "business_id": "b1",
        "title": "Deal",
        "description": "d",
        "category": "Café",
        "price": 4.5,
        "original_price": 6,
        "currency": "USD",
        "location": {"type": "Point", "coordinates": [-73.98, 40.73]},
        "starts": "2024-05-01T10:00:00Z",
        "ends": "2024-05-02T10:00:00Z",
        "created_at": "2024-05-01T09:00:00Z",
    },
    "events": {
        "_id": "e1",
        "merchant": {"id": "b2", "name": "Club"},
        "name": "Jazz",
        "segment": "Concert",
        "amount": 20,
        "was": 25,
        "ccy": "USD",
        "geo": {"lat": 40.7, "lon": -73.9},
        "valid": {"from": 1714557600000, "to": 1714600000000},
        "ts": 1714557600000,
        "when": 1714590000000,
    },
    "services": {
        "_id": "s1",
        "biz": "b3",
        "headline": "Massage",
        "tags": ["Salon", "deal"],
        "cost": "80.00",
        "list_price": 100,
        "position": "40.7,-73.9",
        "window": {"start": "2024-05-01T06:00:00-04:00", "end": "2024-05-01T09:00:00-04:00"},
        "created": "2024-05-01T05:00:00-04:00",
    },
    "pings": {"_id": "p1", "uid": "u1", "coords": [-73.98, 40.73], "ts": 1714557600000},
    "searches": {
        "_id": "q1",
        "user_id": "u1",
        "query": "cheap spa",
        "created_at": "2024-05-01T06:00:00-04:00",
        "location": {"lat": 40.7, "lng": -73.9},
    },
    "voice": {
        "_id": "v1",
        "user": {"id": "u1"},
        "transcript": "find a cafe",
        "recorded_at": {"$date": "2024-05-01T10:00:00.000Z"},
        "position": {"latitude": 19.1, "longitude": 72.9},
    },
    "interactions": {
        "_id": "i1",
        "user_id": "u1",
        "item_id": "o1",
        "action": "click",
        "ts": 1714557600000,
        "loc": {"type": "Point", "coordinates": [-73.98, 40.73]},
        "price_seen": 4.5,
    },
    "orders": {
        "_id": "r1",
        "user_id": "u1",
        "item_id": "o1",
        "type": "booking",
        "amount": 80,
        "list_price": 100,
        "created_at": "2024-05-01T10:00:00Z",
        "location": {"lat": 40.7, "lon": -73.9},
    },
    "users": {"_id": "u1", "name": "Ava", "signup": "2023-01-01T00:00:00Z"},
    "businesses": {
        "_id": "b1",
        "name": "Lotus",
        "category": "Beauty",
        "location": {"type": "Point", "coordinates": [-73.98, 40.73]},
        "created_at": "2023-01-01T00:00:00Z",
    },
}


def test_valid_samples_decode() -> None:
    for collection, doc in VALID_DOCS.items():
        assert_well_formed(ok(collection, doc), collection)


def _mutate(doc: object, path: list, value: object, delete: bool) -> object:
    """Copy of ``doc`` with the value at ``path`` (indices into sorted keys) replaced or deleted."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc, key=str)[path[0] % len(doc)]
        copy = dict(doc)
        if delete and len(path) == 1:
            del copy[key]
        else:
            copy[key] = _mutate(doc[key], path[1:], value, delete)
        return copy
    index = path[0] % len(doc)
    copy_list = list(doc)
    copy_list[index] = _mutate(doc[index], path[1:], value, delete)
    return copy_list


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    collection=st.sampled_from(sorted(VALID_DOCS)),
    mutations=st.lists(
        st.tuples(st.lists(st.integers(0, 20), min_size=1, max_size=3), json_like, st.booleans()),
        min_size=1,
        max_size=4,
    ),
    op=ops,
    resolution=st.integers(0, 15),
)
def test_decode_never_raises_on_malformed_variations(
    collection: str, mutations: list, op: str, resolution: int
) -> None:
    doc: object = VALID_DOCS[collection]
    for path, value, delete in mutations:
        doc = _mutate(doc, path, value, delete)
    result = decode(record(collection, doc, op), MAPPINGS, h3_resolution=resolution)
    assert_well_formed(result, collection, resolution)
