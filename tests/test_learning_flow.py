"""The flow feeds the per-user learners: taste embeddings land beside the features, the next-intent
model is published, and a location change comes back with the predicted intent."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from fastapi.testclient import TestClient

from flows.runner import run_flow
from kairos.config import Settings
from kairos.simulate import SimConfig, simulate
from kairos.stores.event_store import open_event_store
from online.model_state import open_model_state
from online.next_intent import INTENT_MODEL
from online.user_embeddings import open_user_embedding_store
from serving.app import create_app


def test_learners_in_the_flow_and_intent_on_location_change(tmp_path):
    settings = Settings(home=tmp_path, feast_project="learning_flow", auth_required=False, ranker="transparent")
    simulate(open_event_store(settings), SimConfig(seed=4, days=1, n_users=60, n_businesses=30), settings.sim_dir)
    run_flow(settings, progress=False)

    store = open_user_embedding_store(settings)
    states = store.read([f"u{i:04d}" for i in range(1, 61)])
    learned = [s for s in states if s is not None]
    assert len(learned) >= 30
    norms = [float(np.linalg.norm(s.total / s.weight)) for s in learned]
    assert all(0.05 < n <= 1.0 + 1e-6 for n in norms)  # decayed averages of unit vectors

    from online.market_model import MarketModel, market_model_path

    market = MarketModel.load(market_model_path(settings))  # checkpointed by the flow for the API
    assert market.summary()

    published = open_model_state(settings).load(INTENT_MODEL)
    assert published is not None
    _, learner = published
    assert learner.histories

    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/users/u0001/location",
                               json={"lat": 40.7549, "lon": -73.984, "ts": datetime.now(UTC).isoformat()})
        assert response.status_code == 200, response.text
        body = response.json()
    assert len(body["intent"]) == 3
    probabilities = [i["probability"] for i in body["intent"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0 + 1e-6


def test_learners_can_run_as_a_flow_of_their_own(tmp_path):
    from bytewax.testing import run_main

    from flows.dataflow import build_learning_flow
    from online.market_model import market_model_path

    settings = Settings(home=tmp_path, feast_project="learning_apart", learners=False, recovery=False)
    simulate(open_event_store(settings), SimConfig(seed=4, days=1, n_users=40, n_businesses=20), settings.sim_dir)
    run_flow(settings, progress=False)
    assert open_model_state(settings).load(INTENT_MODEL) is None  # the feature flow learned nothing
    assert not market_model_path(settings).exists()

    run_main(build_learning_flow(settings))
    assert open_model_state(settings).load(INTENT_MODEL) is not None
    assert market_model_path(settings).exists()
    assert any(s is not None for s in open_user_embedding_store(settings).read([f"u{i:04d}" for i in range(1, 41)]))


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_resumed_learning_flow_learns_from_new_feedback(tmp_path):
    """Recovery on: the learning flow runs a simulated day to its end, then resumes in follow mode
    with a short attribution window while impressions and feedback arrive at the wall clock's time.
    The simulated day reaches past now (it covers the whole of today), and the recovered
    attribution state had its watermark there: every new impression was dropped as too late and the
    resumed bandit learned nothing (the regression this guards)."""
    from bytewax.testing import run_main

    from flows.dataflow import build_learning_flow
    from flows.runner import learning_recovery_dir, recovery_config, start_learning_flow, stop
    from serving.impressions import FEEDBACK_COLLECTION

    now = datetime.now(UTC)
    settings = Settings(home=tmp_path, feast_project="learning_resume", learners=False, epoch_interval_s=0.5)
    # The simulated day ends 12 h from now, like a bench's (today's) day run in the morning.
    simulate(open_event_store(settings), SimConfig(seed=4, days=1, n_users=30, n_businesses=15,
                                                   start=now - timedelta(hours=12)), settings.sim_dir)
    recovery, resumed = recovery_config(settings, learning_recovery_dir(settings))
    assert not resumed
    run_main(build_learning_flow(settings), epoch_interval=timedelta(seconds=0.5), recovery_config=recovery)
    assert recovery_config(settings, learning_recovery_dir(settings))[1]  # snapshots to resume from
    published = open_model_state(settings).load("bandit")
    seen_before = published[1].n_seen if published is not None else 0

    quick = dataclasses.replace(settings, attribution_window_s=2.0, attribution_lateness_s=1.0)
    child = start_learning_flow(quick, follow=True)
    try:
        store = open_event_store(quick)
        users, items = [f"u{i:04d}" for i in range(1, 31)], [f"resume-item-{i}" for i in range(5)]
        features = {"bias": 1.0, "score": 0.5}
        rounds = 20
        for round_ in range(rounds + 1):  # ~10 s of traffic at the wall clock's time, then one more
            if round_ == rounds:
                time.sleep(2.0 + 1.0 + 0.5)  # window + lateness: the last round's events close the rest
            at = datetime.now(UTC)
            docs = []
            for n, user in enumerate(users):
                request = f"req-{round_}-{n}"
                item = items[(round_ + n) % len(items)]
                docs.append({"_id": f"imp-{request}", "kind": "impression", "request_id": request,
                             "user_id": user, "item_id": item, "ts": at.isoformat(), "position": 0,
                             "features": features, "score_parts": {"score": 0.5}, "source": "suggestions"})
                if n % 3 == 0:
                    docs.append({"_id": f"fb-{request}", "kind": "click", "request_id": request, "user_id": user,
                                 "item_id": item, "ts": (at + timedelta(milliseconds=200)).isoformat()})
            store.append(FEEDBACK_COLLECTION, docs)
            time.sleep(0.5)
        store.close()

        # Every impression of the first rounds: a later event of its user's shard (the final round)
        # comes when the wall clock has passed its window and the lateness (the final round's stay open).
        expected = rounds * len(users)

        def learned_new() -> int:
            latest = open_model_state(quick).load("bandit")
            return latest[1].n_seen - seen_before if latest is not None else 0

        _wait_for(lambda: learned_new() >= expected, 60)
        assert learned_new() >= expected, f"the resumed flow learned {learned_new()} of {expected} new examples"
        assert child.poll() is None  # still following
    finally:
        stop(child)


def test_a_future_dated_event_does_not_hold_the_watermark_past_the_wall_clock():
    """One attribution event stamped hours ahead (a simulated day to midnight, a phone's wrong
    clock) must not make every real impression 'too late': the flow caps the watermark at the
    wall clock (plus the clock skew allowance). Pure event time (no cap) shows the failure."""
    from flows.attribution import AttributionParams, AttributionState
    from kairos.schema import Event

    now = datetime.now(UTC)

    def event(n: int, kind: str, at: datetime, user: str = "u1") -> Event:
        return Event(event_id=f"e{n}", ts=at, actor_type="user", actor_id=user, kind=kind, item_id="i1",
                     attrs={"features": {"bias": 1.0}, "source": "suggestions"})

    state = AttributionState()
    plain = AttributionParams(window_s=1, allowed_lateness_s=0)
    state.update(event(0, "click", now + timedelta(hours=10), user="u2"), plain)  # future-dated
    state.update(event(1, "impression", now), plain)
    assert state.stats["impressions_too_late"] == 1  # pure event time: the real impression is lost

    capped = AttributionParams(window_s=1, allowed_lateness_s=0, max_ahead_s=0)
    state = AttributionState()
    assert state.update(event(0, "click", now + timedelta(hours=10), user="u2"), capped) == []
    assert state.update(event(1, "impression", now), capped) == []
    assert state.update(event(2, "click", now + timedelta(seconds=0.3)), capped) == []  # window still open
    assert state.stats["impressions"] == 1 and not state.stats["impressions_too_late"]
    time.sleep(max(0.0, (now + timedelta(seconds=1.2) - datetime.now(UTC)).total_seconds()))
    examples = state.advance(capped)  # the wall clock has passed the window: it closes, clicked
    assert [(e.impression_id, e.reward) for e in examples] == [("e1", 1)]
