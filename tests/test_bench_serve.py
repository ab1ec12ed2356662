"""``kairos bench serve``'s bandit warm-up (kairos/bench/serve.py), without Redis, an API or a flow:
the feedback policy, how a response shows the bandit ranked it, and that the warm-up is
time-bound and says why the bandit did not serve (a fake learning flow and a fake API client)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import flows.runner
from kairos.bench.serve import (
    _ranking,
    engage_probability,
    feedback_kind,
    published_bandit,
    served_by_bandit,
    teach_bandit,
)
from kairos.config import Settings
from online.bandit import BanditRanker
from online.model_state import open_model_state


def test_engage_probability_grows_with_discount_and_nearness() -> None:
    far_full_price = {"discount": 0.0, "distance_km": 5.0}
    far_discounted = {"discount": 0.5, "distance_km": 5.0}
    near_discounted = {"discount": 0.5, "distance_km": 0.4}
    assert engage_probability(far_full_price) < engage_probability(far_discounted) < engage_probability(near_discounted)
    # Missing or out-of-range values: still a probability.
    assert 0.0 < engage_probability({}) < 1.0
    assert engage_probability({"discount": 7.0, "distance_km": 0.1}) <= 0.9
    assert engage_probability({"discount": -1.0, "distance_km": None}) == engage_probability({})


def test_feedback_kind_follows_the_probability() -> None:
    rng = random.Random(3)
    cheap = [feedback_kind({"discount": 0.8, "distance_km": 0.5}, rng) for _ in range(4000)]
    dear = [feedback_kind({"discount": 0.0, "distance_km": 9.0}, rng) for _ in range(4000)]
    engaged_cheap = sum(k is not None for k in cheap) / len(cheap)
    engaged_dear = sum(k is not None for k in dear) / len(dear)
    assert engaged_cheap == pytest.approx(0.6, abs=0.04)
    assert engaged_dear == pytest.approx(0.05, abs=0.02)
    assert set(cheap) == {None, "click", "purchase"}
    purchases = cheap.count("purchase") / (cheap.count("click") + cheap.count("purchase"))
    assert purchases == pytest.approx(0.25, abs=0.05)


def test_served_by_bandit_reads_the_exploration_contribution() -> None:
    bandit = {"items": [{"score_contributions": {"interest": 0.3, "exploration": 0.1}}] * 2}
    transparent = {"items": [{"score_contributions": {"interest": 0.3, "distance": -0.2}}]}
    assert served_by_bandit(bandit) is True
    assert served_by_bandit(transparent) is False
    assert served_by_bandit({"items": []}) is None


def _publish_bandit(settings: Settings, examples: int) -> None:
    bandit = BanditRanker()
    bandit.model.n_seen = examples
    store = open_model_state(settings)
    try:
        store.publish("bandit", bandit)
    finally:
        store.close()


def test_ranking_says_which_ranker_served(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, auth_required=False, bandit_min_examples=100)
    assert _ranking(settings)["ranked_by"] == "transparent"  # nothing published
    assert _ranking(settings.with_(ranker="transparent")) == {"ranker": "transparent", "ranked_by": "transparent"}
    _publish_bandit(settings, 40)
    few = _ranking(settings)
    assert few["bandit_examples"] == 40 and few["ranked_by"] == "transparent" and "note" in few
    _publish_bandit(settings, 150)
    store = open_model_state(settings)
    assert published_bandit(store) == (2, 150)
    store.close()
    assert _ranking(settings, served=True)["ranked_by"] == "bandit"
    refused = _ranking(settings, served=False)
    assert refused["ranked_by"] == "transparent" and "not ranked by it" in refused["note"]


class _Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code, self._body = status, body

    def json(self) -> dict[str, Any]:
        return self._body


class _FakeApi:
    """Suggestions with two items (bandit-ranked once ``bandit`` is set); feedback accepted."""

    def __init__(self) -> None:
        self.bandit = False
        self.feedback: list[dict[str, Any]] = []
        self.requests = 0

    def get(self, url: str, params: Any = None) -> _Response:
        self.requests += 1
        parts = {"interest": 0.2, **({"exploration": 0.05} if self.bandit else {})}
        items = [{"item_id": f"i{n}", "discount": 0.9, "distance_km": 0.2, "score_contributions": parts}
                 for n in range(2)]
        return _Response(200, {"request_id": f"r{self.requests}", "items": items})

    def post(self, url: str, json: dict[str, Any]) -> _Response:
        assert url == "/v1/feedback" and json["kind"] in ("click", "purchase")
        self.feedback.append(json)
        return _Response(202, {})


class _FakeFlow:
    def __init__(self, exits: int | None = None) -> None:
        self.returncode = exits
        self.stopped = False

    def poll(self) -> int | None:
        return self.returncode


@pytest.fixture
def fake_flow(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    started: dict[str, Any] = {"flow": _FakeFlow()}

    def start(settings: Settings, follow: bool) -> _FakeFlow:
        started["settings"], started["follow"] = settings, follow
        return started["flow"]

    def stop(child: _FakeFlow) -> None:
        child.stopped = True

    monkeypatch.setattr(flows.runner, "start_learning_flow", start)
    monkeypatch.setattr(flows.runner, "stop", stop)
    return started


def test_warmup_gives_up_at_its_timeout_with_a_note(tmp_path: Path, fake_flow: dict[str, Any]) -> None:
    settings = Settings(home=tmp_path, auth_required=False)
    api = _FakeApi()
    result = teach_bandit(settings, api, ["u0001", "u0002"], "2026-01-01T12:00:00+00:00", clients=2, timeout_s=1.0)
    assert result["served_by_bandit"] is False and result["learned_after_s"] is None
    assert "did not learn" in result["note"]
    assert 1.0 <= result["seconds"] < 10  # bounded, no hang
    assert fake_flow["flow"].stopped and fake_flow["follow"] is True
    # The learning flow closes attribution windows in seconds; the feedback names what was shown.
    assert fake_flow["settings"].attribution_window_s < 60
    assert api.feedback and all(f["request_id"].startswith("r") and f["item_id"].startswith("i") for f in api.feedback)
    assert result["feedback"]["click"] + result["feedback"]["purchase"] == len(api.feedback)


def test_warmup_reports_a_learning_flow_that_died(tmp_path: Path, fake_flow: dict[str, Any]) -> None:
    fake_flow["flow"] = _FakeFlow(exits=1)
    result = teach_bandit(Settings(home=tmp_path, auth_required=False), _FakeApi(), ["u0001"],
                          "2026-01-01T12:00:00+00:00", clients=1, timeout_s=30.0)
    assert "exited (code 1)" in result["note"] and result["seconds"] < 10


def test_warmup_ends_once_the_api_ranks_by_the_bandit(tmp_path: Path, fake_flow: dict[str, Any]) -> None:
    settings = Settings(home=tmp_path, auth_required=False, bandit_min_examples=100)
    _publish_bandit(settings, 120)  # as the learning flow would
    api = _FakeApi()
    api.bandit = True
    result = teach_bandit(settings, api, ["u0001"], "2026-01-01T12:00:00+00:00", clients=1, timeout_s=30.0)
    assert "note" not in result
    assert result["served_by_bandit"] is True and result["bandit_version"] == 1
    assert result["api_served_after_s"] is not None and result["seconds"] < 10


def test_warmup_notes_an_api_that_never_ranks_by_the_bandit(tmp_path: Path, fake_flow: dict[str, Any]) -> None:
    settings = Settings(home=tmp_path, auth_required=False, bandit_min_examples=100, model_poll_interval_s=0.1)
    _publish_bandit(settings, 120)
    result = teach_bandit(settings, _FakeApi(), ["u0001"], "2026-01-01T12:00:00+00:00", clients=1, timeout_s=30.0)
    assert result["served_by_bandit"] is False and "not ranked by it" in result["note"]
