"""Drafting and publishing events over HTTP: generation, moderation verdicts, the review queue,
publishing into the event store (and decoding what was published), and every 4xx path.

The events routes never read Feast, so this module builds :class:`Services` without it (that
saves the Feast start-up); the catalog, event store and offline log are real, under a temporary
home. MiniLM is loaded once for the whole test session (``shared_encoder``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.decoding import decode, load_mappings
from kairos.geo import cell_of
from kairos.schema import DeadLetter, Event
from kairos.stores.catalog import CatalogItem, SqliteCatalog
from kairos.stores.event_store import SqliteEventStore
from kairos.stores.offline_log import OfflineLog
from serving.app import create_app
from serving.deps import Services
from serving.routers.moderation import ModerationDesk
from tests.api_errors import assert_error

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T0 = NOW.timestamp()
HOUR = 3600.0
LAT, LON = 40.7265, -73.9815


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def spa_item(i: int, price: float, original: float | None = None) -> CatalogItem:
    lat = LAT + 0.001 * i
    return CatalogItem(
        item_id=f"spa-{i}", business_id="b-spa", kind="service", category="spa",
        title="60-min deep tissue massage", text="60-min deep tissue massage — Lotus Spa, East Village. Book ahead.",
        lat=lat, lon=LON, cell=cell_of(lat, LON, 8), price=price, original_price=original, currency="USD",
        valid_from=T0 - 2 * HOUR, valid_to=T0 + 20 * HOUR, deleted=False, updated_ts=T0 - (i + 1) * HOUR,
        attrs={"starts_at": datetime.fromtimestamp(T0 - (i + 1) * HOUR, UTC).isoformat()},  # earlier slots
    )


def offline_events() -> list[Event]:
    """Three cafés whose "Freshly baked every morning." items were engaged with far more than others."""
    events = []
    for b in range(3):
        for note, clicks in (("Freshly baked every morning.", 8), ("Come by.", 1)):
            item_id = f"cafe{b}-{clicks}"
            events.append(Event(f"o-{item_id}", NOW - timedelta(days=2), "business", f"cafe{b}", "offer",
                                item_id=item_id, category="coffee", text=f"Latte deal — Cafe {b}. {note}"))
            for u in range(10):
                events.append(Event(f"v-{item_id}-{u}", NOW - timedelta(days=1), "user", f"u{u}", "view",
                                    item_id=item_id, category="coffee"))
            for u in range(clicks):
                events.append(Event(f"c-{item_id}-{u}", NOW - timedelta(days=1), "user", f"u{u}", "click",
                                    item_id=item_id, category="coffee"))
    return events


@dataclass
class Env:
    services: Services
    client: TestClient
    desk: ModerationDesk
    clock: Clock


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from online.embeddings import shared_encoder

    settings = Settings(home=tmp_path_factory.mktemp("kairos_events"), auth_required=False)
    services = Services(settings=settings, event_store=SqliteEventStore(settings.event_log_path),
                        catalog=SqliteCatalog(settings.catalog_path), features=None)
    services.catalog.upsert([spa_item(0, 95.0), spa_item(1, 100.0, 110.0), spa_item(2, 105.0), spa_item(3, 98.0)])
    OfflineLog(settings.offline_dir).write_events(offline_events())
    clock = Clock()
    desk = ModerationDesk(services, encoder=shared_encoder(), clock=clock)
    services.extras["moderation_desk"] = desk
    with TestClient(create_app(services=services)) as client:
        yield Env(services, client, desk, clock)
    services.close()


def body(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "business_id": "b-cafe",
        "kind": "offer",
        "category": "Café",
        "location": {"lat": LAT, "lon": LON},
        "valid_from": "2026-05-01T12:00:00Z",
        "valid_to": "2026-05-01T18:00:00Z",
        "original_price": 5.0,
        "reduced_price": 4.0,
        "keywords": ["latte", "pastry"],
        "business_name": "Blue Bean",
        "currency": "USD",
        "media": ["https://cdn.example.com/b-cafe/latte.jpg"],
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def draft(env: Env, **changes: Any) -> dict[str, Any]:
    response = env.client.post("/v1/events/draft", json=body(**changes))
    assert response.status_code == 200, response.text
    return response.json()


def publish(env: Env, draft_id: str, business_id: str = "b-cafe") -> Any:
    return env.client.post("/v1/events", json={"draft_id": draft_id, "business_id": business_id})


# -- drafting and publishing -----------------------------------------------------------------------


def test_draft_is_a_complete_event_and_publishing_appends_a_decodable_document(env: Env) -> None:
    out = draft(env, business_id="b-first", keywords=["flat white", "croissant"], timezone="America/New_York")
    assert out["status"] == "approved" and out["moderation"]["verdict"] == "approve"
    assert out["moderation"]["reasons"] == [] and out["next_step"].startswith("publish it")
    event = out["event"]
    assert event["title"] == "20% off flat white & croissant"
    assert "from Fri 1 May 08:00 to 14:00" in event["description"]  # New York time
    assert event["category"] == {"value": "coffee", "given": "Café", "method": "synonym", "similarity": None}
    assert (event["price"], event["original_price"], event["discount"], event["currency"]) == (4.0, 5.0, 0.2, "USD")
    assert event["cell"] == cell_of(LAT, LON, 8) and event["collection"] == "offers"
    assert {"flat white", "croissant", "coffee", "offer", "deal", "cafe"} <= set(event["tags"])
    assert datetime.fromisoformat(event["valid_to"]) == NOW + timedelta(hours=6)
    # Wording learned from the offline log: the well-engaged cafés' sentence.
    assert out["wording"]["learned_phrases"] == ["Freshly baked every morning."]
    assert event["description"].endswith("Freshly baked every morning.")

    response = publish(env, out["draft_id"], "b-first")
    assert response.status_code == 201, response.text
    published = response.json()
    assert published["item_id"] == event["item_id"] and published["collection"] == "offers"
    (record,) = [r for r in env.services.event_store.read("offers", None, 100)
                 if r.document["_id"] == event["item_id"]]
    assert record.position == published["event_position"] and record.document == published["document"]
    decoded = decode(record, load_mappings())
    assert not isinstance(decoded, DeadLetter), decoded
    assert (decoded.kind, decoded.item_id, decoded.actor_id, decoded.category) == (
        "offer", event["item_id"], "b-first", "coffee")
    assert (decoded.price, decoded.original_price, decoded.currency) == (4.0, 5.0, "USD")
    assert (decoded.lat, decoded.lon, decoded.cell) == (LAT, LON, event["cell"])
    assert decoded.valid_to == NOW + timedelta(hours=6) and decoded.ts == NOW
    assert decoded.text == f"{event['title']} — {event['description']}"
    assert decoded.attrs["draft_id"] == out["draft_id"] and decoded.attrs["item_kind"] == "offer"

    status = env.client.get(f"/v1/events/drafts/{out['draft_id']}", params={"business_id": "b-first"}).json()
    assert status["status"] == "published" and status["event_position"] == published["event_position"]
    assert env.desk.store.get_item(event["item_id"]).status == "live"


def test_a_new_category_label_maps_to_the_nearest_category(env: Env) -> None:
    out = draft(env, business_id="b-karaoke", kind="event", category="Karaoke bar", keywords=["open mic night"],
                original_price=None, reduced_price=None, price=12.0)
    assert out["event"]["category"]["value"] == "culture"
    assert out["event"]["category"]["method"] == "embedding" and out["event"]["category"]["similarity"] > 0
    assert out["document"]["category_label"] == "Karaoke bar" and out["event"]["starts_at"] is not None


def test_prohibited_draft_is_rejected_and_cannot_be_published(env: Env) -> None:
    out = draft(env, business_id="b-bad", keywords=["c0caine", "party"])
    assert out["status"] == "rejected" and out["moderation"]["verdict"] == "reject"
    assert out["moderation"]["primary_label"] == "prohibited"
    assert out["moderation"]["reasons"][0]["code"] == "content.prohibited"
    assert_error(publish(env, out["draft_id"], "b-bad"), 409, "was rejected", "cocaine")


def test_duplicate_goes_to_review_and_a_moderators_approval_makes_it_publishable(env: Env) -> None:
    first = draft(env, business_id="b-dup", keywords=["cold brew"])
    assert publish(env, first["draft_id"], "b-dup").status_code == 201
    again = draft(env, business_id="b-dup", keywords=["cold brew"], valid_from="2026-05-01T13:00:00Z")
    assert again["status"] == "pending_review" and again["moderation"]["primary_label"] == "duplicate"
    assert first["event"]["item_id"] in again["moderation"]["reasons"][0]["message"]
    assert_error(publish(env, again["draft_id"], "b-dup"), 409, "waiting for a moderator")

    queue = env.client.get("/v1/moderation/queue", params={"target_type": "draft"}).json()["entries"]
    (entry,) = [e for e in queue if e["target_id"] == again["draft_id"]]
    assert entry["source"] == "moderation" and entry["subject"]["verdict"] == "review"
    decision = env.client.post(f"/v1/moderation/queue/{entry['queue_id']}/decision",
                               json={"action": "approve", "moderator": "mod-1", "note": "two locations"})
    assert decision.status_code == 200, decision.text
    assert decision.json()["learned"] is True and "approved" in decision.json()["effects"][0]
    assert publish(env, again["draft_id"], "b-dup").status_code == 201


def test_price_history_from_the_catalog_catches_an_inflated_original(env: Env) -> None:
    out = draft(env, business_id="b-spa", kind="service", category="spa", keywords=["deep tissue massage"],
                original_price=300.0, reduced_price=99.0, valid_from="2026-05-01T15:00:00Z", valid_to=None)
    assert out["moderation"]["verdict"] == "reject" and out["moderation"]["primary_label"] == "price_fraud"
    codes = {r["code"] for r in out["moderation"]["reasons"]}
    assert "price.original_above_history" in codes and "price.inflated_original_area" in codes
    history = next(r for r in out["moderation"]["reasons"] if r["code"] == "price.original_above_history")
    assert history["evidence"]["highest_regular"] == 110.0
    honest = draft(env, business_id="b-spa", kind="service", category="spa", keywords=["deep tissue massage"],
                   original_price=105.0, reduced_price=89.0, valid_from="2026-05-01T19:00:00Z", valid_to=None)
    assert honest["moderation"]["verdict"] == "approve", honest["moderation"]


def test_bad_media_is_a_moderation_finding_not_an_input_error(env: Env) -> None:
    out = draft(env, business_id="b-media", media=["http://cdn.example.com/a.jpg",
                                                   {"url": "https://cdn.example.com/b.jpg", "content_type": "image/jpeg",
                                                    "size_bytes": 50 * 1024 * 1024}])
    assert out["moderation"]["verdict"] == "reject"
    assert {r["code"] for r in out["moderation"]["reasons"]} == {"media.scheme", "media.size"}
    assert out["event"]["media"][1]["size_bytes"] == 50 * 1024 * 1024


def test_suspended_business_can_neither_draft_nor_publish(env: Env) -> None:
    ok = draft(env, business_id="b-susp", keywords=["espresso"])
    response = env.client.post("/v1/moderation/suspensions",
                               json={"actor_type": "business", "actor_id": "b-susp", "reason": "fraud ring", "days": 3})
    assert response.status_code == 201 and response.json()["until"] is not None
    assert_error(env.client.post("/v1/events/draft", json=body(business_id="b-susp")), 403, "suspended", "fraud ring")
    assert_error(publish(env, ok["draft_id"], "b-susp"), 403, "suspended")
    assert env.client.delete("/v1/moderation/suspensions/business/b-susp").status_code == 200
    assert publish(env, ok["draft_id"], "b-susp").status_code == 201


def test_publish_and_status_errors(env: Env) -> None:
    out = draft(env, business_id="b-own", keywords=["mocha"])
    assert_error(publish(env, "dr-0000000000000000"), 404, "unknown draft")
    assert_error(publish(env, out["draft_id"], "b-other"), 403, "another business")
    assert_error(env.client.post("/v1/events", json={"draft_id": "nope", "business_id": "b-own"}), 422, "draft_id")
    assert_error(env.client.post("/v1/events", json={"draft_id": out["draft_id"]}), 422, "business_id")
    assert publish(env, out["draft_id"], "b-own").status_code == 201
    assert_error(publish(env, out["draft_id"], "b-own"), 409, "already published")
    path = f"/v1/events/drafts/{out['draft_id']}"
    assert_error(env.client.get(path, params={"business_id": "b-other"}), 403)
    assert_error(env.client.get(path), 422, "business_id")
    assert_error(env.client.get("/v1/events/drafts/dr-zz", params={"business_id": "b-own"}), 422, "draft_id")


def test_a_draft_that_ended_cannot_be_published(env: Env) -> None:
    out = draft(env, business_id="b-late", keywords=["iced tea"], valid_to="2026-05-01T13:00:00Z")
    env.clock.now = T0 + 2 * HOUR
    try:
        assert_error(publish(env, out["draft_id"], "b-late"), 409, "ended", "draft it again")
    finally:
        env.clock.now = T0


@pytest.mark.parametrize(
    ("changes", "status", "fragments"),
    [
        ({"surprise": 1}, 422, ("surprise",)),
        ({"kind": "party"}, 422, ("kind",)),
        ({"discount": 1.5, "base_price": 10.0, "original_price": None, "reduced_price": None}, 422, ("discount",)),
        ({"reduced_price": 9.0}, 422, ("reduced_price", "above original_price")),
        ({"price": 3.0}, 422, ("one way of pricing",)),
        ({"original_price": None, "reduced_price": None}, 422, ("price", "needs a price")),
        ({"valid_from": "2026-04-30T08:00:00Z", "valid_to": "2026-04-30T10:00:00Z"}, 422, ("valid_to", "past")),
        ({"valid_to": "tomorrow"}, 422, ("valid_to", "ISO-8601")),
        ({"location": {"lat": 95, "lon": 0}}, 422, ("location.lat",)),
        ({"location": None}, 422, ("location", "required")),
        ({"media": ["not a url"]}, 422, ("media[0].url", "absolute URL")),
        ({"media": ["https://cdn.example.com/a.jpg"] * 11}, 422, ("media",)),
        ({"keywords": [f"k{i}" for i in range(11)]}, 422, ("keywords",)),
        ({"keywords": ["   "]}, 422, ("keywords[0]",)),
        ({"timezone": "Mars/Olympus"}, 422, ("timezone", "IANA")),
        ({"currency": "usd"}, 422, ("currency",)),
        ({"business_id": "bad id!"}, 422, ("business_id",)),
        ({"category": None, "keywords": []}, 422, ("category",)),
        ({"original_price": -5.0}, 422, ("original_price",)),
    ],
)
def test_bad_keys_are_4xx_naming_the_field(env: Env, changes: dict[str, Any], status: int,
                                           fragments: tuple[str, ...]) -> None:
    assert_error(env.client.post("/v1/events/draft", json=body(**changes)), status, *fragments)


def test_malformed_json_is_a_422(env: Env) -> None:
    response = env.client.post("/v1/events/draft", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 422, "JSON")


def test_openapi_documents_the_routes(env: Env) -> None:
    paths = env.client.get("/openapi.json").json()["paths"]
    assert {"/v1/events/draft", "/v1/events", "/v1/events/drafts/{draft_id}", "/v1/reports",
            "/v1/moderation/queue", "/v1/moderation/queue/{queue_id}/decision", "/v1/moderation/decisions",
            "/v1/moderation/suspensions", "/v1/moderation/suspensions/{actor_type}/{actor_id}"} <= set(paths)
    assert "409" in paths["/v1/events"]["post"]["responses"]


def test_an_event_store_outage_is_a_503_and_the_draft_can_be_published_later(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = draft(env, business_id="b-outage", keywords=["hot chocolate"])

    def down(*args: Any, **kwargs: Any) -> list[str]:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(env.services.event_store, "append", down)
        assert_error(publish(env, out["draft_id"], "b-outage"), 503, "event store")
    assert env.desk.store.get_draft(out["draft_id"]).status == "approved"
    assert publish(env, out["draft_id"], "b-outage").status_code == 201
    assert not env.desk.store.claim_draft(out["draft_id"], "approved", "published")  # claimed once
