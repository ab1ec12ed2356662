"""The contextual bandit ranker: its Bayesian model, features, exploration, explanations and regret."""

from __future__ import annotations

import json
import math
import pickle
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from online.bandit import (
    BIAS,
    EXTRA_CONTRIBUTIONS,
    BanditRanker,
    BayesianLogisticRegression,
    LiveRanker,
    compute_parts,
    context_features,
    daypart,
    feature_names,
    local_hour,
)
from online.transparent_ranker import PARTS, Candidate, RankContext, TransparentRanker

AT = datetime(2026, 5, 1, 18, 0, tzinfo=timezone.utc)
END = AT.timestamp() + 2 * 3600
LAT, LON = 40.7560, -73.9860
ITEMS = [
    Candidate("zen", "spa", 40.7590, -73.9845, price=31.0, original_price=50.0, valid_to=END),
    Candidate("lux", "spa", 40.7680, -73.9700, price=90.0, valid_to=END),
    Candidate("cup", "coffee", 40.7585, -73.9855, price=4.0, valid_to=END, views_24h=50, clicks_24h=20),
    Candidate("jazz", "culture", 40.7520, -73.9900, price=25.0, valid_from=AT.timestamp() + 3600,
              valid_to=AT.timestamp() + 4 * 3600),
]
USER = {"category_affinity": '{"spa": 0.6, "coffee": 0.3, "culture": 0.1}', "discount_sensitivity": 0.7}


def context(user: dict | None = USER, items: list[Candidate] = ITEMS) -> RankContext:
    return RankContext.build(LAT, LON, AT, items, radius_km=2.0, user=user)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# -- the Bayesian model ------------------------------------------------------------------------------


def test_model_recovers_the_weights_and_grows_confident() -> None:
    rng = random.Random(5)
    model = BayesianLogisticRegression(prior_variance=2.0)
    stds = []
    for n in range(4000):
        x = {"bias": 1.0, "a": rng.random(), "b": rng.gauss(0, 1)}
        model.learn_one(x, rng.random() < sigmoid(-1.0 + 2.0 * x["a"] - 1.5 * x["b"]))
        if n in (50, 3999):
            stds.append(model.logit_std({"bias": 1.0, "a": 0.5, "b": 0.0}))
    w = model.weights
    assert w["a"] == pytest.approx(2.0, abs=0.35)
    assert w["b"] == pytest.approx(-1.5, abs=0.25)
    assert w["bias"] == pytest.approx(-1.0, abs=0.3)
    assert stds[1] < stds[0] / 3
    assert model.n_seen == 4000 and 0 < model.n_positive < 4000


def test_unknown_features_count_with_their_prior() -> None:
    model = BayesianLogisticRegression(prior_variance=0.25, prior_mean={"new": 2.0})
    model.learn_one({"seen": 1.0}, True)
    assert model.predict_logit({"seen": 0.0, "new": 1.0}) == pytest.approx(2.0)
    assert model.logit_std({"new": 2.0}) == pytest.approx(math.sqrt(0.25 * 4))
    assert "new" not in model.index  # predicting never changes the model


def test_forgetting_keeps_the_posterior_from_collapsing_but_never_beyond_the_prior() -> None:
    rng = random.Random(1)
    keep, forget = BayesianLogisticRegression(), BayesianLogisticRegression(prior_variance=0.5, forgetting=0.01)
    forget.add_features(["never_seen"])
    for _ in range(3000):
        x = {"bias": 1.0, "a": rng.random()}
        y = rng.random() < 0.3
        keep.learn_one(x, y)
        forget.learn_one(x, y)
    assert forget.logit_std({"bias": 1.0, "a": 0.5}) > 2 * keep.logit_std({"bias": 1.0, "a": 0.5})
    assert forget.logit_std({"never_seen": 1.0}) == pytest.approx(math.sqrt(0.5))  # the prior, not more
    assert forget.weights["bias"] == pytest.approx(math.log(0.3 / 0.7), abs=0.35)  # still learns


def test_model_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="prior_variance"):
        BayesianLogisticRegression(prior_variance=0)
    with pytest.raises(ValueError, match="forgetting"):
        BayesianLogisticRegression(forgetting=1.0)
    with pytest.raises(ValueError, match="weight"):
        BayesianLogisticRegression().learn_one({"a": 1.0}, True, w=0.0)
    with pytest.raises(ValueError, match="exploration"):
        BanditRanker(exploration="softmax")
    with pytest.raises(ValueError, match="epsilon"):
        BanditRanker(epsilon=1.5)


def test_model_passes_rivers_estimator_checks() -> None:
    from river import checks

    ran = 0
    for check in checks.yield_checks(BayesianLogisticRegression()):
        check(BayesianLogisticRegression())
        ran += 1
    assert ran >= 20


def test_posterior_samples_have_the_posterior_spread() -> None:
    model = BayesianLogisticRegression(prior_variance=1.0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        model.learn_one({"bias": 1.0, "a": float(rng.random())}, bool(rng.random() < 0.4))
    draws = np.array([model.sample_weights(rng) for _ in range(4000)])
    assert np.allclose(draws.mean(axis=0), model.mean, atol=0.05)
    assert np.allclose(np.cov(draws.T), model.cov, atol=0.02)


# -- features ----------------------------------------------------------------------------------------


def test_local_solar_hour_and_dayparts() -> None:
    assert local_hour(AT, -73.98) == pytest.approx(18 - 73.98 / 15)  # about 1 pm in New York
    assert daypart(AT, -73.98) == 4
    assert daypart(AT, 72.88) == 7  # about 11 pm in Mumbai
    assert daypart(AT.replace(hour=20), 72.88) == 0  # past midnight wraps around
    assert 0 <= daypart(AT, 180.0) < 8 and 0 <= daypart(AT, -180.0) < 8


def test_context_features_shape_and_guards() -> None:
    parts = dict.fromkeys(PARTS, 0.0) | {"interest": 0.0, "price_vs_area": -1.0, "timing": 0.0}
    x = context_features(parts, float("nan"), "made-up", AT, LON, discount_sensitivity=None)
    assert all(math.isfinite(v) for v in x.values())
    assert x["category=other"] == 1.0 and x["discount_x_sensitivity"] == 0.0
    assert x["log_price_ratio"] == pytest.approx(math.log(2.0))  # twice the area price
    assert x["log_price_ratio_x_sensitivity"] == pytest.approx(0.5 * math.log(2.0))  # unknown = neutral
    assert set(x) <= set(feature_names())


def test_parts_are_exactly_the_transparent_rankers() -> None:
    ctx, explainer = context(), TransparentRanker()
    for item in ITEMS:
        parts, distance, minutes = compute_parts(explainer, ctx, item)
        reference = explainer.score_one(ctx, item)
        assert parts == reference.parts
        assert (distance, minutes) == (reference.distance_km, reference.travel_minutes)


# -- ranking -----------------------------------------------------------------------------------------


def test_scores_are_log_odds_made_of_contributions_and_explained() -> None:
    ranker = BanditRanker(seed=1)
    ranked = ranker.rank(context(), ITEMS)
    assert sorted(s.item.item_id for s in ranked) == sorted(i.item_id for i in ITEMS)
    scores = [s.score for s in ranked]
    assert scores == sorted(scores, reverse=True)
    transparent = {s.item.item_id: s for s in TransparentRanker().rank(context(), ITEMS)}
    for scored in ranked:
        assert set(scored.parts) == set(PARTS)
        assert set(scored.contributions) == set(PARTS) | set(EXTRA_CONTRIBUTIONS)
        assert scored.score == pytest.approx(sum(scored.contributions.values()))
        assert 0 < scored.probability < 1 and scored.uncertainty > 0
        # The same words as the transparent ranker: what, where, when (the standout may differ).
        head = transparent[scored.item.item_id].reason.split(", ")[0]
        assert scored.reason.startswith(head)
        assert scored.features == context_features(scored.parts, scored.distance_km, scored.item.category, AT,
                                                   LON, USER["discount_sensitivity"])
    greedy = ranker.score_one(context(), ITEMS[0])
    assert greedy.contributions["exploration"] == 0.0
    assert greedy.probability == pytest.approx(sigmoid(greedy.score))


def test_untrained_bandit_starts_from_the_transparent_ranking() -> None:
    ranker = BanditRanker()
    by_bandit = [s.item.item_id for s in ranker.rank(context(), ITEMS, explore=False)]
    by_hand = [s.item.item_id for s in TransparentRanker().rank(context(), ITEMS)]
    assert by_bandit[0] == by_hand[0] == "zen"


def test_thompson_sampling_explores_while_unsure_and_settles_when_sure() -> None:
    ranker = BanditRanker(seed=2)
    ctx = context()
    firsts = {ranker.rank(ctx, ITEMS, limit=1)[0].item.item_id for _ in range(200)}
    assert len(firsts) >= 2  # the prior alone leaves room to try other items
    rng = random.Random(0)
    truth = {"zen": 0.05, "lux": 0.02, "cup": 0.6, "jazz": 0.05}
    for _ in range(600):
        for scored in ranker.rank(ctx, ITEMS, explore=False, explain=False):
            ranker.learn_one(scored.features, rng.random() < truth[scored.item.item_id])
    firsts = [ranker.rank(ctx, ITEMS, limit=1)[0].item.item_id for _ in range(200)]
    assert firsts.count("cup") >= 190
    assert ranker.predict_one(ranker.score_one(ctx, ITEMS[2]).features) == pytest.approx(0.6, abs=0.1)


def test_ucb_adds_an_optimism_bonus_that_shrinks_with_evidence() -> None:
    ranker = BanditRanker(exploration="ucb", ucb_alpha=2.0)
    before = ranker.rank(context(), ITEMS)
    for scored in before:
        assert scored.contributions["exploration"] == pytest.approx(2.0 * scored.uncertainty)
    for _ in range(300):
        for scored in ranker.rank(context(), ITEMS, explore=False, explain=False):
            ranker.learn_one(scored.features, False)
    after = {s.item.item_id: s for s in ranker.rank(context(), ITEMS)}
    for scored in before:
        assert after[scored.item.item_id].contributions["exploration"] < scored.contributions["exploration"] / 2


def test_epsilon_greedy_puts_a_random_item_first_sometimes() -> None:
    always = BanditRanker(exploration="epsilon", epsilon=1.0, seed=4)
    firsts = {always.rank(context(), ITEMS, limit=1)[0].item.item_id for _ in range(200)}
    assert firsts == {i.item_id for i in ITEMS}
    never = BanditRanker(exploration="epsilon", epsilon=0.0, seed=4)
    assert {never.rank(context(), ITEMS, limit=1)[0].item.item_id for _ in range(50)} == {"zen"}


def test_ranking_is_stable_and_limited() -> None:
    ranker = BanditRanker()
    twins = [Candidate("b", "spa", 40.7590, -73.9845, price=31.0, valid_to=END),
             Candidate("a", "spa", 40.7590, -73.9845, price=31.0, valid_to=END)]
    assert [s.item.item_id for s in ranker.rank(context(items=twins), twins, explore=False)] == ["a", "b"]
    assert len(ranker.rank(context(), ITEMS, limit=2)) == 2
    assert ranker.rank(context(), []) == []


def test_ranker_pickles_with_what_it_learned() -> None:
    ranker = BanditRanker(seed=3)
    for scored in ranker.rank(context(), ITEMS, explain=False):
        ranker.learn_one(scored.features, scored.item.item_id == "cup")
    ranker.rank(context(), ITEMS)  # builds the cached posterior factor
    copy = pickle.loads(pickle.dumps(ranker))
    assert copy.n_seen == ranker.n_seen == len(ITEMS)
    assert copy.model.weights == ranker.model.weights
    assert [s.score for s in copy.rank(context(), ITEMS, explore=False)] == pytest.approx(
        [s.score for s in ranker.rank(context(), ITEMS, explore=False)])
    assert pickle.loads(pickle.dumps(ranker.model))._factor is None  # the cached inverse stays home


def test_live_ranker_falls_back_until_a_trained_bandit_is_published() -> None:
    class Source:
        model = None

        def current(self):
            return self.model

    source = Source()
    live = LiveRanker(source, min_examples=5)
    assert isinstance(live.active(), TransparentRanker)
    bandit = BanditRanker()
    source.model = bandit
    assert isinstance(live.active(), TransparentRanker)  # knows only its prior
    for scored in bandit.rank(context(), ITEMS, explain=False):
        bandit.learn_one(scored.features, True)
    bandit.learn_one(bandit.score_one(context(), ITEMS[0]).features, False)
    assert live.active() is bandit
    assert [s.item.item_id for s in live.rank(context(), ITEMS, limit=2)] and live.score_one(context(), ITEMS[0])


# -- regret on the simulated city ----------------------------------------------------------------------


def test_regret_benchmark_runs_all_policies_on_the_same_interactions() -> None:
    from kairos.bench.regret import POLICIES, RegretConfig, run_regret

    result = run_regret(RegretConfig(interactions=600, users=60, businesses=40, days=2, history=3, seed=3))
    json.dumps(result)
    policies = result["policies"]
    assert list(policies) == list(POLICIES)
    oracle = policies["oracle"]["expected_reward_total"]
    for name, numbers in policies.items():
        assert numbers["expected_reward_total"] <= oracle + 1e-9, name
        assert 0 <= numbers["share_of_oracle_last_half"] <= 1.0
    assert policies["random"]["expected_reward_total"] < 0.8 * oracle
    assert result["goal"]["target"] == 0.85 and isinstance(result["goal"]["met"], bool)
    curve = result["cumulative_expected_reward"]["bandit"]
    assert curve == sorted(curve) and curve[-1] == pytest.approx(policies["bandit"]["expected_reward_total"], abs=0.1)


def test_benchmarks_fast_transparent_ranks_exactly_like_the_transparent_ranker() -> None:
    from kairos.bench.regret import (
        CityEnvironment,
        FastTransparent,
        Observed,
        RegretConfig,
        candidates,
        rank_context,
    )

    env = CityEnvironment(RegretConfig(users=40, businesses=40, days=2, seed=5))
    observed = Observed()
    observed.affinity["u0001"].update({"spa": 3.0, "food": 1.0})
    fast, reference = FastTransparent(), TransparentRanker()
    for ts in env.timeline(40):
        interaction = env.interaction(ts)
        cands = candidates(interaction, observed)
        ctx = rank_context(interaction, cands, observed)
        got = [(s.item.item_id, s.score) for s in fast.rank(ctx, cands)]
        assert got == [(s.item.item_id, s.score) for s in reference.rank(ctx, cands)]


def test_regret_config_is_validated() -> None:
    from kairos.bench.regret import RegretConfig

    with pytest.raises(ValueError, match="interactions"):
        RegretConfig(interactions=1).validate()
    with pytest.raises(ValueError, match="epsilon"):
        RegretConfig(epsilon=2).validate()


def test_time_moves_the_dayparts_of_the_same_category() -> None:
    parts = dict.fromkeys(PARTS, 0.5)
    morning = context_features(parts, 1.0, "coffee", AT - timedelta(hours=9), LON)
    evening = context_features(parts, 1.0, "coffee", AT + timedelta(hours=4), LON)
    assert {k for k in morning if "|daypart=" in k} != {k for k in evening if "|daypart=" in k}


def test_position_is_learned_as_a_nuisance_not_blamed_on_the_item() -> None:
    # Two equally good items; "lux" is usually shown second, where people click half as often.
    rng = random.Random(7)
    aware, naive = BanditRanker(forgetting=0.0), BanditRanker(forgetting=0.0)  # isolate the position effect
    ctx = context(items=ITEMS[:2])
    zen, lux = (aware.score_one(ctx, item).features for item in ITEMS[:2])
    for _ in range(3000):
        order = (zen, lux) if rng.random() < 0.8 else (lux, zen)
        for position, features in enumerate(order):
            clicked = rng.random() < 0.3 * (0.5 if position else 1.0)
            aware.learn_one(features, clicked, position=position)
            naive.learn_one(features, clicked)
    aware_gap = aware.predict_one(zen) - aware.predict_one(lux)
    naive_gap = naive.predict_one(zen) - naive.predict_one(lux)
    assert naive_gap > 0.06  # the naive model blames lux for its slot
    assert abs(aware_gap) < naive_gap / 3
    assert aware.predict_one(zen) == pytest.approx(0.3, abs=0.04)  # what the first slot earns
    assert aware.model.weights["position=1"] < -0.4


# -- the vectorised serving path against the per-item one it replaced ------------------------------------


def _reference_rank(ranker: BanditRanker, ctx: RankContext, items: list[Candidate], limit: int | None = None,
                    explore: bool = True) -> list[dict]:
    """The ranking as it was computed before :func:`online.bandit.feature_batch`: one feature dict per
    item scattered into a full-width matrix, products over every model feature."""
    from online.bandit import _contribution_group

    model = ranker.model
    computed = [compute_parts(ranker.explainer, ctx, item) for item in items]
    xs = [ranker.features(ctx, item, parts, distance) for item, (parts, distance, _) in zip(items, computed, strict=True)]
    X = np.zeros((len(xs), len(model.index)))
    for row, x in enumerate(xs):
        for name, value in x.items():
            if name in model.index:
                X[row, model.index[name]] = value
    mean_logits = X @ model.mean
    variances = ((X @ model.cov) * X).sum(axis=1)
    unknown = [model._unknown(x) for x in xs]
    mean_logits += np.array([u[0] for u in unknown])
    stds = np.sqrt(np.clip(variances + np.array([u[1] for u in unknown]), 0.0, None))
    bonus = np.zeros(len(items))
    strategy = ranker.exploration if explore else "greedy"
    if strategy == "thompson":
        weights = model.sample_weights(ranker._rng(), ranker.exploration_scale)
        bonus = X @ weights - X @ model.mean
    elif strategy == "ucb":
        bonus = ranker.ucb_alpha * stds
    scores = mean_logits + bonus
    order = sorted(range(len(items)), key=lambda i: (-scores[i], computed[i][1], items[i].item_id))[:limit]
    names = list(model.index)
    out = []
    for i in order:
        contributions = dict.fromkeys((*PARTS, *EXTRA_CONTRIBUTIONS), 0.0)
        for j in np.flatnonzero(X[i]):
            contributions[_contribution_group(names[j])] += float(X[i, j] * model.mean[j])
        contributions["baseline"] += unknown[i][0]
        contributions["exploration"] = float(bonus[i])
        out.append({"item_id": items[i].item_id, "score": float(scores[i]), "contributions": contributions,
                    "probability": sigmoid(float(mean_logits[i])), "uncertainty": float(stds[i]),
                    "features": xs[i], "parts": computed[i][0]})
    return out


def _random_request(rng: random.Random, n: int) -> tuple[RankContext, list[Candidate]]:
    """A busy request: many categories (and unknown ones), prices, timings, engagement and taste."""
    from kairos.schema import CATEGORIES

    at_ts = AT.timestamp()
    items = []
    for k in range(n):
        price = round(rng.uniform(2.0, 150.0), 2) if rng.random() < 0.9 else None
        start = at_ts + rng.uniform(-7200, 7200) if rng.random() < 0.7 else None
        views = rng.randint(0, 400) if rng.random() < 0.7 else None
        items.append(Candidate(
            f"i{k:03d}", rng.choice((*CATEGORIES, None, "made-up")), LAT + rng.gauss(0, 0.03),
            LON + rng.gauss(0, 0.03), price=price,
            original_price=price * rng.uniform(1.0, 2.0) if price and rng.random() < 0.5 else None,
            valid_from=start, valid_to=(start or at_ts) + rng.uniform(600, 6 * 3600) if rng.random() < 0.9 else None,
            views_24h=views, clicks_24h=None if views is None else rng.randint(0, views // 4 + 1)))
    affinity = {c: rng.random() for c in rng.sample(CATEGORIES, 4)}
    user = {"category_affinity": json.dumps(affinity), "discount_sensitivity": rng.choice((None, rng.random(), 1.7))}
    at = AT + timedelta(minutes=rng.randint(0, 1440))
    taste = {i.item_id: rng.uniform(-0.3, 1.0) for i in items if rng.random() < 0.6}
    return RankContext.build(LAT, LON, at, items, radius_km=3.0, user=user, taste=taste), items


def _trained_bandit(exploration: str = "thompson", examples: int = 1500) -> BanditRanker:
    rng = random.Random(3)
    ranker = BanditRanker(exploration=exploration, seed=9)
    while ranker.n_seen < examples:
        ctx, items = _random_request(rng, 20)
        for position, scored in enumerate(ranker.rank(ctx, items, limit=10, explain=False)):
            ranker.learn_one(scored.features, rng.random() < 0.05 + 0.3 * scored.parts["interest"], position=position)
    return ranker


def _assert_same(got: list, expected: list[dict]) -> None:
    assert [s.item.item_id for s in got] == [e["item_id"] for e in expected]
    for scored, ref in zip(got, expected, strict=True):
        assert scored.score == pytest.approx(ref["score"], abs=1e-9)
        assert scored.probability == pytest.approx(ref["probability"], abs=1e-9)
        assert scored.uncertainty == pytest.approx(ref["uncertainty"], abs=1e-9)
        assert set(scored.contributions) == set(ref["contributions"])
        for name, value in ref["contributions"].items():
            assert scored.contributions[name] == pytest.approx(value, abs=1e-9), name
        assert scored.features == ref["features"] and scored.parts == ref["parts"]  # exactly what is logged


@pytest.mark.parametrize("exploration", ["greedy", "ucb", "thompson"])
def test_vectorised_ranking_equals_the_per_item_ranking(exploration: str) -> None:
    ranker = _trained_bandit("thompson" if exploration == "greedy" else exploration)
    rng = random.Random(11)
    for n in (1, 7, 60, 300):  # 300 rows: more than one product chunk
        ctx, items = _random_request(rng, n)
        explore = exploration != "greedy"
        # The same seed on both sides: Thompson sampling must draw the very same weights.
        ranker._local.rng = np.random.default_rng(n)
        got = ranker.rank(ctx, items, limit=25, explore=explore)
        ranker._local.rng = np.random.default_rng(n)
        _assert_same(got, _reference_rank(ranker, ctx, items, limit=25, explore=explore))


def test_vectorised_ranking_counts_features_an_old_model_never_had() -> None:
    # A model published before some features existed (unpickled: __init__ never added them).
    ranker = _trained_bandit("ucb", examples=300)
    model = ranker.model
    dropped = {"taste", "log_timing", "category=spa", "category=coffee|daypart=4", BIAS}
    keep = [name for name in model.index if name not in dropped]
    rows = [model.index[name] for name in keep]
    model.index = {name: k for k, name in enumerate(keep)}
    model.mean, model.prior = model.mean[rows], model.prior[rows]
    model.cov = model.cov[np.ix_(rows, rows)]
    model._revision += 1
    model.prior_mean["category=spa"] = 0.7
    ctx, items = _random_request(random.Random(5), 80)
    _assert_same(ranker.rank(ctx, items), _reference_rank(ranker, ctx, items))
    assert any(s.contributions["baseline"] for s in ranker.rank(ctx, items))


def test_feature_batch_matches_the_feature_dicts_on_edge_cases() -> None:
    from online.bandit import feature_batch

    model = BanditRanker().model
    parts = [dict.fromkeys(PARTS, 0.3),
             dict.fromkeys(PARTS, 0.0) | {"price_vs_area": -1.0, "timing": float("nan"), "taste": float("inf")},
             {"interest": 1.0, "price_vs_area": 1.0, "discount": 1.0},  # missing parts count as 0
             dict.fromkeys(PARTS, 1.0) | {"distance": float("-inf")}, dict.fromkeys(PARTS, 0.9)]
    distances = [0.4, float("nan"), -2.0, float("-inf"), 80.0]
    categories = ["spa", "made-up", None, "spa", "coffee"]
    for sensitivity in (None, float("nan"), 0.3, -1.0, 4.0):
        for at in (AT, AT + timedelta(hours=7)):
            batch = feature_batch(model, [(p, d, 0.0) for p, d in zip(parts, distances, strict=True)], categories, at, LON,
                                  sensitivity)
            for row, (p, d, cat) in enumerate(zip(parts, distances, categories, strict=True)):
                x = context_features(p, d, cat, at, LON, sensitivity)
                dense = np.zeros(len(model.index))
                dense[batch.columns] = batch.X[row]
                expected = np.zeros(len(model.index))
                for name, value in x.items():
                    expected[model.index[name]] = value
                assert np.allclose(dense, expected, rtol=0, atol=1e-12), (row, sensitivity)
            assert not batch.unknown_mean.any() and not batch.unknown_var.any()
            assert list(batch.columns) == sorted(batch.columns)


def test_posterior_rows_are_the_same_draw_as_the_whole_vector() -> None:
    model = _trained_bandit("thompson", examples=300).model
    rows = np.array([0, 3, 17, len(model.index) - 1])
    for seed in range(5):
        whole = model.sample_weights(np.random.default_rng(seed), 0.7)
        part = model.sample_weights(np.random.default_rng(seed), 0.7, rows=rows)
        assert np.allclose(part, whole[rows], rtol=0, atol=1e-12)
    empty = BayesianLogisticRegression()
    assert empty.sample_weights(np.random.default_rng(0), rows=np.array([], dtype=int)).shape == (0,)
