"""User reports and the admin side of moderation over HTTP: thresholds that move items to review
(and out of suggestions), the queue, decisions, strikes and suspensions, what the classifier
learns, and that a restarted desk remembers it. Real stores (Feast included) under a temporary home.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.decoding import decode, load_mappings
from kairos.features import VIEWS
from kairos.geo import cell_of
from kairos.schema import Event
from kairos.stores.catalog import CatalogItem
from kairos.stores.moderation_store import ItemRecord
from serving.app import create_app
from serving.deps import Services
from serving.routers.moderation import ModerationDesk
from tests.api_errors import assert_error

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T0 = NOW.timestamp()
HOUR, DAY = 3600.0, 86_400.0
LAT, LON = 40.7580, -73.9855
USERS = ("u1", "u2", "u3", "u4", "u5", "troll")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def catalog_item(item_id: str, business_id: str, title: str) -> CatalogItem:
    return CatalogItem(
        item_id=item_id, business_id=business_id, kind="offer", category="food", title=title,
        text=f"{title} — {business_id}. Come by.", lat=LAT, lon=LON, cell=cell_of(LAT, LON, 8), price=10.0,
        original_price=None, currency="USD", valid_from=T0 - HOUR, valid_to=T0 + 10 * HOUR, deleted=False,
        updated_ts=T0 - HOUR,
    )


ITEMS = [
    catalog_item("item-a", "b-a", "Pizza night"),
    catalog_item("item-b", "b-b", "Sushi platter"),
    catalog_item("item-c", "b-c", "Taco Tuesday"),
    catalog_item("item-d", "b-d", "Burger deal"),
    *(catalog_item(f"rep-{i}", "b-rep", f"Earn money fast {i}") for i in range(3)),
]


def user_row(user_id: str) -> dict[str, Any]:
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    row = {f.name: defaults[f.dtype] for f in VIEWS["user_activity"].fields}
    row.update(user_id=user_id, category_affinity="{}", as_of=T0 - 60)
    return row


@dataclass
class Env:
    services: Services
    client: TestClient
    desk: ModerationDesk
    clock: Clock


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from online.embeddings import shared_encoder

    settings = Settings(home=tmp_path_factory.mktemp("kairos_reports"), auth_required=False, feast_project=f"rep{uuid.uuid4().hex[:8]}")
    services = Services.start(settings)
    services.catalog.upsert(ITEMS)
    services.features.write("user_activity", [user_row(u) for u in USERS])
    clock = Clock()
    desk = ModerationDesk(services, encoder=shared_encoder(), clock=clock)
    services.extras["moderation_desk"] = desk
    with TestClient(create_app(services=services)) as client:
        yield Env(services, client, desk, clock)
    services.close()


def report(env: Env, reporter: str, target: str, reason: str = "spam", target_type: str = "item", **extra: Any) -> Any:
    return env.client.post("/v1/reports", json={"reporter_id": reporter, "target_type": target_type,
                                                "target_id": target, "reason": reason, **extra})


def decide(env: Env, queue_id: str, action: str, **extra: Any) -> Any:
    return env.client.post(f"/v1/moderation/queue/{queue_id}/decision",
                           json={"action": action, "moderator": "mod-1", **extra})


def reach_review(env: Env, item_id: str, reporters: tuple[str, ...], reason: str = "spam") -> None:
    """Enough distinct reports to queue the item (reporters who already reported it are fine)."""
    for reporter in reporters:
        assert report(env, reporter, item_id, reason=reason).status_code in (201, 409)


def entry_for(env: Env, target_id: str, status: str = "open") -> dict[str, Any]:
    entries = env.client.get("/v1/moderation/queue", params={"status": status, "limit": 200}).json()["entries"]
    (entry,) = [e for e in entries if e["target_id"] == target_id]
    return entry


# -- reports ---------------------------------------------------------------------------------------


def test_a_report_below_the_threshold_is_recorded_without_action(env: Env) -> None:
    response = report(env, "u1", "item-d", details="looks fake")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["report_id"].startswith("rp-") and body["status"] == "open"
    assert (body["distinct_reporters"], body["threshold"], body["action"], body["queue_id"]) == (1, 3, "none", None)
    assert "item-d" not in env.desk.store.suppressed_item_ids()
    # The report is an event too: a "report" interaction the flow decodes like any other.
    (record,) = [r for r in env.services.event_store.read("interactions", None, 1000)
                 if r.document["_id"] == body["report_id"]]
    event = decode(record, load_mappings())
    assert isinstance(event, Event), event
    assert (event.kind, event.actor_id, event.item_id, event.ts) == ("report", "u1", "item-d", NOW)
    assert event.attrs["reason"] == "spam"


def test_three_reporters_move_an_item_to_review_and_teach_the_classifier(env: Env) -> None:
    before = env.desk.store.count_examples()
    for reporter in ("u1", "u2"):
        assert report(env, reporter, "item-a").json()["action"] == "none"
    third = report(env, "u3", "item-a", reason="scam").json()
    assert third["action"] == "item_in_review" and third["distinct_reporters"] == 3
    assert "item-a" in env.desk.store.suppressed_item_ids()
    entry = entry_for(env, "item-a")
    assert entry["queue_id"] == third["queue_id"] and entry["source"] == "reports"
    assert entry["reports"] == {"spam": 2, "scam": 1} and entry["business_id"] == "b-a"
    assert entry["subject"]["title"] == "Pizza night" and entry["subject"]["status"] == "review"
    assert env.desk.store.count_examples() == before + 1  # agreeing reporters taught "spam", weakly
    # A fourth report joins the same entry.
    assert report(env, "u4", "item-a").json()["queue_id"] == third["queue_id"]


def test_severe_reports_need_fewer_reporters(env: Env) -> None:
    assert report(env, "u1", "item-b", reason="prohibited").json()["action"] == "none"
    second = report(env, "u2", "item-b", reason="violence").json()
    assert (second["action"], second["threshold"]) == ("item_in_review", 2)


def test_report_errors(env: Env) -> None:
    assert report(env, "u5", "item-c").status_code == 201
    assert_error(report(env, "u5", "item-c"), 409, "already reported")
    assert_error(report(env, "u1", "no-such-item"), 404, "unknown item")
    assert_error(report(env, "u1", "ghost", target_type="user"), 404, "unknown user")
    assert_error(report(env, "u1", "u1", target_type="user", reason="harassment"), 422, "themselves")
    assert_error(report(env, "u1", "item-c", reason="boring"), 422, "reason")
    assert_error(report(env, "u1", "item-c", target_type="shop"), 422, "target_type")
    assert_error(report(env, "u1", "item-c", mood="angry"), 422, "mood")
    assert_error(report(env, "u 1", "item-c"), 422, "reporter_id")
    assert_error(report(env, "u2", "item-c", details="x" * 501), 422, "details")


# -- decisions -------------------------------------------------------------------------------------


def test_a_moderator_keeps_an_item_and_its_reports_are_dismissed(env: Env) -> None:
    reach_review(env, "item-c", ("u1", "u2", "u3"))
    entry = entry_for(env, "item-c")
    response = decide(env, entry["queue_id"], "approve", note="a real taco night")
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["learned"] is True and "item live again" in out["effects"][0]
    assert "item-c" not in env.desk.store.suppressed_item_ids()
    assert {r.status for r in env.desk.store.reports_on("item", "item-c")} == {"dismissed"}
    assert_error(decide(env, entry["queue_id"], "reject"), 409, "already decided")
    assert entry_for(env, "item-c", status="closed")["closed_at"] is not None


def test_removals_strike_the_business_and_the_third_suspends_it(env: Env) -> None:
    effects = []
    for i in range(3):
        item_id = f"rep-{i}"
        report(env, "u1", item_id, reason="prohibited")
        assert report(env, "u2", item_id, reason="prohibited").json()["action"] == "item_in_review"
        response = decide(env, entry_for(env, item_id)["queue_id"], "reject", label="spam")
        assert response.status_code == 200, response.text
        assert response.json()["label"] == "spam"
        effects.append(response.json()["effects"])
    assert "strike 1 of 3 for business b-rep" in effects[0]
    assert "business b-rep suspended after 3 strikes" in effects[2]
    store = env.desk.store
    assert "b-rep" in store.suspended_business_ids() and {"rep-0", "rep-1", "rep-2"} <= store.suppressed_item_ids()
    assert {r.status for r in store.reports_on("item", "rep-0")} == {"upheld"}
    suspended = env.client.get("/v1/moderation/suspensions").json()
    assert any(s["actor_id"] == "b-rep" and "3 strikes" in s["reason"] for s in suspended)
    draft = {"business_id": "b-rep", "kind": "offer", "category": "food", "location": {"lat": LAT, "lon": LON},
             "price": 5.0, "keywords": ["tacos"]}
    assert_error(env.client.post("/v1/events/draft", json=draft), 403, "suspended")
    decided = env.client.get("/v1/moderation/decisions", params={"target_id": "rep-2"}).json()
    assert [(d["action"], d["label"], d["moderator"]) for d in decided] == [("reject", "spam", "mod-1")]
    # Reports on an item already taken down change nothing.
    late = report(env, "u3", "rep-0", reason="prohibited").json()
    assert (late["action"], late["queue_id"]) == ("none", None)


def test_reject_label_defaults_to_the_reports(env: Env) -> None:
    reach_review(env, "item-b", ("u3", "u4"), reason="prohibited")
    entry = entry_for(env, "item-b")  # severe reports only
    out = decide(env, entry["queue_id"], "reject").json()
    assert out["label"] in ("prohibited", "violence") and out["learned"] is True
    assert "item-b" in env.desk.store.suppressed_item_ids()


def test_reported_users_are_queued_and_can_be_suspended_and_reinstated(env: Env) -> None:
    for reporter in ("u1", "u2"):
        assert report(env, reporter, "troll", target_type="user", reason="harassment").json()["action"] == "none"
    third = report(env, "u3", "troll", target_type="user", reason="harassment").json()
    assert third["action"] == "queued_for_review"
    entry = entry_for(env, "troll")
    assert entry["target_type"] == "user" and entry["reports"] == {"harassment": 3}
    assert_error(decide(env, entry["queue_id"], "approve"), 422, "dismiss or suspend")
    out = decide(env, entry["queue_id"], "suspend", suspend_days=7, note="repeated harassment").json()
    assert "user suspended until" in out["effects"][0]
    assert "troll" in env.desk.store.suspended_user_ids(at=env.clock.now)
    assert_error(report(env, "troll", "item-d"), 403, "suspended", "repeated harassment")
    env.clock.now = T0 + 8 * DAY  # the suspension has run out
    try:
        assert "troll" not in env.desk.store.suspended_user_ids(at=env.clock.now)
        assert report(env, "troll", "item-d").status_code == 201
    finally:
        env.clock.now = T0
    assert env.client.delete("/v1/moderation/suspensions/user/troll").status_code == 200
    assert_error(env.client.delete("/v1/moderation/suspensions/user/troll"), 404, "not suspended")


def test_decision_and_queue_errors(env: Env) -> None:
    assert_error(decide(env, "q-0000000000000000", "approve"), 404, "unknown queue entry")
    assert_error(decide(env, "nope", "approve"), 422, "queue_id")
    reach_review(env, "item-d", ("u1", "u2", "u3"))
    queue_id = entry_for(env, "item-d")["queue_id"]
    assert_error(decide(env, queue_id, "approve", suspend_days=3), 422, "suspend_days")
    assert_error(decide(env, queue_id, "reject", label="rude"), 422, "label")
    assert_error(decide(env, queue_id, "ban"), 422, "action")
    assert_error(env.client.post(f"/v1/moderation/queue/{queue_id}/decision", json={"action": "approve"}), 422,
                 "moderator")
    assert_error(env.client.get("/v1/moderation/queue", params={"status": "bogus"}), 422, "status")
    assert_error(env.client.get("/v1/moderation/queue", params={"limit": 0}), 422, "limit")
    assert_error(env.client.post("/v1/moderation/suspensions", json={"actor_type": "robot", "actor_id": "x",
                                                                   "reason": "r"}), 422, "actor_type")


# -- what the desk learns and remembers ------------------------------------------------------------


def test_items_nobody_complained_about_teach_ok_once_the_report_window_passes(env: Env) -> None:
    store = env.desk.store
    vector = np.eye(384, dtype=np.float32)[7]
    for item_id in ("quiet", "noisy"):
        store.upsert_item(ItemRecord(item_id=item_id, business_id="b-q", status="live", reason=None,
                                     updated_ts=T0 - 10 * DAY, vector=vector, text_vector=vector,
                                     published_ts=T0 - 10 * DAY))
    store.add_report("u1", "item", "noisy", "spam", None, T0 - 9 * DAY)
    ok_before = env.desk.moderator.classifier.counts["ok"]
    assert env.desk.settle(T0) == 1
    assert env.desk.moderator.classifier.counts["ok"] == pytest.approx(ok_before + 0.1)
    assert env.desk.settle(T0) == 0  # each item once


def test_a_restarted_desk_rebuilds_the_classifier_and_the_duplicate_index(env: Env) -> None:
    store = env.desk.store
    vector = np.eye(384, dtype=np.float32)[3]
    store.upsert_item(ItemRecord(item_id="pub-1", business_id="b-x", status="live", reason=None, updated_ts=T0,
                                 vector=vector, published_ts=T0 - HOUR, kind="offer"))
    restarted = ModerationDesk(env.services, store=store, encoder=env.desk.encoder, clock=env.clock)
    assert restarted.moderator.classifier.counts == pytest.approx(env.desk.moderator.classifier.counts)
    assert sum(restarted.moderator.classifier.counts.values()) > 0
    assert "pub-1" in restarted.moderator.duplicates
