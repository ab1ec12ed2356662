"""Price elasticity, the price recommender's guardrails and words, the market model, the pricing
environment's truth, and the pricing benchmark's code path."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.config import Settings
from kairos.simulate.model import STAGE_BASE, engagement_probability
from kairos.simulate.pricing_env import PricingEnv, PricingEnvConfig, stage_probability
from kairos.stores.offline_log import OfflineLog
from online.market_model import MODEL_VERSION, MarketModel, build_market_model, market_model_path, slot_label
from online.price_elasticity import PriceElasticity
from online.price_recommender import PriceRecommender, PricingInput, competitor_phrase, expected_sales

T0 = datetime(2026, 5, 4, 6, tzinfo=UTC)  # a Monday
CELL = "882a100d35fffff"  # East Village, New York
LAT, LON = 40.7265, -73.9815


# ---- elasticity --------------------------------------------------------------------------------


def _learn(model: PriceElasticity, item: str, category: str, truth: float, hours: int, seed: int,
           area: str = "a1", prices: tuple[float, ...] = (8.0, 9.0, 10.0, 11.0)) -> dict:
    rng = np.random.default_rng(seed)
    x: dict = {}
    for _ in range(hours):
        price = float(rng.choice(prices))
        x = {"item": item, "category": category, "area": area, "price": price, "reference": 10.0}
        model.learn_one(x, int(rng.poisson(4.0 * (price / 10.0) ** truth)), exposure=1.0)
    return x


def test_elasticity_is_learned_from_price_changes_and_pooled_to_new_items() -> None:
    model = PriceElasticity(prior_elasticity=-1.0)
    x = _learn(model, "latte", "coffee", -3.0, 3000, seed=1)
    assert -3.6 < model.elasticity(x) < -2.4
    assert model.estimate(x).source == "item"
    newcomer = {**x, "item": "mocha"}
    assert -3.6 < model.elasticity(newcomer) < -2.4  # the group's estimate
    assert model.estimate(newcomer).source == "area"
    elsewhere = {**x, "item": "cake", "area": "a2"}
    assert model.estimate(elsewhere).source == "category"  # a new area of a known category
    other = {**x, "item": "massage", "category": "spa"}
    assert model.elasticity(other) == pytest.approx(-1.0)  # nothing known: the prior
    assert model.estimate(other).source == "prior"


def test_items_of_one_group_keep_their_own_elasticities() -> None:
    model = PriceElasticity(prior_elasticity=-1.5)
    for hour in range(4000):
        for item, truth in (("elastic", -3.5), ("loyal", -0.6)):
            _learn(model, item, "food", truth, 1, seed=hour * 2 + (item == "loyal"))
    elastic = model.elasticity({"item": "elastic", "category": "food", "area": "a1"})
    loyal = model.elasticity({"item": "loyal", "category": "food", "area": "a1"})
    assert elastic < -2.5 and loyal > -1.3 and elastic < loyal


def test_expected_sales_follow_the_price_and_exposure() -> None:
    model = PriceElasticity(prior_elasticity=-2.0)
    x = _learn(model, "latte", "coffee", -2.0, 2000, seed=3)
    at_usual = model.predict_one({**x, "price": 10.0}, exposure=1.0)
    cheaper = model.predict_one({**x, "price": 8.0}, exposure=1.0)
    assert cheaper > at_usual
    assert model.predict_one({**x, "price": 10.0}, exposure=2.0) == pytest.approx(2 * at_usual)


def test_censored_hours_only_raise_the_estimate() -> None:
    model = PriceElasticity()
    x = {"item": "slot", "category": "spa", "area": "a1", "price": 80.0, "reference": 80.0}
    for _ in range(20):
        model.learn_one(x, 1, exposure=1.0)
    before = model.predict_one(x)
    model.learn_one(x, 0, exposure=1.0, censored=True)  # a sold-out hour saying "0"? ignored
    assert model.predict_one(x) == pytest.approx(before)
    model.learn_one(x, 5, exposure=1.0, censored=True)  # sold out at 5: demand was at least 5
    assert model.predict_one(x) > before


@pytest.mark.parametrize(
    "x",
    [
        {"item": "i", "category": "c", "area": "a", "price": None, "reference": 10.0},
        {"item": "i", "category": "c", "area": "a", "price": 0.0, "reference": 10.0},
        {"item": "i", "category": "c", "area": "a", "price": 5.0, "reference": float("nan")},
        {"item": "i", "category": "c", "area": "a", "price": True, "reference": 10.0},
    ],
)
def test_unusable_observations_teach_nothing(x: dict) -> None:
    model = PriceElasticity()
    model.learn_one(x, 3, exposure=1.0)
    model.learn_one({**x, "price": 5.0, "reference": 10.0}, 3, exposure=0.0)  # no exposure
    model.learn_one({**x, "price": 5.0, "reference": 10.0}, float("nan"), exposure=1.0)
    assert model.n_learned == 0


def test_elasticity_is_clipped_to_bounds() -> None:
    model = PriceElasticity(prior_elasticity=0.5, bounds=(-4.0, -0.2))
    assert model.elasticity({"item": "x", "category": "c", "area": "a"}) == -0.2
    with pytest.raises(ValueError):
        PriceElasticity(bounds=(-1.0, -2.0))


# ---- recommender -------------------------------------------------------------------------------


prices = st.floats(min_value=1.0, max_value=500.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    price=prices,
    list_ratio=st.floats(min_value=0.5, max_value=2.0),
    discounted=st.booleans(),
    floor_ratio=st.floats(min_value=0.3, max_value=1.2),
    elasticity=st.floats(min_value=-6.0, max_value=-0.2),
    sales=st.one_of(st.none(), st.floats(min_value=0.0, max_value=50.0)),
    capacity=st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
    source=st.sampled_from(["item", "area", "category", "prior"]),
    max_step=st.floats(min_value=0.05, max_value=0.5),
)
def test_recommendations_respect_every_guardrail(
    price: float, list_ratio: float, discounted: bool, floor_ratio: float, elasticity: float,
    sales: float | None, capacity: int | None, source: str, max_step: float,
) -> None:
    list_price = price * list_ratio
    floor = list_price * floor_ratio
    item = PricingInput(
        item_id="i", price=price, list_price=list_price, expected_sales=sales, elasticity=elasticity,
        elasticity_source=source, capacity=capacity, original_price=list_price if discounted else None,
        cost_floor=floor,
    )
    recommender = PriceRecommender(max_step=max_step, max_markup=0.25)
    r = recommender.recommend(item)
    new = r.recommended_price
    # Never more than one step from the current price (rounding to cents aside).
    assert abs(new - price) <= max_step * price + 0.01
    ceiling = max(floor, list_price if discounted else list_price * 1.25)
    if floor <= price <= ceiling:
        assert floor - 0.01 <= new <= ceiling + 0.01  # inside the range it stays inside
    elif price < floor:
        assert new >= price  # below a floor: only ever up, towards it
    else:
        assert new <= price  # above a ceiling: only ever down
    assert r.action == ("raise" if new > price else "lower" if new < price else "hold")
    assert r.reason.startswith({"raise": "Raise", "lower": "Lower", "hold": "Keep"}[r.action])
    if r.expected_revenue is not None and r.action != "hold" and floor <= price <= ceiling:
        assert r.expected_revenue >= r.expected_revenue_now - 1e-6  # a move must not lose revenue


def test_sold_out_at_a_busy_hour_raises_and_says_why() -> None:
    item = PricingInput(item_id="massage", price=80.0, list_price=80.0, expected_sales=4.0, elasticity=-1.5,
                        elasticity_source="area", capacity=1, demand_ratio=2.1, slot_label="Friday 18:00",
                        competitor_prices=(96.0, 100.0, 90.0), competitor_radius_km=1.0)
    r = PriceRecommender(max_step=0.15, max_markup=0.25).recommend(item)
    assert r.action == "raise" and r.recommended_price == 92.0 and r.guardrail == "max step"
    assert "demand here is 2.1x usual for Friday 18:00" in r.reason
    assert "you would sell out (about 4.0 wanted per hour, capacity 1)" in r.reason
    assert "3 competitors within 1 km are 20 % dearer" in r.reason
    assert r.expected_revenue > r.expected_revenue_now


def test_quiet_hour_with_elastic_demand_lowers_to_the_floor() -> None:
    item = PricingInput(item_id="latte", price=5.0, list_price=5.0, expected_sales=1.0, elasticity=-3.0,
                        elasticity_source="item", cost_floor=4.6, demand_ratio=0.4, slot_label="Tuesday 15:00")
    r = PriceRecommender().recommend(item)
    assert r.action == "lower" and r.recommended_price == 4.6 and r.guardrail == "cost floor"
    assert "demand here is 0.4x usual for Tuesday 15:00" in r.reason
    assert "each 10 % off brings about 37 % more sales (learned from this item's price changes)" in r.reason
    assert "held at the cost floor 4.60" in r.reason


def test_discounted_item_never_goes_above_its_original_price() -> None:
    item = PricingInput(item_id="deal", price=19.0, list_price=20.0, original_price=20.0, expected_sales=5.0,
                        elasticity=-0.5, elasticity_source="item")
    r = PriceRecommender().recommend(item)
    assert r.recommended_price == 20.0 and r.guardrail == "original price"
    assert "capped at the original price 20.00" in r.reason


def test_holds_without_learned_price_response_or_for_small_gains() -> None:
    unlearned = PricingInput(item_id="x", price=10.0, list_price=10.0, expected_sales=2.0, elasticity=-1.5,
                             elasticity_source="prior")
    r = PriceRecommender().recommend(unlearned)
    assert r.action == "hold" and "not learned yet" in r.reason
    flat = PricingInput(item_id="x", price=10.0, list_price=10.0, expected_sales=2.0, elasticity=-1.002,
                        elasticity_source="item")
    assert PriceRecommender(min_gain=0.01).recommend(flat).action == "hold"


def test_default_floor_is_never_above_the_posted_price() -> None:
    # 48 % off: the business sells at 14, so a floor of 0.7 x 27 = 18.90 would be invented.
    item = PricingInput(item_id="deal", price=14.0, list_price=27.0, original_price=27.0, expected_sales=1.0,
                        elasticity=-3.0, elasticity_source="item")
    low, high, _, _ = PriceRecommender(floor_ratio=0.7).bounds(item)
    assert low == 14.0 and high == pytest.approx(16.1)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"max_step": 0}, "max_step"), ({"max_step": 1.0}, "max_step"), ({"floor_ratio": 0}, "floor_ratio"),
     ({"max_markup": -0.1}, "max_markup")],
)
def test_bad_recommender_settings_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        PriceRecommender(**kwargs)


def test_expected_sales_with_a_capacity_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    draws = rng.poisson(2.5, 200_000)
    assert expected_sales(2.5, 2) == pytest.approx(np.minimum(draws, 2).mean(), abs=0.01)
    assert expected_sales(2.5, None) == 2.5 and expected_sales(-1.0, 2) == 0.0


def test_competitor_phrase_words() -> None:
    assert competitor_phrase(10.0, [10.1, 9.9], 2.0) == "2 competitors within 2 km are priced about the same"
    assert competitor_phrase(20.0, [15.0, 16.0, 14.0], 1.0) == "3 competitors within 1 km are 25 % cheaper"


# ---- market model --------------------------------------------------------------------------------


def item_event(item_id: str, ts: datetime, price: float, op: str = "create", original: float | None = None,
               **attrs: object) -> object:
    from kairos.schema import Event

    return Event(f"{item_id}-{op}-{ts.timestamp()}", ts, "business", "b1", "offer", item_id=item_id,
                 category="coffee", lat=LAT, lon=LON, cell=CELL, price=price, original_price=original,
                 valid_from=T0 - timedelta(days=1), valid_to=T0 + timedelta(days=30), text="Latte — morning deal",
                 attrs={"op": op, **attrs})


def user_event(kind: str, ts: datetime, item_id: str | None = "latte", event_id: str | None = None,
               **fields: object) -> object:
    from kairos.schema import Event

    return Event(event_id or f"{kind}-{ts.timestamp()}", ts, "user", "u1", kind, item_id=item_id,
                 **fields)  # type: ignore[arg-type]


def test_market_model_counts_hours_and_reveals_them_when_over() -> None:
    model = MarketModel()
    model.learn_event(item_event("latte", T0, 4.0, capacity=3))
    for minute in range(0, 120, 5):
        model.learn_event(user_event("view", T0 + timedelta(minutes=minute)))
        if minute == 30:
            model.learn_event(user_event("purchase", T0 + timedelta(minutes=30), price=8.0, attrs={"qty": 2}))
        if minute == 40:
            model.learn_event(user_event("search", T0 + timedelta(minutes=40), item_id=None, category="coffee",
                                         cell=CELL))
        # An hour is revealed only once events five minutes (the lateness) past its end arrive.
        assert model.hours_closed == (1 if minute >= 65 else 0)
    model.learn_event(user_event("view", T0 + timedelta(hours=2, minutes=10)))
    assert model.hours_closed == 2
    latte = model.items["latte"]
    assert (latte.views, latte.sales, latte.units, latte.revenue) == (25, 1, 2.0, 8.0)
    assert latte.capacity == 3 and latte.business_id == "b1" and latte.title == "Latte"
    assert model.area_forecaster.n_learned == 2  # one area series, two hours
    assert model.item_forecaster.n_learned == 2
    # Sales are learned against the area's traffic other than the item's own views: the first hour
    # had a search besides them, the second nothing else, so it taught nothing about price.
    assert model.elasticity.n_learned == 1
    assert latte.others_share < 1.0


def test_market_model_late_duplicate_and_lifecycle_events() -> None:
    model = MarketModel(lateness_s=60.0)
    model.learn_event(item_event("latte", T0, 4.0))
    view = user_event("view", T0 + timedelta(minutes=5), event_id="v1")
    model.learn_event(view)
    model.learn_event(view)  # replayed
    assert model.n_duplicates == 1 and model.items["latte"].views == 1
    model.learn_event(user_event("view", T0 + timedelta(hours=1, minutes=5)))  # closes the first hour
    model.learn_event(user_event("view", T0 + timedelta(minutes=50), event_id="late"))
    assert model.n_late == 1 and model.items["latte"].views == 2
    model.learn_event(item_event("latte", T0 + timedelta(hours=1, minutes=10), 3.5, op="update", original=4.0))
    latte = model.items["latte"]
    assert latte.price == 3.5 and latte.list_price == 4.0 and latte.price_changes == 1
    assert latte.price_at(T0.timestamp()) == 4.0 and latte.price_at(T0.timestamp() + 7200) == 3.5
    model.learn_event(item_event("latte", T0 + timedelta(hours=1, minutes=20), 3.5, op="delete"))
    assert model.items["latte"].deleted and not model.items["latte"].active_at(T0.timestamp() + 7200)
    assert [i.item_id for i in model.items_of("b1")] == ["latte"]


def test_market_model_saves_loads_and_refuses_other_versions(tmp_path: Path) -> None:
    model = MarketModel()
    model.learn_event(item_event("latte", T0, 4.0))
    path = model.save(tmp_path / "models" / "market.pkl")
    loaded = MarketModel.load(path)
    assert loaded.items["latte"].price == 4.0 and loaded.version == MODEL_VERSION
    loaded.version = MODEL_VERSION + 1
    loaded.save(path)
    with pytest.raises(ValueError, match="version"):
        MarketModel.load(path)
    import pickle

    path.write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(TypeError, match="not a MarketModel"):
        MarketModel.load(path)
    assert market_model_path(Settings(home=tmp_path)) == tmp_path / "models" / "market.pkl"


def test_build_market_model_replays_the_offline_log_in_event_time_order(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    log = OfflineLog(settings.offline_dir)
    events = [item_event("latte", T0, 4.0)]
    events += [user_event("view", T0 + timedelta(minutes=10 * k)) for k in range(30)]
    # Written in two parts, the later part first: the replay must sort them.
    log.write_events(events[16:])
    log.write_events(events[:16])
    log.write_events(events[:3])  # at-least-once delivery wrote a few twice
    model = build_market_model(settings)
    assert model.items["latte"].views == 30 and model.n_late == 0 and model.n_events == 31
    assert model.hours_closed == 4
    assert build_market_model(Settings(home=tmp_path / "empty")).n_events == 0


def test_demand_outlook_compares_with_the_usual_for_the_time() -> None:
    model = MarketModel()
    model.learn_event(item_event("latte", T0 - timedelta(days=8), 4.0))
    week_ago = T0.replace(hour=0) - timedelta(days=7)
    for h in range(7 * 24 + 8):  # a week up to Monday 8:00; every morning at 8: 10 views, else 1
        start = week_ago + timedelta(hours=h)
        for k in range(10 if start.hour == 8 else 1):
            model.learn_event(user_event("view", start + timedelta(minutes=1 + k)))
    area = model.items["latte"].area
    assert area is not None
    monday_8 = T0.replace(hour=8)
    outlook = model.demand_outlook(area, "coffee", monday_8)
    assert outlook.usual == pytest.approx(10.0, abs=1.5)
    assert outlook.forecast is not None and outlook.forecast > 5.0 and not outlook.stale
    assert model.demand_outlook("unknown-area", "coffee", monday_8).forecast is None
    later = model.demand_outlook(area, "coffee", monday_8 + timedelta(days=14))
    assert later.stale and later.forecast == later.usual  # too far past the data: the profile only
    pricing, _, missing = model.pricing_input("latte", "coffee", area, 4.0, 4.0, monday_8, utc_offset_h=-4)
    assert pricing.slot_label == "Monday 04:00" and pricing.expected_sales is not None
    assert missing == ["sales at different prices for coffee (no price response learned yet)"]


def test_slot_label_reads_local_time() -> None:
    assert slot_label(datetime(2026, 5, 4, 1, tzinfo=UTC), -5) == "Sunday 20:00"


# ---- the pricing environment -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    stage=st.sampled_from(sorted(STAGE_BASE)),
    interest=st.floats(min_value=0.0, max_value=1.0),
    distance=st.floats(min_value=0.0, max_value=10.0),
    price=st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=300.0)),
    reference=st.floats(min_value=1.0, max_value=200.0),
    discount=st.floats(min_value=0.0, max_value=0.9),
    sensitivity=st.floats(min_value=0.0, max_value=1.0),
    demand=st.floats(min_value=0.0, max_value=4.0),
)
def test_vectorised_truth_equals_the_simulator_formula(
    stage: str, interest: float, distance: float, price: float, reference: float, discount: float,
    sensitivity: float, demand: float,
) -> None:
    ours = stage_probability(stage, np.array([interest]), np.array([distance]), price, reference, discount,
                             np.array([sensitivity]), demand)
    truth = engagement_probability(stage, interest, distance, price, reference, discount, sensitivity, demand)
    assert float(ours[0]) == pytest.approx(truth, rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def env() -> PricingEnv:
    return PricingEnv(PricingEnvConfig(days=3, n_businesses=6, seed=3))


def test_oracle_prices_beat_any_fixed_price_in_expectation(env: PricingEnv) -> None:
    for item in env.items:
        oracle = env.oracle_prices(item)
        assert ((oracle >= item.cost_floor - 0.01) & (oracle <= item.ceiling + 0.01)).all()
        for hour in range(0, env.hours, 5):
            best = env.expected_revenue(item, hour, float(oracle[hour]))
            for price in (item.cost_floor, item.posted_price, item.ceiling):
                assert best >= env.expected_revenue(item, hour, price) - 1e-9


def test_stepwise_oracle_obeys_the_step_and_sits_between_fixed_and_oracle(env: PricingEnv) -> None:
    for item in env.items:
        path = env.stepwise_oracle_prices(item, 0.15)
        steps = path[1:] / path[:-1]
        assert (steps <= 1.15 + 1e-6).all() and (steps >= 0.85 - 1e-6).all()
        assert abs(path[0] / item.posted_price - 1) <= 0.15 + 0.01
        total = sum(env.expected_revenue(item, h, float(path[h])) for h in range(env.hours))
        oracle = sum(env.expected_revenue(item, h, float(p)) for h, p in enumerate(env.oracle_prices(item)))
        assert total <= oracle + 1e-6


def test_hours_are_reproducible_and_respect_capacity(env: PricingEnv) -> None:
    prices = {i.item_id: i.posted_price for i in env.items}
    first, again = env.step(12, prices), env.step(12, prices)
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    for item in env.items:
        assert first.sales[item.item_id] <= item.capacity
        bought = [e for e in first.events if e.kind == "purchase" and e.item_id == item.item_id]
        assert len(bought) == first.sales[item.item_id]
        assert first.revenue[item.item_id] == pytest.approx(len(bought) * item.posted_price)
    stamps = [e.ts for e in first.events]
    assert stamps == sorted(stamps) and all(env.hour_start(12) <= t < env.hour_start(13) for t in stamps)
    # The same draws at a lower price: at least as many views (a discount never repels).
    cheaper = env.step(12, {i.item_id: i.cost_floor for i in env.items}, events=True)
    assert sum(e.kind == "view" for e in cheaper.events) >= sum(e.kind == "view" for e in first.events)


def test_item_events_decode_into_market_items(env: PricingEnv) -> None:
    model = MarketModel()
    model.learn_many(env.item_events())
    for item in env.items:
        state = model.items[item.item_id]
        assert state.capacity == item.capacity and state.price == item.posted_price
        assert state.list_price == item.list_price


def test_pricing_bench_runs_all_policies_on_a_small_world() -> None:
    from kairos.bench.pricing import run_pricing

    result = run_pricing(PricingEnvConfig(days=3, n_businesses=6, seed=3), progress=False)
    policies = result["policies"]
    assert set(policies) == {"fixed", "kairos", "oracle", "oracle_stepwise"}
    assert policies["oracle"]["expected_revenue"] >= policies["oracle_stepwise"]["expected_revenue"] - 1e-6
    assert policies["oracle_stepwise"]["expected_revenue"] >= policies["fixed"]["expected_revenue"] - 1e-6
    assert result["events_learned"] > 0 and result["market_model"]["hours_learned"] >= 70
    assert result["goal"]["met"] == (result["goal"]["over_fixed"] >= 0.10 and result["goal"]["share_of_oracle"] >= 0.90)
    assert math.isfinite(policies["kairos"]["revenue"]) and policies["kairos"]["revenue"] > 0


def test_pricing_env_is_seeded() -> None:
    a = PricingEnv(PricingEnvConfig(days=2, n_businesses=4, seed=9))
    b = PricingEnv(PricingEnvConfig(days=2, n_businesses=4, seed=9))
    assert [(i.item_id, i.list_price, i.cost_floor) for i in a.items] == \
        [(i.item_id, i.list_price, i.cost_floor) for i in b.items]
    rng = random.Random(0)
    hour = rng.randrange(a.hours)
    prices = {i.item_id: i.posted_price for i in a.items}
    assert a.step(hour, prices).sales == b.step(hour, prices).sales


@pytest.mark.parametrize(
    "module",
    ["online.price_elasticity", "online.price_recommender", "online.market_model", "kairos.simulate.pricing_env"],
)
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
