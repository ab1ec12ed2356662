"""The flow feeds the per-user learners: taste embeddings land beside the features, the next-intent
model is published, and a location change comes back with the predicted intent."""

from __future__ import annotations

from datetime import UTC, datetime

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
