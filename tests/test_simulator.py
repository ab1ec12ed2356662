"""The city simulator: deterministic, heterogeneous, decodable, with travellers, clusters and a
ground truth kept apart from the product's data."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kairos import geo
from kairos.decoding import decode, load_mappings
from kairos.schema import DeadLetter, Event
from kairos.simulate import CITIES, SimConfig, SimSummary, engagement_probability, simulate
from kairos.stores.event_store import SourceRecord, SqliteEventStore

UTC = timezone.utc
START = datetime(2024, 5, 10, tzinfo=UTC)  # a Friday: the run spans a weekday and a weekend day
SMALL = dict(days=2, n_users=60, n_businesses=30, start=START)
ALL_COLLECTIONS = {
    "users",
    "businesses",
    "offers",
    "events",
    "services",
    "pings",
    "searches",
    "voice",
    "interactions",
    "orders",
}


def records(store: SqliteEventStore) -> list[SourceRecord]:
    return [r for c in store.collections() for r in store.read(c, None, 10**7)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SqliteEventStore, SimSummary, list[SourceRecord]]:
    base = tmp_path_factory.mktemp("sim")
    store = SqliteEventStore(base / "store" / "events.sqlite")
    summary = simulate(store, SimConfig(seed=11, **SMALL), base / "truth")
    return store, summary, records(store)


@pytest.fixture(scope="module")
def decoded(run) -> list[tuple[SourceRecord, Event | DeadLetter]]:
    mappings = load_mappings()
    return [(r, decode(r, mappings)) for r in run[2]]


def test_same_seed_same_documents(tmp_path: Path, run) -> None:
    store, summary, first = run
    again = SqliteEventStore(tmp_path / "again.sqlite")
    second_summary = simulate(again, SimConfig(seed=11, **SMALL), tmp_path / "truth")
    second = records(again)
    assert [(r.collection, r.op, r.document) for r in first] == [
        (r.collection, r.op, r.document) for r in second
    ]
    assert second_summary.documents == summary.documents
    assert second_summary.ground_truth_path.read_text() == summary.ground_truth_path.read_text()
    other = SqliteEventStore(tmp_path / "other.sqlite")
    simulate(other, SimConfig(seed=12, **SMALL), tmp_path / "truth-12")
    assert [r.document for r in records(other)] != [r.document for r in first]


def test_every_collection_is_written(run) -> None:
    store, summary, docs = run
    assert set(store.collections()) == ALL_COLLECTIONS
    assert set(summary.documents) == ALL_COLLECTIONS
    assert sum(summary.documents.values()) == len(docs) == store.count()
    assert summary.start == START and summary.end == START + timedelta(days=2)
    assert summary.cities == {"new-york": (40.7306, -73.9866), "mumbai": (19.0760, 72.8777)}
    ops = Counter((r.collection, r.op) for r in docs)
    assert sum(n for (c, op), n in ops.items() if op == "update") > 0, "price updates"
    assert sum(n for (c, op), n in ops.items() if op == "delete") > 0, "withdrawn items"


def _location_shape(doc: dict) -> str | None:
    for key in ("location", "coords", "loc", "position", "geo"):
        value = doc.get(key)
        if isinstance(value, dict) and "coordinates" in value:
            return "geojson"
        if isinstance(value, dict):
            return "{" + ",".join(sorted(value)) + "}"
        if isinstance(value, str):
            return "lat,lon text"
        if isinstance(value, list):
            return "[lng, lat] list"
    if "lat" in doc or "latitude" in doc:
        return "top-level fields"
    return None


def _ts_format(value: object) -> str | None:
    if isinstance(value, dict) and "$date" in value:
        return "$date"
    if isinstance(value, str) and value.endswith("Z"):
        return "iso-z"
    if isinstance(value, str) and len(value) > 19 and value[19] in "+-":
        return "iso-offset"
    if isinstance(value, int):
        return "epoch-ms" if value > 1e11 else "epoch-s"
    return None


def test_shapes_are_heterogeneous(run) -> None:
    docs = run[2]
    shapes = Counter(_location_shape(r.document) for r in docs) - Counter({None: 10**9})
    assert len(shapes) >= 3, shapes
    formats = Counter(
        _ts_format(r.document.get(key))
        for r in docs
        for key in ("ts", "timestamp", "created_at", "created", "epoch", "recorded_at", "signup")
        if key in r.document
    ) - Counter({None: 10**9})
    assert len(formats) >= 2, formats
    item_docs = [
        r.document for r in docs if r.collection in ("offers", "events", "services") and r.op == "insert"
    ]
    title_fields = {next(k for k in ("title", "name", "headline", "label") if k in d) for d in item_docs}
    price_fields = {next(k for k in ("price", "amount", "cost") if k in d) for d in item_docs}
    assert len(title_fields) >= 3 and len(price_fields) >= 3


def test_every_document_decodes_except_the_injected_malformed(run, decoded) -> None:
    summary = run[1]
    malformed = set(summary.malformed_ids)
    assert summary.malformed == len(malformed) >= 3
    assert summary.malformed <= 0.02 * len(decoded)
    unexpected = []
    for r, result in decoded:
        broken = (r.collection, str(r.document.get("_id"))) in malformed and r.op == "insert"
        if broken != isinstance(result, DeadLetter):
            unexpected.append((r.collection, r.op, r.document, getattr(result, "reason", "decoded")))
    assert not unexpected, unexpected[:5]
    reasons = " | ".join(res.reason for _, res in decoded if isinstance(res, DeadLetter))
    assert "no timestamp" in reasons and "out of range" in reasons


def test_decoded_events_are_plausible(run, decoded) -> None:
    events = [e for _, e in decoded if isinstance(e, Event)]
    kinds = Counter(e.kind for e in events)
    for kind in (
        "location",
        "search",
        "voice",
        "view",
        "click",
        "save",
        "offer",
        "event",
        "service",
        "profile",
    ):
        assert kinds[kind] > 0, kind
    assert kinds["purchase"] + kinds["booking"] > 0
    assert kinds["location"] > kinds["view"] > kinds["click"]
    for e in events:
        if e.kind in ("view", "click", "save", "dismiss", "purchase", "booking"):
            assert e.item_id and e.category and e.lat is not None, e
        if e.is_item and e.op != "delete":
            assert e.category in (
                "food",
                "coffee",
                "spa",
                "fitness",
                "sport",
                "culture",
                "retail",
                "services",
            )
            assert e.price is not None and e.lat is not None and e.valid_to is not None
        if e.kind in ("purchase", "booking"):
            assert e.original_price is None or e.price <= e.original_price
    searches = [e for e in events if e.kind == "search"]
    assert sum(e.category is not None for e in searches) > 0.7 * len(searches)


def test_ground_truth_is_written_apart(run) -> None:
    store, summary, docs = run
    path = summary.ground_truth_path
    assert path.name == "ground_truth.json" and path.parent != store.path.parent
    truth = json.loads(path.read_text())
    assert len(truth["users"]) == 60 and len(truth["businesses"]) == 30
    user = truth["users"][0]
    assert math.isclose(sum(user["interests"].values()), 1.0, abs_tol=1e-3)
    assert 0 <= user["price_sensitivity"] <= 1
    assert all(len(curve) == 168 for curve in truth["demand_curves"].values())
    assert truth["items"] and truth["malformed"]
    # Nothing hidden leaks into the product's data.
    text = json.dumps([r.document for r in docs])
    assert "price_sensitivity" not in text and "interests" not in text and "ground_truth" not in text


def test_a_mumbai_traveller_is_in_new_york_on_the_last_day(run, decoded) -> None:
    summary = run[1]
    truth = json.loads(summary.ground_truth_path.read_text())
    mumbaikars = {u["id"] for u in truth["users"] if u["home_city"] == "mumbai"}
    assert mumbaikars
    ny = CITIES["new-york"]
    last_day = summary.end - timedelta(days=1)
    seen = {
        e.actor_id
        for _, e in decoded
        if isinstance(e, Event)
        and e.kind == "location"
        and e.actor_id in mumbaikars
        and e.ts >= last_day
        and geo.haversine_km(e.lat, e.lon, ny.lat, ny.lon) < 50
    }
    assert seen


def test_competitors_cluster(decoded) -> None:
    profiles = [
        e for _, e in decoded if isinstance(e, Event) and e.kind == "profile" and e.actor_type == "business"
    ]
    best = 0
    for a in profiles:
        rivals = [
            b
            for b in profiles
            if b.category == a.category and geo.haversine_km(a.lat, a.lon, b.lat, b.lon) <= 2.0
        ]
        best = max(best, len(rivals))
        if a.category == "spa":
            assert len(rivals) >= 3
    assert best >= 4


def test_items_are_on_sale_at_the_end(run, decoded) -> None:
    end = run[1].end
    latest: dict[str, Event] = {}
    for _, e in sorted(
        ((r, e) for r, e in decoded if isinstance(e, Event) and e.is_item), key=lambda p: p[1].ts
    ):
        latest[e.item_id] = e
    live = [
        e
        for e in latest.values()
        if e.op != "delete" and e.valid_from <= end - timedelta(hours=1) < e.valid_to
    ]
    assert len(live) >= 10
    assert any(e.valid_to > end + timedelta(hours=1) for e in live), "some last into the next day"


def test_documents_arrive_roughly_in_event_time_order(decoded) -> None:
    by_collection: dict[str, list[datetime]] = {}
    for r, e in decoded:
        if isinstance(e, Event) and r.collection not in ("users", "businesses"):
            by_collection.setdefault(r.collection, []).append(e.ts)
    for collection, times in by_collection.items():
        late = sum(1 for a, b in zip(times, times[1:], strict=False) if b < a - timedelta(minutes=15))
        assert late <= 0.01 * len(times), collection


def test_default_run_is_fast_and_sized_right(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.sqlite")
    summary = simulate(store, SimConfig(), tmp_path / "sim")
    assert 10_000 <= summary.total <= 200_000
    assert summary.elapsed_s < 60
    today = datetime.now(UTC).date()
    assert summary.end == datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    assert summary.start == summary.end - timedelta(days=3)


def test_progress_bar_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SqliteEventStore(tmp_path / "events.sqlite")
    summary = simulate(
        store, SimConfig(days=1, n_users=5, n_businesses=8, start=START), tmp_path, progress=True
    )
    assert summary.total == store.count()


@pytest.mark.parametrize(
    "changes", [{"days": 0}, {"n_users": 0}, {"traveller_share": 1.5}, {"malformed_share": -0.1}]
)
def test_bad_configs_are_refused(tmp_path: Path, changes: dict) -> None:
    with pytest.raises(ValueError):
        simulate(SqliteEventStore(tmp_path / "e.sqlite"), SimConfig(**changes), tmp_path)


def test_engagement_probability_follows_the_model() -> None:
    base = dict(
        interest=0.25,
        distance_km=1.0,
        price=50.0,
        reference_price=60.0,
        discount=0.2,
        price_sensitivity=0.7,
        demand=1.0,
    )
    p = engagement_probability("view", **base)
    assert 0 < p < 1
    assert engagement_probability("view", **{**base, "distance_km": 4.0}) < p
    assert engagement_probability("view", **{**base, "interest": 0.02}) < p
    assert engagement_probability("view", **{**base, "price": 90.0}) < p
    assert engagement_probability("view", **{**base, "discount": 0.5}) > p
    assert engagement_probability("view", **{**base, "demand": 2.0}) > p
    insensitive = {**base, "price_sensitivity": 0.0}
    assert engagement_probability("view", **{**insensitive, "price": 90.0}) == pytest.approx(
        engagement_probability("view", **{**insensitive, "price": 30.0})
    )
    for stage in ("view", "click", "save", "purchase"):
        assert 0 <= engagement_probability(stage, **{**base, "interest": 1.0, "distance_km": 0.0}) <= 0.95
    with pytest.raises(ValueError):
        engagement_probability("teleport", **base)
