"""``kairos bench regret``: how much engagement the bandit ranker wins, against the oracle.

The simulated city's hidden behaviour model (:func:`kairos.simulate.model.engagement_probability`)
decides whether a user engages with what they are shown. Every interaction, each policy shows the
user one item from the same candidates (active items near where the user is, at that time); the
user opens it (the simulator's ``view`` stage) and clicks through (``click``) with the hidden
probabilities. The reward is the click-through: what :mod:`flows.attribution` labels 1.

Policies, all fed the same interactions in the same run:

* ``oracle`` knows the hidden probabilities and shows the best item: the ceiling;
* ``random`` shows any candidate;
* ``popularity`` shows the item with the best click-through rate so far (smoothed, all users);
* ``transparent`` is the hand-weighted ranker the API started with;
* ``epsilon_greedy`` is the bandit's model, greedy, with a random item 10 % of the time;
* ``bandit`` is :class:`online.bandit.BanditRanker` with Thompson sampling (the default ranker).

Learned policies see only what Kairos sees: each keeps its own feature state, built as the flow
would from the views and clicks *it* caused (category affinity, discount sensitivity, per-item
views and clicks), on top of the same short history every user starts with. The oracle's edge is
therefore real: it knows tastes the others must infer.

Rewards are counted two ways: ``expected`` (the sum of the hidden click probabilities of what was
shown; the usual pseudo-regret, free of coin-flip noise) and ``realised`` (clicks drawn with the
same random numbers for every policy). The goal is judged on the last half, once learning had a
chance: ``bandit / oracle`` expected reward.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import typer

from kairos.bench import emit

POLICIES = ("oracle", "random", "popularity", "transparent", "epsilon_greedy", "bandit")
#: Category-affinity weights of the events an impression can cause (as in kairos.features).
VIEW_WEIGHT, CLICK_WEIGHT = 1.0, 2.0
DISCOUNTED = 0.10


@dataclass
class RegretConfig:
    interactions: int = 60_000
    seed: int = 11
    users: int = 400
    businesses: int = 120
    days: int = 7
    radius_km: float = 4.0
    #: The nearest this-many active items are the candidates (what the catalog query returns).
    max_candidates: int = 20
    #: Random impressions per user before the run: the history the feature store starts with.
    history: int = 20
    epsilon: float = 0.1
    #: Forgetting of the bandit's model (None: BanditRanker's default). The simulated tastes do not
    #: drift, so here forgetting can only cost; it is there for a world that does.
    forgetting: float | None = None
    start: str = "2026-03-02T00:00:00+00:00"

    def validate(self) -> None:
        if self.interactions < 2:
            raise ValueError("interactions must be at least 2")
        if self.users < 1 or self.businesses < 3 or self.days < 1:
            raise ValueError("need at least 1 user, 3 businesses and 1 day")
        if self.max_candidates < 2 or self.radius_km <= 0 or self.history < 0:
            raise ValueError("max_candidates must be >= 2, radius_km > 0 and history >= 0")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError("epsilon must be within [0, 1]")
        if self.forgetting is not None and not 0.0 <= self.forgetting < 1.0:
            raise ValueError("forgetting must be within [0, 1)")


# ---------------------------------------------------------------------------------- environment


@dataclass
class Interaction:
    """One moment a user is shown one item: who, when, where, the candidates and the hidden truth."""

    ts: float
    user: Any
    city: str
    lat: float
    lon: float
    items: list[Any]  # simulator Items
    distances: np.ndarray
    prices: np.ndarray
    p_view: np.ndarray
    p_click: np.ndarray  # given a view
    u_view: np.ndarray  # shared random numbers: every policy faces the same coin flips
    u_click: np.ndarray

    @property
    def p_engage(self) -> np.ndarray:
        return self.p_view * self.p_click


class CityEnvironment:
    """The simulated city of :mod:`kairos.simulate` with its hidden engagement model."""

    def __init__(self, config: RegretConfig) -> None:
        from kairos.schema import CATEGORIES
        from kairos.simulate.behaviour import ItemIndex
        from kairos.simulate.items import build_items
        from kairos.simulate.model import TRAVEL_BLEND, TRAVEL_INTERESTS, demand_curves
        from kairos.simulate.world import DAY_S, build_businesses, build_users

        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.start = datetime.fromisoformat(config.start).astimezone(timezone.utc).timestamp()
        self.end = self.start + config.days * DAY_S
        self.businesses = build_businesses(self.rng, config.businesses, 0.15, self.start)
        self.users = build_users(self.rng, config.users, 0.2, 0.08, self.start, self.end)
        self.items = build_items(self.rng, self.businesses, self.start, self.end)
        self.index = ItemIndex(self.items)
        self.categories = CATEGORIES
        self.category_code = {c: i for i, c in enumerate(CATEGORIES)}
        self.demand = np.array([demand_curves()[c] for c in CATEGORIES])
        self.travel_interests = np.array([TRAVEL_INTERESTS[c] for c in CATEGORIES])
        self.travel_blend = TRAVEL_BLEND
        self.activity = np.array([u.activity for u in self.users])
        self.places: dict[tuple[str, int], np.ndarray] = defaultdict(lambda: np.zeros((0, 2)))
        for b in self.businesses:
            key = (b.city, self.category_code[b.category])
            self.places[key] = np.vstack([self.places[key], [b.lat, b.lon]])

    def interaction(self, ts: float) -> Interaction:
        """A user who is awake at ``ts`` somewhere they would be, with at least two candidates."""
        user, city, lat, lon, items, dist, interests, how = self.moment(ts)
        p_view, p_click, prices = self.truth(items, dist, user, interests, how, ts)
        n = len(items)
        return Interaction(ts, user, city, lat, lon, items, dist, prices, p_view, p_click,
                           self.rng.random(n), self.rng.random(n))

    def moment(self, ts: float) -> tuple[Any, str, float, float, list[Any], np.ndarray, np.ndarray, int]:
        """(user, city, lat, lon, candidate items, distances, interests now, hour of week)."""
        from kairos.simulate.model import CITIES, hour_of_week
        from kairos.simulate.world import offset_km

        rng = self.rng
        weights = self.activity / self.activity.sum()
        for _attempt in range(10_000):
            user = self.users[int(rng.choice(len(self.users), p=weights))]
            trip = user.trip_at(ts)
            city = trip.city if trip else user.city
            local = datetime.fromtimestamp(ts, timezone.utc).astimezone(CITIES[city].zone)
            hour = local.hour + local.minute / 60.0
            sleep = user.sleep_hour
            if not ((user.wake_hour <= hour < sleep) or (sleep > 24 and hour < sleep - 24)):
                continue
            how = hour_of_week(ts, CITIES[city])
            interests = user.interests
            if trip is not None:
                # What the simulator does: a trip shifts tastes towards resting and sightseeing.
                interests = (1 - self.travel_blend) * interests + self.travel_blend * self.travel_interests
            if trip is not None:
                anchor, sigma = trip.hotel, 1.5
            elif user.work is not None and local.weekday() < 5 and 9.0 <= hour < 17.5 and rng.random() < 0.8:
                anchor, sigma = user.work, 0.3
            elif rng.random() < 0.5:
                anchor, sigma = user.home, 0.3
            else:  # out: where the shops of a wanted category are
                want = interests * self.demand[:, how]
                code = int(rng.choice(len(want), p=want / want.sum()))
                places = self.places[(city, code)]
                if not len(places):
                    continue
                anchor, sigma = tuple(places[int(rng.integers(len(places)))]), 0.3
            north, east = rng.normal(0.0, sigma, 2)
            lat, lon = offset_km(anchor[0], anchor[1], float(north), float(east))
            idx, dist = self.index.near(ts, city, lat, lon, self.config.radius_km)
            if len(idx) < 2:
                continue
            keep = np.argsort(dist, kind="stable")[: self.config.max_candidates]
            idx, dist = idx[keep], dist[keep]
            items = [self.index.items[int(i)] for i in idx]
            return user, city, lat, lon, items, dist, interests, how
        raise RuntimeError(f"no user found with two items open nearby at {ts}: is the city empty?")

    def truth(self, items: list[Any], dist: np.ndarray, user: Any, interests: np.ndarray, how: int,
               ts: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from kairos.simulate.model import BASE_PRICES, engagement_probability

        p_view, p_click, prices = np.zeros(len(items)), np.zeros(len(items)), np.zeros(len(items))
        for k, item in enumerate(items):
            price = item.price_at(ts)
            code = self.category_code[item.category]
            factors = dict(
                interest=float(interests[code]),
                distance_km=float(dist[k]),
                price=price,
                reference_price=BASE_PRICES[item.business.city][item.category],
                discount=1.0 - price / item.original_price if item.original_price else 0.0,
                price_sensitivity=user.price_sensitivity,
                demand=float(self.demand[code, how]),
            )
            p_view[k] = engagement_probability("view", **factors)
            p_click[k] = engagement_probability("click", **factors)
            prices[k] = price
        return p_view, p_click, prices

    def timeline(self, n: int) -> list[float]:
        """``n`` moments spread over the period in time order (items appear and expire as they go)."""
        span = self.end - self.start
        return [self.start + (k + float(self.rng.random())) / n * span for k in range(n)]


# ------------------------------------------------------------------------------ observed state


@dataclass
class Observed:
    """What the feature store knows, built from the events a policy's impressions caused."""

    affinity: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    engaged: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    item_views: Counter = field(default_factory=Counter)
    item_clicks: Counter = field(default_factory=Counter)

    def user_row(self, user_id: str) -> dict[str, Any]:
        weights = self.affinity.get(user_id)
        total = sum(weights.values()) if weights else 0.0
        engaged, discounted = self.engaged.get(user_id, (0, 0))
        return {
            "category_affinity": {c: v / total for c, v in weights.items()} if total else {},
            "discount_sensitivity": discounted / engaged if engaged else None,
        }

    def record(self, user_id: str, item: Any, price: float, viewed: bool, clicked: bool) -> None:
        if viewed:
            self.affinity[user_id][item.category] += VIEW_WEIGHT
            self.item_views[item.id] += 1
        if clicked:
            self.affinity[user_id][item.category] += CLICK_WEIGHT
            self.item_clicks[item.id] += 1
            counts = self.engaged[user_id]
            counts[0] += 1
            discount = 1.0 - price / item.original_price if item.original_price else 0.0
            counts[1] += 1 if discount >= DISCOUNTED else 0


def candidates(interaction: Interaction, observed: Observed) -> list[Any]:
    from online.transparent_ranker import Candidate

    return [
        Candidate(
            item_id=item.id, category=item.category, lat=item.business.lat, lon=item.business.lon,
            price=float(interaction.prices[k]), original_price=item.original_price,
            valid_from=item.valid_from, valid_to=item.valid_to, kind=item.kind,
            business_id=item.business.id, views_24h=observed.item_views[item.id],
            clicks_24h=observed.item_clicks[item.id],
        )
        for k, item in enumerate(interaction.items)
    ]


def rank_context(interaction: Interaction, cands: list[Any], observed: Observed) -> Any:
    from online.transparent_ranker import RankContext

    at = datetime.fromtimestamp(interaction.ts, timezone.utc)
    return RankContext.build(interaction.lat, interaction.lon, at, cands, radius_km=3.0,
                             user=observed.user_row(interaction.user.id))


# ----------------------------------------------------------------------------------- policies


class Policy:
    name = "policy"

    def __init__(self, observed: Observed, rng: np.random.Generator) -> None:
        self.observed, self.rng = observed, rng

    def choose(self, interaction: Interaction) -> tuple[int, Any]:
        raise NotImplementedError

    def update(self, interaction: Interaction, chosen: int, memo: Any, viewed: bool, clicked: bool) -> None:
        self.observed.record(interaction.user.id, interaction.items[chosen], float(interaction.prices[chosen]),
                             viewed, clicked)


class Oracle(Policy):
    name = "oracle"

    def choose(self, interaction: Interaction) -> tuple[int, Any]:
        return int(np.argmax(interaction.p_engage)), None


class Uniform(Policy):
    name = "random"

    def choose(self, interaction: Interaction) -> tuple[int, Any]:
        return int(self.rng.integers(len(interaction.items))), None


class Popularity(Policy):
    """Best smoothed click-through rate so far (views -> clicks), the same for every user."""

    name = "popularity"
    prior_ctr, prior_views = 0.3, 5.0

    def choose(self, interaction: Interaction) -> tuple[int, Any]:
        obs = self.observed
        ctr = np.array([(obs.item_clicks[i.id] + self.prior_ctr * self.prior_views)
                        / (obs.item_views[i.id] + self.prior_views) for i in interaction.items])
        best = np.flatnonzero(ctr >= ctr.max() - 1e-12)
        return int(best[int(self.rng.integers(len(best)))]), None


class RankerPolicy(Policy):
    """Any ranker with ``rank(context, candidates, limit)``; learns when it has ``learn_one``."""

    def __init__(self, name: str, ranker: Any, observed: Observed, rng: np.random.Generator) -> None:
        super().__init__(observed, rng)
        self.name, self.ranker = name, ranker

    def choose(self, interaction: Interaction) -> tuple[int, Any]:
        cands = candidates(interaction, self.observed)
        context = rank_context(interaction, cands, self.observed)
        kwargs = {"explain": False} if hasattr(self.ranker, "learn_one") else {}
        top = self.ranker.rank(context, cands, limit=1, **kwargs)[0]
        chosen = next(k for k, c in enumerate(cands) if c.item_id == top.item.item_id)
        return chosen, getattr(top, "features", None)

    def update(self, interaction: Interaction, chosen: int, memo: Any, viewed: bool, clicked: bool) -> None:
        if memo is not None:
            self.ranker.learn_one(memo, clicked)
        super().update(interaction, chosen, memo, viewed, clicked)


class FastTransparent:
    """:class:`TransparentRanker`'s order (same parts, weights and tie-breaks) without writing a
    reason for every candidate: the benchmark ranks about a million of them."""

    def __init__(self) -> None:
        from online.transparent_ranker import TransparentRanker

        self.ranker = TransparentRanker()

    def rank(self, context: Any, items: list[Any], limit: int | None = None) -> list[Any]:
        from online.bandit import compute_parts
        from online.transparent_ranker import ScoredItem, sensitivity_multiplier

        price_weight = sensitivity_multiplier(context.discount_sensitivity)
        scored = []
        for item in items:
            parts, distance, minutes = compute_parts(self.ranker, context, item)
            contributions = {
                name: self.ranker.weights[name] * value
                * (price_weight if name in ("discount", "price_vs_area") else 1.0)
                for name, value in parts.items()
            }
            scored.append(ScoredItem(item, sum(contributions.values()), parts, contributions, "", distance, minutes))
        scored.sort(key=lambda s: (-s.score, s.distance_km, s.item.item_id))
        return scored if limit is None else scored[:limit]


# -------------------------------------------------------------------------------------- run


def build_policies(config: RegretConfig, history: Observed) -> list[Policy]:
    from online.bandit import BanditRanker

    def fresh(k: int) -> tuple[Observed, np.random.Generator]:
        return copy.deepcopy(history), np.random.default_rng(config.seed * 100 + k)

    tuning = {} if config.forgetting is None else {"forgetting": config.forgetting}

    return [
        Oracle(*fresh(0)),
        Uniform(*fresh(1)),
        Popularity(*fresh(2)),
        RankerPolicy("transparent", FastTransparent(), *fresh(3)),
        RankerPolicy("epsilon_greedy", BanditRanker(exploration="epsilon", epsilon=config.epsilon,
                                                    seed=config.seed + 4, **tuning), *fresh(4)),
        RankerPolicy("bandit", BanditRanker(exploration="thompson", seed=config.seed + 5, **tuning), *fresh(5)),
    ]


def warm_history(env: CityEnvironment, config: RegretConfig) -> Observed:
    """Each user's short history before the run: random items shown, hidden-model responses."""
    history = Observed()
    if config.history == 0:
        return history
    for ts in env.timeline(config.history * len(env.users)):
        user, _city, _lat, _lon, items, dist, interests, how = env.moment(ts)
        k = int(env.rng.integers(len(items)))  # the hidden model is asked about the shown item only
        p_view, p_click, prices = env.truth(items[k:k + 1], dist[k:k + 1], user, interests, how, ts)
        viewed = bool(env.rng.random() < p_view[0])
        clicked = viewed and bool(env.rng.random() < p_click[0])
        history.record(user.id, items[k], float(prices[0]), viewed, clicked)
    return history


def run_regret(config: RegretConfig, progress: bool = False) -> dict[str, Any]:
    config.validate()
    began = time.perf_counter()
    env = CityEnvironment(config)
    history = warm_history(env, config)
    policies = build_policies(config, history)
    n = config.interactions
    half = n // 2
    expected = np.zeros((len(policies), n))
    realised = np.zeros((len(policies), n))
    seconds = np.zeros(len(policies))
    sizes = np.zeros(n)
    for t, ts in enumerate(env.timeline(n)):
        interaction = env.interaction(ts)
        sizes[t] = len(interaction.items)
        for p, policy in enumerate(policies):
            tick = time.perf_counter()
            chosen, memo = policy.choose(interaction)
            viewed = bool(interaction.u_view[chosen] < interaction.p_view[chosen])
            clicked = viewed and bool(interaction.u_click[chosen] < interaction.p_click[chosen])
            policy.update(interaction, chosen, memo, viewed, clicked)
            seconds[p] += time.perf_counter() - tick
            expected[p, t] = interaction.p_engage[chosen]
            realised[p, t] = clicked
        if progress and (t + 1) % 5000 == 0:
            print(f"regret: {t + 1}/{n} interactions, {time.perf_counter() - began:.0f} s", file=sys.stderr)

    oracle = POLICIES.index("oracle")
    result: dict[str, Any] = {
        "benchmark": "regret",
        "config": asdict(config),
        "interactions": n,
        "mean_candidates": round(float(sizes.mean()), 2),
        "reward": "click-through (view then click) of the one item shown, hidden engagement model",
        "policies": {},
    }
    for p, policy in enumerate(policies):
        last = slice(half, n)
        result["policies"][policy.name] = {
            "expected_reward_total": round(float(expected[p].sum()), 2),
            "expected_reward_last_half": round(float(expected[p, last].sum()), 2),
            "realised_clicks_total": int(realised[p].sum()),
            "realised_clicks_last_half": int(realised[p, last].sum()),
            "share_of_oracle_last_half": round(float(expected[p, last].sum() / expected[oracle, last].sum()), 4),
            "realised_share_of_oracle_last_half": round(
                float(realised[p, last].sum() / max(1.0, realised[oracle, last].sum())), 4),
            "regret_last_half": round(float(expected[oracle, last].sum() - expected[p, last].sum()), 2),
            "mean_decision_ms": round(float(1000 * seconds[p] / n), 3),
        }
    # Cumulative expected reward at ten checkpoints: the learning curve, for plots and the doc.
    checkpoints = [int(round(n * k / 10)) for k in range(1, 11)]
    result["cumulative_expected_reward"] = {
        policy.name: [round(float(expected[p, :c].sum()), 1) for c in checkpoints] for p, policy in enumerate(policies)
    }
    result["checkpoints"] = checkpoints
    bandit = result["policies"]["bandit"]
    popularity = result["policies"]["popularity"]
    result["goal"] = {
        "bandit_share_of_oracle_last_half": bandit["share_of_oracle_last_half"],
        "target": 0.85,
        "met": bandit["share_of_oracle_last_half"] >= 0.85
        and bandit["expected_reward_last_half"] > popularity["expected_reward_last_half"],
        "bandit_over_popularity_last_half": round(
            bandit["expected_reward_last_half"] / max(1e-9, popularity["expected_reward_last_half"]), 3),
    }
    result["seconds"] = round(time.perf_counter() - began, 1)
    return result


def register(app: typer.Typer) -> None:
    @app.command("regret")
    def regret(
        interactions: int = typer.Option(60_000, help="interactions per policy (all policies see the same)"),
        seed: int = typer.Option(11, help="seed of the simulated city and of the interactions"),
        users: int = typer.Option(400, help="simulated users"),
        businesses: int = typer.Option(120, help="simulated businesses"),
        days: int = typer.Option(7, help="simulated days the interactions are spread over"),
        history: int = typer.Option(20, help="random impressions per user before the run"),
        forgetting: float = typer.Option(None, help="forgetting of the learned models (default: the ranker's)"),
        as_json: bool = typer.Option(False, "--json", help="print the whole result as JSON"),
        quiet: bool = typer.Option(False, help="no progress lines on stderr"),
    ) -> None:
        """Cumulative reward of the bandit beside the oracle, random, popularity and epsilon-greedy."""
        config = RegretConfig(interactions=interactions, seed=seed, users=users, businesses=businesses,
                              days=days, history=history, forgetting=forgetting)
        try:
            config.validate()
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        result = run_regret(config, progress=not quiet)
        result["command"] = "kairos bench regret " + " ".join(sys.argv[3:])
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}
        if as_json:
            emit(json.loads(json.dumps(result, default=float)))
        else:
            for name, numbers in result["policies"].items():
                typer.echo(f"{name:>15}  last half: {numbers['expected_reward_last_half']:>9.1f} expected clicks, "
                           f"{100 * numbers['share_of_oracle_last_half']:5.1f} % of the oracle")
            typer.echo(f"goal (bandit >= 85 % of the oracle, above popularity): "
                       f"{'met' if result['goal']['met'] else 'NOT met'}")
        if not math.isfinite(result["policies"]["bandit"]["share_of_oracle_last_half"]):
            raise typer.Exit(1)
