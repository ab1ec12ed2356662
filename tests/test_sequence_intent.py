"""Serving the promoted next-category GRU: history from the offline log, the linear pool with the
online model, and promotions / rollbacks picked up without restart under concurrent requests."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.registry import ModelRegistry
from kairos.schema import Event
from kairos.stores.offline_log import OfflineLog
from offline.sequence_model import Example, SequenceConfig, SequenceModel
from online.model_state import open_model_state
from online.next_intent import INTENT_MODEL, IntentLearner
from online.sequence_intent import HISTORY_KINDS, SEQUENCE_MODEL, EngagementHistory, SequenceIntent, pool
from serving.app import create_app
from serving.deps import Services
from serving.routers.users import sequence_intent

LAT, LON = 40.7580, -73.9855
T0 = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)
CATEGORIES = ["coffee", "food", "spa"]


def event(user: str, minutes_before: float, kind: str, category: str | None, event_id: str | None = None) -> Event:
    return Event(event_id=event_id or uuid.uuid4().hex, ts=T0 - timedelta(minutes=minutes_before), actor_type="user",
                 actor_id=user, kind=kind, category=category, lat=LAT, lon=LON)


def train_gru(target: str) -> SequenceModel:
    """A GRU that learned "after coffee, coffee, coffee comes ``target``" (and nothing else)."""
    model = SequenceModel(CATEGORIES, SequenceConfig(epochs=40, batch_size=16, seed=1))
    examples = [Example(["coffee"] * n, hour, target) for n in range(1, 6) for hour in range(0, 24, 3)]
    model.fit(examples)
    return model


def publish_gru(registry: ModelRegistry, target: str) -> str:
    staging = registry.staging(SEQUENCE_MODEL)
    train_gru(target).save(staging)
    return registry.publish(SEQUENCE_MODEL, staging, {"metrics": {}, "parent": "base"})


# -- units -------------------------------------------------------------------------------------------


def test_history_kinds_match_the_training_set() -> None:
    from offline.training_sets import HISTORY_KINDS as TRAINING_KINDS

    assert tuple(HISTORY_KINDS) == tuple(TRAINING_KINDS)


def test_history_reads_new_part_files_once_dedups_and_filters(tmp_path: Path) -> None:
    log = OfflineLog(tmp_path)
    history = EngagementHistory(log.events_dir, keep=4)
    assert history.refresh() == 0  # no log yet
    dup = event("u1", 30, "click", "spa", event_id="e-dup")
    log.write_events([event("u1", 50, "view", "coffee"), dup, event("u1", 40, "search", "food"),
                      event("u1", 20, "location", "gym"), event("u2", 10, "purchase", "food")])
    assert history.refresh() == 3  # the search and the check-in are not engagements
    log.write_events([dup, event("u1", 10, "save", "food")])  # at-least-once: the click again
    assert history.refresh() == 1
    assert history.refresh() == 0  # nothing new
    assert history.before("u1", T0.timestamp(), 10) == ["coffee", "spa", "food"]
    # Strictly before the moment asked about, and only the last n.
    assert history.before("u1", (T0 - timedelta(minutes=10)).timestamp(), 10) == ["coffee", "spa"]
    assert history.before("u1", T0.timestamp(), 1) == ["food"]
    assert history.before("nobody", T0.timestamp(), 10) == []
    for n in range(6):
        history.add("u3", float(n), CATEGORIES[n % 3])
    assert len(history.before("u3", 100.0, 10)) == 4  # bounded per user


def test_pool_is_a_normalised_linear_mixture() -> None:
    river = {"coffee": 0.6, "food": 0.4}
    gru = {"food": 0.2, "spa": 0.8}
    mixed = pool(river, gru, 0.5)
    assert mixed == pytest.approx({"coffee": 0.3, "food": 0.3, "spa": 0.4})
    assert sum(mixed.values()) == pytest.approx(1.0)
    assert pool(river, None, 0.5) == river
    assert pool({}, gru, 0.5) == gru
    assert pool(river, gru, 0.0) == river
    assert pool(river, gru, 1.0) == gru


def test_component_follows_pointer_and_skips_a_broken_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    history = EngagementHistory(tmp_path / "offline" / "events")
    for n in range(3):
        history.add("u1", T0.timestamp() - 60 * (n + 1), "coffee")
    history.add("u2", T0.timestamp() - 60, "coffee")  # too little history
    component = SequenceIntent(tmp_path / "models", history, check_interval_s=0.0, min_history=3)
    try:
        assert component.predict("u1", T0.timestamp()) is None  # nothing promoted
        v1 = publish_gru(registry, "spa")
        registry.promote(SEQUENCE_MODEL, v1)
        assert component.check(wait=True)
        version, probabilities = component.predict("u1", T0.timestamp())
        assert version == v1 and max(probabilities, key=probabilities.get) == "spa"
        assert component.predict("u2", T0.timestamp()) is None

        staging = registry.staging(SEQUENCE_MODEL)
        (staging / "model.pt").write_bytes(b"not a state dict")
        (staging / "vocab.json").write_text('{"categories": ["spa"], "config": {}}')
        broken = registry.publish(SEQUENCE_MODEL, staging, {"metrics": {}})
        registry.promote(SEQUENCE_MODEL, broken)
        component.check(wait=True)
        assert component.version == v1  # the old version keeps serving
        assert component.check() is False  # and the broken one is not retried until the pointer moves

        registry.rollback(SEQUENCE_MODEL)
        registry.rollback(SEQUENCE_MODEL)
        component.check()
        assert component.version is None and component.predict("u1", T0.timestamp()) is None

        # One short sequence: well under a millisecond of model time on one thread.
        registry.promote(SEQUENCE_MODEL, v1)
        component.check(wait=True)
        timings = []
        for _ in range(300):
            start = time.perf_counter()
            component.predict("u1", T0.timestamp())
            timings.append(time.perf_counter() - start)
        assert statistics.median(timings) < 2e-3, f"median {statistics.median(timings) * 1e3:.2f} ms"
    finally:
        component.close()


# -- through the API ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("kzF_sequence_intent")
    registry = ModelRegistry(home / "models")
    versions = [publish_gru(registry, "spa"), publish_gru(registry, "food")]
    settings = Settings(home=home, auth_required=False, ranker="transparent", feast_project=f"s{uuid.uuid4().hex[:8]}",
                        sequence_model_check_s=0.05, sequence_history_refresh_s=0.05, sequence_min_history=3)
    # The coffee regular has engaged three times (a search does not count); the newcomer once.
    OfflineLog(settings.offline_dir).write_events(
        [event("regular", m, "click", "coffee") for m in (90, 60, 30)]
        + [event("regular", 20, "search", "spa"), event("newcomer", 30, "click", "coffee")])
    services = Services.start(settings)
    try:
        with TestClient(create_app(services=services)) as client:
            yield {"client": client, "services": services, "registry": registry, "versions": versions}
    finally:
        services.close()


def post(client: TestClient, user: str) -> Any:
    return client.post(f"/v1/users/{user}/location", json={"lat": LAT, "lon": LON, "ts": T0.isoformat()})


def wait_for_model(client: TestClient, user: str, label: str | None, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = post(client, user).json()
        if body["intent_model"] == label:
            return body
        assert time.monotonic() < deadline, f"still {body['intent_model']!r}, expected {label!r}"
        time.sleep(0.05)


def test_nothing_promoted_leaves_the_online_model_alone(env) -> None:
    body = post(env["client"], "regular").json()
    # No online model published and no GRU promoted: no intent, as before the GRU existed.
    assert body["intent"] == [] and body["intent_model"] is None and body["you_may_want"] is None


def test_promotion_and_rollback_under_concurrent_requests(env) -> None:
    client, registry = env["client"], env["registry"]
    v_spa, v_food = env["versions"]
    errors: list[str] = []
    seen: set[str | None] = set()
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            response = post(client, "regular")
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
            else:
                seen.add(response.json()["intent_model"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        registry.promote(SEQUENCE_MODEL, v_spa)
        body = wait_for_model(client, "regular", f"gru:{v_spa}")
        assert body["intent"][0]["category"] == "spa" and body["you_may_want"] == "you may want a spa now"
        registry.promote(SEQUENCE_MODEL, v_food)
        body = wait_for_model(client, "regular", f"gru:{v_food}")
        assert body["intent"][0]["category"] == "food"
        registry.rollback(SEQUENCE_MODEL)
        body = wait_for_model(client, "regular", f"gru:{v_spa}")
        assert body["intent"][0]["category"] == "spa"
        registry.rollback(SEQUENCE_MODEL)
        wait_for_model(client, "regular", None)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []
    assert {f"gru:{v_spa}", f"gru:{v_food}", None} <= seen


def test_gru_pools_with_the_online_model_and_needs_history(env) -> None:
    client, registry, services = env["client"], env["registry"], env["services"]
    v_spa = env["versions"][0]
    learner = IntentLearner()
    for day in range(5):  # everyone's online model says "food"
        for n in range(3):
            learner.learn_event(Event(event_id=f"r{day}{n}", ts=T0 - timedelta(days=day + 1, minutes=n),
                                      actor_type="user", actor_id=f"other{n}", kind="click", category="food",
                                      lat=LAT, lon=LON))
    open_model_state(services.settings).publish(INTENT_MODEL, learner)
    registry.promote(SEQUENCE_MODEL, v_spa)
    try:
        body = wait_for_model(client, "regular", f"gru:{v_spa}+river")
        probabilities = {i["category"]: i["probability"] for i in body["intent"]}
        # Half the mass from each: the GRU's spa and the online model's food both show.
        assert probabilities["spa"] > 0.3 and probabilities["food"] > 0.3
        # One engagement is not enough history for the GRU: the online model alone.
        newcomer = post(client, "newcomer").json()
        assert newcomer["intent_model"] == "river" and newcomer["intent"][0]["category"] == "food"
    finally:
        registry.rollback(SEQUENCE_MODEL)
        sequence_intent(services).check()


def test_new_engagements_reach_the_gru_without_restart(env) -> None:
    client, registry, services = env["client"], env["registry"], env["services"]
    v_spa = env["versions"][0]
    registry.promote(SEQUENCE_MODEL, v_spa)
    try:
        # "latecomer" has no history yet: not the GRU. Then the flow writes three engagements.
        wait_for_model(client, "regular", f"gru:{v_spa}+river")
        assert post(client, "latecomer").json()["intent_model"] == "river"
        OfflineLog(services.settings.offline_dir).write_events(
            [event("latecomer", m, "view", "coffee") for m in (15, 10, 5)])
        wait_for_model(client, "latecomer", f"gru:{v_spa}+river")
    finally:
        registry.rollback(SEQUENCE_MODEL)
        sequence_intent(services).check()
