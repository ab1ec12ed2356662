"""``kairos bench pricing``: a simulated month of revenue with Kairos's recommended prices.

The environment (:mod:`kairos.simulate.pricing_env`) is the simulated city's known demand model:
businesses each sell one item with a capacity per hour, people see it at the category's hourly
rhythm and buy by the simulator's engagement formula at the price of the hour. Four price policies
run over the same month with the same random draws:

* ``fixed``: the posted price, all month (what a business does without a pricing feed);
* ``kairos``: every hour, :class:`online.price_recommender.PriceRecommender` on what
  :class:`online.market_model.MarketModel` has learned so far from the month's own events (item
  events, views, purchases, its own price changes), starting from nothing;
* ``oracle``: the revenue-maximising price of every hour, knowing the truth, within the same
  floor and ceiling (no limit on the change per hour);
* ``oracle_stepwise``: the best price path knowing the truth under every guardrail the
  recommender obeys, including the largest change per hour (dynamic programming).

Revenue is reported realised (sales drawn with the same random numbers for every policy) and
expected (the truth's expectation at the prices set; free of draw noise). The goal: Kairos earns
at least 10 % more than fixed prices and is within 10 % of the oracle.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict
from typing import Any

import typer

from kairos.bench import emit

GOAL_OVER_FIXED = 0.10
GOAL_WITHIN_ORACLE = 0.10


def run_pricing(config: Any, max_step: float = 0.15, progress: bool = True) -> dict[str, Any]:
    """Run the four policies over one environment; returns the JSON-ready result."""
    import numpy as np

    from kairos.geo import haversine_km
    from kairos.simulate.pricing_env import MAX_MARKUP, PricingEnv
    from online.market_model import MarketModel
    from online.price_recommender import PriceRecommender

    began = time.perf_counter()
    env = PricingEnv(config)
    items = env.items
    hours = env.hours
    _say(progress, f"pricing: {len(items)} items, {hours} hours")

    fixed = {i.item_id: np.full(hours, i.posted_price) for i in items}
    oracle = {i.item_id: env.oracle_prices(i) for i in items}
    stepwise = {i.item_id: env.stepwise_oracle_prices(i, max_step) for i in items}

    model = MarketModel(area_resolution=7)
    recommender = PriceRecommender(max_step=max_step, max_markup=MAX_MARKUP)
    model.learn_many(env.item_events())
    competitors = {
        i.item_id: [j.item_id for j in items if j is not i and j.category == i.category
                    and haversine_km(i.lat, i.lon, j.lat, j.lon) <= 1.0]
        for i in items
    }
    current = {i.item_id: i.posted_price for i in items}
    kairos = {i.item_id: np.zeros(hours) for i in items}
    realised = {"kairos": 0.0}
    events = 0
    changes = 0
    learn_s = 0.0
    for h in range(hours):
        at = env.hour_start(h)
        # The environment delivers every event of an hour before the next begins: no lateness.
        model.advance(at.timestamp())
        for item in items:
            state = model.items[item.item_id]
            pricing, _, _ = model.pricing_input(
                item.item_id, item.category, state.area or "", current[item.item_id], item.list_price, at,
                original_price=item.original_price, capacity=item.capacity, cost_floor=item.cost_floor,
                competitor_prices=tuple(current[c] for c in competitors[item.item_id]), utc_offset_h=-5,
            )
            price = recommender.recommend(pricing).recommended_price
            if price != current[item.item_id]:
                current[item.item_id] = price
                changes += 1
                model.learn_event(env.price_event(item, h, price))
            kairos[item.item_id][h] = price
        outcome = env.step(h, current)
        realised["kairos"] += sum(outcome.revenue.values())
        events += len(outcome.events)
        t = time.perf_counter()
        model.learn_many(outcome.events)
        learn_s += time.perf_counter() - t
        if progress and (h + 1) % (24 * 7) == 0:
            _say(progress, f"  day {(h + 1) // 24}: kairos revenue so far {realised['kairos']:,.0f}")

    policies: dict[str, dict[str, np.ndarray]] = {
        "fixed": fixed, "kairos": kairos, "oracle": oracle, "oracle_stepwise": stepwise}
    result_policies: dict[str, dict[str, Any]] = {}
    for name, paths in policies.items():
        expected = sum(env.expected_revenue(i, h, float(paths[i.item_id][h])) for i in items for h in range(hours))
        if name == "kairos":
            real = realised["kairos"]
        else:
            real = sum(sum(env.step(h, {i.item_id: float(paths[i.item_id][h]) for i in items},
                                    events=False).revenue.values()) for h in range(hours))
        mean_ratio = float(np.mean([np.mean(paths[i.item_id] / i.list_price) for i in items]))
        result_policies[name] = {"revenue": round(real, 2), "expected_revenue": round(expected, 2),
                                 "mean_price_vs_list": round(mean_ratio, 4)}
    for numbers in result_policies.values():
        for basis in ("revenue", "expected_revenue"):
            numbers[f"{basis}_vs_fixed"] = round(numbers[basis] / result_policies["fixed"][basis] - 1, 4)
            numbers[f"{basis}_share_of_oracle"] = round(numbers[basis] / result_policies["oracle"][basis], 4)
    k = result_policies["kairos"]
    goal = {
        "rule": "kairos revenue >= 1.10 x fixed and >= 0.90 x oracle (realised revenue)",
        "over_fixed": k["revenue_vs_fixed"],
        "share_of_oracle": k["revenue_share_of_oracle"],
        "share_of_oracle_stepwise": round(k["revenue"] / result_policies["oracle_stepwise"]["revenue"], 4),
    }
    goal["met"] = bool(goal["over_fixed"] >= GOAL_OVER_FIXED and goal["share_of_oracle"] >= 1 - GOAL_WITHIN_ORACLE)
    return {
        "benchmark": "pricing",
        "config": {**{k2: (str(v) if not isinstance(v, (int, float, tuple)) else v)
                      for k2, v in asdict(config).items()}, "max_step": max_step, "max_markup": MAX_MARKUP},
        "items": [{"item_id": i.item_id, "category": i.category, "list_price": i.list_price,
                   "posted_price": i.posted_price, "cost_floor": i.cost_floor, "ceiling": round(i.ceiling, 2),
                   "capacity": i.capacity} for i in items],
        "policies": result_policies,
        "goal": goal,
        "kairos_price_changes": changes,
        "events_learned": events,
        "market_model": model.summary(),
        "seconds": {"total": round(time.perf_counter() - began, 1), "learning": round(learn_s, 1)},
    }


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    @app.command("pricing")
    def pricing(
        days: int = typer.Option(30, min=2, help="simulated days"),
        seed: int = typer.Option(5, help="seed of the businesses, audiences and draws"),
        businesses: int = typer.Option(18, min=3, help="simulated businesses (one item each)"),
        max_step: float = typer.Option(0.15, min=0.01, max=0.9, help="largest price change per hour"),
        as_json: bool = typer.Option(False, "--json", help="print the whole result as JSON"),
        quiet: bool = typer.Option(False, help="no progress lines on stderr"),
    ) -> None:
        """Revenue over a simulated month: recommended prices beside fixed and oracle prices."""
        from kairos.simulate.pricing_env import PricingEnvConfig

        config = PricingEnvConfig(days=days, seed=seed, n_businesses=businesses)
        result = run_pricing(config, max_step=max_step, progress=not quiet)
        result["command"] = "kairos bench pricing " + " ".join(sys.argv[3:])
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}
        if as_json:
            emit(json.loads(json.dumps(result, default=float)))
            return
        for name, numbers in result["policies"].items():
            typer.echo(f"{name:>16}  revenue {numbers['revenue']:>12,.0f}  "
                       f"{100 * numbers['revenue_vs_fixed']:+6.1f} % vs fixed  "
                       f"{100 * numbers['revenue_share_of_oracle']:5.1f} % of the oracle")
        typer.echo(f"goal (>= +10 % vs fixed, >= 90 % of the oracle): {'met' if result['goal']['met'] else 'NOT met'}")
