"""POST /v1/feedback and impression logging, end to end: API -> event store -> decoder -> attribution."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flows.attribution import AttributionParams, AttributionState
from kairos.config import Settings
from kairos.decoding import decode, load_mappings, parse_mappings
from kairos.geo import cell_of
from kairos.schema import Event
from kairos.stores.catalog import CatalogItem
from online.bandit import BanditRanker, context_features
from serving.app import create_app
from serving.deps import Services
from serving.impressions import FEEDBACK_COLLECTION, impression_documents, log_impressions
from serving.suggestions import build_suggestions
from tests.api_errors import assert_error

NOW = datetime.now(UTC)
T0 = NOW.timestamp()
LAT, LON = 40.7580, -73.9855
KM_LAT = 1 / 111.2

#: The mapping proposed for kairos/collections.yaml (the ``x-user`` anchor is the packaged one's).
FEEDBACK_MAPPING = """
version: 1
x-user: &user
  actor_type: user
  actor_id: [user_id, uid, user.id, user]
  ts: [ts, timestamp, recorded_at, created_at, time]
  location: [location, loc, position, geo, coords]
  lat: [lat, latitude]
  lon: [lon, lng, longitude]
  list_order: lnglat
collections:
  feedback:
    <<: *user
    location: [location, loc, geo, coords]  # "position" is the item's place in the response here
    kind_field: [kind]
    kind_map:
      impression: impression
      click: click
      save: save
      purchase: purchase
      dismiss: dismiss
    item_id: [item_id]
    category: [category]
    required: [item_id]
"""


def catalog_item(item_id: str, category: str, km_north: float, price: float, original: float | None = None) -> CatalogItem:
    lat = LAT + km_north * KM_LAT
    return CatalogItem(
        item_id=item_id, business_id=f"biz-{item_id}", kind="offer", category=category, title=f"{item_id} deal",
        text=None, lat=lat, lon=LON, cell=cell_of(lat, LON, 8), price=price, original_price=original,
        currency="USD", valid_from=T0 - 3600, valid_to=T0 + 7200, deleted=False, updated_ts=T0 - 7200,
    )


CATALOG = [
    catalog_item("spa_zen", "spa", 0.4, 31.0, 50.0),
    catalog_item("spa_mid", "spa", 1.0, 60.0),
    catalog_item("coffee_cup", "coffee", 0.2, 4.0, 5.0),
]


@dataclass
class Env:
    services: Services
    client: TestClient


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = Settings(home=tmp_path_factory.mktemp("kairos_feedback"), auth_required=False, feast_project=f"fb{uuid.uuid4().hex[:8]}")
    services = Services.start(settings)
    services.catalog.upsert(CATALOG)
    with TestClient(create_app(services=services)) as client:
        yield Env(services, client)
    services.close()


def stored(env: Env) -> list[Any]:
    return env.services.event_store.read(FEEDBACK_COLLECTION, None, 10_000)


def post(env: Env, **body: Any) -> Any:
    payload = {"request_id": uuid.uuid4().hex, "user_id": "u1", "item_id": "spa_zen", "kind": "click"} | body
    return env.client.post("/v1/feedback", json={k: v for k, v in payload.items() if v is not None})


# -- accepted feedback ---------------------------------------------------------------------------


def test_feedback_is_stored_with_the_items_category(env: Env) -> None:
    request_id = uuid.uuid4().hex
    response = post(env, request_id=request_id, kind="save", position=2, ts="2026-05-01T20:00:00+02:00")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["feedback_id"].startswith("fb-")
    assert datetime.fromisoformat(body["ts"]) == datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
    (record,) = [r for r in stored(env) if r.position == body["event_position"]]
    doc = record.document
    assert doc["_id"] == body["feedback_id"] and doc["request_id"] == request_id
    assert (doc["kind"], doc["item_id"], doc["user_id"], doc["position"]) == ("save", "spa_zen", "u1", 2)
    assert (doc["category"], doc["business_id"]) == ("spa", "biz-spa_zen")


@pytest.mark.parametrize("kind", ["impression", "click", "save", "purchase", "dismiss"])
def test_every_feedback_kind_decodes_to_its_canonical_event(env: Env, kind: str) -> None:
    before = datetime.now(UTC)
    response = post(env, kind=kind, item_id="coffee_cup", position=0)
    assert response.status_code == 202, response.text
    (record,) = [r for r in stored(env) if r.position == response.json()["event_position"]]
    event = decode(record, parse_mappings(FEEDBACK_MAPPING))
    assert isinstance(event, Event), event
    assert (event.kind, event.actor_type, event.actor_id, event.item_id, event.category) == (
        kind, "user", "u1", "coffee_cup", "coffee")
    assert before - timedelta(seconds=1) <= event.ts <= datetime.now(UTC)  # no ts: server time
    assert event.attrs["request_id"] == record.document["request_id"] and event.attrs["position"] == 0
    assert event.lat is None  # the position in a list is not a place
    packaged = load_mappings()
    if "feedback" in packaged:  # once kairos/collections.yaml carries the block, it must agree
        assert decode(record, packaged) == event


# -- rejected feedback ---------------------------------------------------------------------------


def test_unknown_item_is_404(env: Env) -> None:
    error = assert_error(post(env, item_id="nope"), 404, "unknown item", "nope")
    assert error["details"][0]["field"] == "item_id"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "like"}, "kind"),
        ({"kind": None}, "kind"),
        ({"request_id": None}, "request_id"),
        ({"request_id": "has spaces"}, "request_id"),
        ({"user_id": "x" * 65}, "user_id"),
        ({"item_id": "bad\nid"}, "item_id"),
        ({"item_id": ""}, "item_id"),
        ({"position": -1}, "position"),
        ({"position": "first"}, "position"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": 1714586400}, "ts"),
        ({"ts": "2999-01-01T00:00:00Z"}, "ts"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_feedback_is_422_naming_the_field(env: Env, change: dict[str, Any], field: str) -> None:
    payload = {"request_id": uuid.uuid4().hex, "user_id": "u1", "item_id": "spa_zen", "kind": "click"} | change
    payload = {k: v for k, v in payload.items() if v is not None}
    error = assert_error(env.client.post("/v1/feedback", json=payload), 422, field)
    assert any(d["field"] == field for d in error["details"])


def test_future_time_message_says_why(env: Env) -> None:
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert_error(post(env, ts=ahead), 422, "ts: must not be in the future")
    assert post(env, ts=(datetime.now(UTC) + timedelta(minutes=1)).isoformat()).status_code == 202  # skew


def test_malformed_json_is_422(env: Env) -> None:
    response = env.client.post("/v1/feedback", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 422, "body")


def test_store_failures_are_503_not_500(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(env.services.event_store, "append", broken)
    assert_error(post(env), 503, "event store")
    monkeypatch.setattr(env.services.catalog, "get", broken)
    assert_error(post(env), 503, "catalog")


# -- impressions ---------------------------------------------------------------------------------


def suggest(env: Env, user: dict[str, Any] | None) -> Any:
    return build_suggestions(env.services, "u2", LAT, LON, NOW, 3.0, 10, user)


def test_log_impressions_writes_one_document_per_item_with_its_features(env: Env) -> None:
    user = {"category_affinity": json.dumps({"spa": 0.8, "coffee": 0.2}), "discount_sensitivity": 0.9}
    response = suggest(env, user)
    assert len(response.items) == 3
    positions = log_impressions(env.services, response, user)
    assert len(positions) == 3
    docs = [r.document for r in stored(env) if r.position in positions]
    assert [d["position"] for d in docs] == [0, 1, 2]
    assert [d["item_id"] for d in docs] == [i.item_id for i in response.items]
    for doc, item in zip(docs, response.items, strict=True):
        assert doc["kind"] == "impression" and doc["request_id"] == response.request_id and doc["user_id"] == "u2"
        assert doc["score"] == item.score and doc["score_parts"] == item.score_parts
        assert doc["ranker"] == "TransparentRanker"
        assert doc["features"] == context_features(item.score_parts, item.distance_km, item.category, NOW, LON, 0.9)


def test_impressions_and_feedback_become_a_labelled_example(env: Env) -> None:
    """The loop's data path: suggestions -> impressions + a click via the API -> decoder -> reward."""
    response = suggest(env, None)
    positions = log_impressions(env.services, response)
    clicked = response.items[1]
    feedback = post(env, request_id=response.request_id, user_id="u2", item_id=clicked.item_id, position=1)
    assert feedback.status_code == 202
    mappings = parse_mappings(FEEDBACK_MAPPING)
    wanted = {*positions, feedback.json()["event_position"]}
    events = [decode(r, mappings) for r in stored(env) if r.position in wanted]
    assert all(isinstance(e, Event) for e in events)
    state = AttributionState()
    examples = [x for e in events for x in state.update(e, AttributionParams())]
    examples += state.flush(AttributionParams())
    rewards = {x.item_id: x.reward for x in examples}
    assert rewards == {i.item_id: int(i.item_id == clicked.item_id) for i in response.items}
    positive = next(x for x in examples if x.reward)
    assert positive.request_id == response.request_id and positive.position == 1 and positive.outcome == "click"
    bandit = BanditRanker()
    for example in examples:
        bandit.learn_one(example.features, example.reward)
    assert bandit.n_seen == len(response.items)


def test_log_impressions_never_fails_the_request(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    response = suggest(env, None)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(env.services.event_store, "append", broken)
    assert log_impressions(env.services, response) == []
    assert "could not log 3 impressions" in caplog.text


def test_impression_documents_need_a_request_and_a_user() -> None:
    with pytest.raises(ValueError, match="request_id"):
        impression_documents({"request_id": "", "user_id": "u", "items": []})
    with pytest.raises(ValueError, match="user_id"):
        impression_documents({"request_id": "r", "items": []})
    # A search response without a user: the caller names the user.
    docs = impression_documents({"request_id": "r", "items": [{"item_id": "i", "score": 1.0}]}, user_id="u9",
                                source="search")
    assert docs[0]["user_id"] == "u9" and docs[0]["source"] == "search" and "features" not in docs[0]
    item = {"item_id": "i", "score": 1.0, "score_parts": {"interest": 0.5}, "distance_km": 1.2, "category": "spa"}
    (doc,) = impression_documents({"request_id": "r", "at": NOW, "items": [item]}, user_id="u9", lon=LON)
    assert doc["features"] == context_features({"interest": 0.5}, 1.2, "spa", NOW, LON, None)


def test_api_serves_a_newly_published_bandit_without_restart(env: Env) -> None:
    """The flow publishes; the API's watcher swaps the model in within the staleness bound."""
    import time

    from online.bandit import LiveRanker
    from online.model_state import FileModelStateStore, ModelWatcher, prepare_bandit

    store = FileModelStateStore(env.services.settings.home / "models")
    watcher = ModelWatcher(store, "bandit", interval_s=0.1, prepare=prepare_bandit)
    original = env.services.ranker
    env.services.ranker = LiveRanker(watcher, min_examples=10)
    try:
        def top() -> dict[str, Any]:
            response = env.client.post("/v1/users/u5/location", json={"lat": LAT, "lon": LON})
            assert response.status_code == 200, response.text
            return response.json()["items"][0]

        first = top()
        assert first["item_id"] == "spa_zen" and "exploration" not in first["score_contributions"]
        # The flow learned that this crowd wants coffee, never spa deals, and published the model.
        bandit = BanditRanker(seed=1)
        response = suggest(env, None)
        for _ in range(100):
            for item in response.items:
                features = context_features(item.score_parts, item.distance_km, item.category, NOW, LON, None)
                bandit.learn_one(features, item.category == "coffee")
        published_at = time.monotonic()
        store.publish("bandit", bandit)
        while top()["item_id"] != "coffee_cup":
            assert time.monotonic() - published_at < 5.0, "the API did not pick up the new model in 5 s"
            time.sleep(0.05)
        served = top()
        assert set(served["score_contributions"]) >= {"interest", "distance", "exploration"}
        assert served["score"] == pytest.approx(sum(served["score_contributions"].values()), abs=1e-3)
        assert served["reason"]
    finally:
        env.services.ranker = original
        watcher.close()
