"""A month-long pricing environment driven by the simulator's known demand model.

Businesses of the simulated city (:func:`kairos.simulate.world.build_businesses`, New York) each
sell one standing item: a list price, a posted price (some posted at a discount), a cost floor and
a capacity per hour (covers, slots, seats). Every hour, people who may want the item see it:

* how many see it: Poisson with mean ``impressions × demand curve`` of the category at that local
  hour of the week (:func:`kairos.simulate.model.demand_curves`);
* who they are: drawn from the item's audience (interest in the category, distance, price
  sensitivity, as in the simulator);
* whether they view, click and buy: :func:`kairos.simulate.model.engagement_probability`, the
  simulator's one behaviour formula, at the price of that hour (a price below the list price shows
  as a discount off it); sales beyond the capacity of the hour are lost.

Because the truth is known, so is the *oracle* price of every hour: the price within the item's
floor and ceiling that maximises expected revenue ``price × E[min(capacity, sales)]``. Random
draws are fixed per (item, hour) before any policy runs (common random numbers), so policies
differ only by the prices they set, not by luck.

The environment speaks the product's language: items are canonical item events (with a
``capacity`` attribute), what happens in an hour is canonical ``view`` and ``purchase`` events,
and a price change is an item ``update`` event. Clicks are left out: nothing that prices reads
them.

>>> env = PricingEnv(PricingEnvConfig(days=2, n_businesses=6, seed=3))
>>> len(env.items), env.hours
(6, 48)
>>> item = env.items[0]
>>> prices = {i.item_id: i.posted_price for i in env.items}
>>> outcome = env.step(10, prices)
>>> sorted({e.kind for e in outcome.events}) <= ["purchase", "view"]
True
>>> env.oracle_price(item, 10) >= item.cost_floor
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from kairos.geo import cell_of
from kairos.schema import CATEGORIES, Event
from kairos.simulate.items import round_price
from kairos.simulate.model import (
    BASE_PRICES,
    CITIES,
    DISTANCE_SCALE_KM,
    MAX_PROBABILITY,
    POPULARITY,
    PRICE_ELASTICITY,
    STAGE_BASE,
    STAGE_EXPONENTS,
    demand_curves,
    hour_of_week,
)
from kairos.simulate.world import HOUR_S, build_businesses, offset_km

# The simulator's truth and the recommender's model share one formula: E[min(capacity, Poisson)].
from online.price_recommender import expected_sales

#: Units an item can sell per hour, by category (a café serves more than a masseur).
CAPACITY_PER_HOUR: dict[str, int] = {
    "coffee": 4, "food": 3, "spa": 1, "fitness": 2, "sport": 4, "culture": 3, "retail": 2, "services": 1,
}
#: Stages a sale goes through; a purchase needs all three.
FUNNEL = ("view", "click", "purchase")
CITY = "new-york"


@dataclass
class PricedItem:
    """One business's standing item and its hidden audience."""

    item_id: str
    business_id: str
    category: str
    lat: float
    lon: float
    cell: str
    list_price: float
    posted_price: float
    #: The original price shown when posted at a discount (the price may never exceed it).
    original_price: float | None
    cost_floor: float
    capacity: int
    #: Mean impressions per hour at demand multiplier 1.
    impressions: float
    interest: np.ndarray
    distance_km: np.ndarray
    sensitivity: np.ndarray
    reference_price: float

    @property
    def ceiling(self) -> float:
        return self.original_price if self.original_price is not None else self.list_price * (1 + MAX_MARKUP)


#: Items without an original price may go this far above their list price (the oracle gets the
#: same room as the recommender).
MAX_MARKUP = 0.25


@dataclass
class PricingEnvConfig:
    days: int = 30
    seed: int = 5
    n_businesses: int = 18
    #: First simulated instant (a Monday, midnight UTC).
    start: datetime = datetime(2026, 3, 2, tzinfo=timezone.utc)
    audience: int = 200
    #: Expected buyers at the posted price in the busiest hours, as a multiple of capacity.
    load: tuple[float, float] = (1.0, 2.0)
    #: Cost floor as a share of the list price.
    floor_ratio: tuple[float, float] = (0.6, 0.8)
    #: Share of items posted at a discount off their list price.
    discounted_share: float = 0.4


@dataclass
class HourOutcome:
    events: list[Event]
    sales: dict[str, int]
    revenue: dict[str, float]


@dataclass
class _Draws:
    """Random numbers of one (item, hour), fixed before any policy runs."""

    users: np.ndarray
    uniforms: np.ndarray  # (n, 3): view, click, purchase
    offsets: np.ndarray  # seconds into the hour, sorted


@dataclass
class PricingEnv:
    config: PricingEnvConfig
    items: list[PricedItem] = field(init=False)
    hours: int = field(init=False)

    def __post_init__(self) -> None:
        config = self.config
        rng = np.random.default_rng(config.seed)
        start = config.start.timestamp()
        self.start = start
        self.hours = config.days * 24
        self.curves = demand_curves()
        city = CITIES[CITY]
        self.how = np.array([hour_of_week(start + h * HOUR_S + 1.0, city) for h in range(self.hours)])
        businesses = build_businesses(rng, config.n_businesses, 0.0, start)
        prior = np.array([POPULARITY[c] for c in CATEGORIES]) * len(CATEGORIES) * 0.6
        self.items = []
        for b in businesses:
            index = CATEGORIES.index(b.category)
            base = BASE_PRICES[CITY][b.category]
            list_price = round_price(base * b.price_level * float(rng.lognormal(0.0, 0.1)), "USD")
            discounted = rng.random() < config.discounted_share
            posted = round_price(list_price * (1 - float(rng.choice([0.1, 0.2, 0.3]))), "USD") if discounted \
                else list_price
            n = config.audience
            # The audience of an item is people who would consider it: near, and into its kind
            # of thing (taste drawn as the simulator draws it, for a category they care about).
            interest = rng.dirichlet(prior, n)[:, index]
            interest = np.maximum(interest, rng.uniform(0.1, 0.4, n))
            lat, lon = b.lat, b.lon
            item = PricedItem(
                item_id=f"{b.id}-main", business_id=b.id, category=b.category, lat=lat, lon=lon,
                cell=cell_of(lat, lon, 8), list_price=list_price, posted_price=posted,
                original_price=list_price if discounted else None,
                # Nobody posts below cost: the floor is at most the posted price.
                cost_floor=round(min(list_price * float(rng.uniform(*config.floor_ratio)), posted), 2),
                capacity=CAPACITY_PER_HOUR[b.category], impressions=0.0, interest=interest,
                distance_km=rng.uniform(0.1, 2.5, n), sensitivity=rng.beta(2.0, 2.5, n),
                reference_price=base,
            )
            # Calibrate traffic so that in the busiest hours of the week (the 95th percentile of
            # the category's demand curve) buyers at the posted price are ``load`` x capacity.
            peak = float(np.percentile(self.curves[b.category], 95))
            conversion = float(np.mean(self.funnel(item, posted, peak).prod(axis=0)))
            load = float(rng.uniform(*config.load))
            item.impressions = load * item.capacity / max(conversion * peak, 1e-9)
            self.items.append(item)
        self._tables: dict[tuple[str, int, float, float], np.ndarray] = {}
        self._draws: dict[tuple[int, int], _Draws] = {}
        self._rng = rng
        for i, item in enumerate(self.items):
            curve = self.curves[item.category][self.how]
            counts = rng.poisson(item.impressions * curve)
            for h in range(self.hours):
                n = int(counts[h])
                self._draws[(i, h)] = _Draws(
                    users=rng.integers(0, len(item.interest), n),
                    uniforms=rng.random((n, 3)),
                    offsets=np.sort(rng.uniform(0.0, HOUR_S, n)),
                )

    # ---- the truth ---------------------------------------------------------------------------

    def funnel(self, item: PricedItem, price: float | np.ndarray, demand: float) -> np.ndarray:
        """Probabilities of view, click (given a view) and purchase (given a click) for each
        person of the audience: ``(3, audience)``, or ``(3, G, audience)`` for ``G`` prices."""
        prices = np.asarray(price, dtype=float)
        column = prices.reshape(-1, 1) if prices.ndim else prices
        discount = np.maximum(0.0, 1.0 - column / item.list_price)
        return np.stack([
            stage_probability(stage, item.interest, item.distance_km, column, item.reference_price,
                              discount, item.sensitivity, demand)
            for stage in FUNNEL
        ])

    def demand(self, item: PricedItem, hour: int, price: float | np.ndarray) -> np.ndarray:
        """Expected buyers (before capacity) in ``hour`` at ``price`` (a number or an array)."""
        multiplier = float(self.curves[item.category][self.how[hour]])
        conversion = self.funnel(item, price, multiplier).prod(axis=0).mean(axis=-1)
        return item.impressions * multiplier * conversion

    def expected_revenue(self, item: PricedItem, hour: int, price: float) -> float:
        return float(price * expected_sales(float(self.demand(item, hour, price)), item.capacity))

    def price_grid(self, item: PricedItem, points: int = 81) -> np.ndarray:
        """Candidate prices from the cost floor to the ceiling, evenly spaced in log price."""
        return np.round(np.geomspace(item.cost_floor, item.ceiling, points), 2)

    def revenue_table(self, item: PricedItem, grid: np.ndarray) -> np.ndarray:
        """Expected revenue ``(hour, price)`` over the whole run (cached per hour of the week)."""
        key = (item.item_id, len(grid), float(grid[0]), float(grid[-1]))
        if key not in self._tables:
            by_slot: dict[int, np.ndarray] = {}
            table = np.empty((self.hours, len(grid)))
            for h in range(self.hours):
                slot = int(self.how[h])
                if slot not in by_slot:
                    demand = self.demand(item, h, grid)
                    by_slot[slot] = grid * np.array([expected_sales(float(d), item.capacity) for d in demand])
                table[h] = by_slot[slot]
            self._tables[key] = table
        return self._tables[key]

    def oracle_prices(self, item: PricedItem, points: int = 81) -> np.ndarray:
        """The revenue-maximising price of every hour within the item's floor and ceiling."""
        grid = self.price_grid(item, points)
        return grid[np.argmax(self.revenue_table(item, grid), axis=1)]

    def oracle_price(self, item: PricedItem, hour: int) -> float:
        return float(self.oracle_prices(item)[hour])

    def stepwise_oracle_prices(self, item: PricedItem, max_step: float, points: int = 81) -> np.ndarray:
        """The best price path that also obeys ``max_step`` per hour (dynamic programming over
        the whole run, knowing the truth): the oracle under the recommender's own guardrails."""
        grid = self.price_grid(item, points)
        table = self.revenue_table(item, grid)
        ratio = grid[None, :] / grid[:, None]  # (from, to)
        allowed = (ratio <= 1 + max_step + 1e-9) & (ratio >= 1 - max_step - 1e-9)
        value = np.zeros(len(grid))
        choice = np.zeros((self.hours, len(grid)), dtype=int)
        for h in range(self.hours - 1, -1, -1):
            # value of standing at each price in hour h = revenue now + best reachable next value
            nxt = np.where(allowed, value[None, :], -np.inf)
            choice[h] = np.argmax(nxt, axis=1)
            value = table[h] + nxt[np.arange(len(grid)), choice[h]]
        start = int(np.argmin(np.abs(grid - item.posted_price)))
        reachable = np.where(allowed[start], value, -np.inf)  # first hour: one step from posted
        path = np.empty(self.hours, dtype=int)
        path[0] = int(np.argmax(reachable))
        for h in range(1, self.hours):
            path[h] = choice[h - 1][path[h - 1]]
        return grid[path]

    # ---- the world, hour by hour -------------------------------------------------------------

    def item_events(self) -> list[Event]:
        """Creation events of every item, a day before the month starts."""
        ts = datetime.fromtimestamp(self.start - 86400.0, timezone.utc)
        until = datetime.fromtimestamp(self.start + (self.hours + 24) * HOUR_S, timezone.utc)
        return [
            Event(
                event_id=f"{item.item_id}-create", ts=ts, actor_type="business", actor_id=item.business_id,
                kind="offer", item_id=item.item_id, category=item.category, lat=item.lat, lon=item.lon,
                cell=item.cell, price=item.posted_price, original_price=item.original_price,
                currency="USD", valid_from=ts, valid_to=until, text=f"{item.category} at {item.business_id}",
                attrs={"op": "create", "capacity": item.capacity},
            )
            for item in self.items
        ]

    def price_event(self, item: PricedItem, hour: int, price: float) -> Event:
        """The item update a business writes when it changes the price at the start of ``hour``."""
        ts = self.hour_start(hour)
        original = item.original_price if item.original_price is not None else (
            item.list_price if price < item.list_price else None)
        return Event(
            event_id=f"{item.item_id}-price-{hour}", ts=ts, actor_type="business", actor_id=item.business_id,
            kind="offer", item_id=item.item_id, category=item.category, lat=item.lat, lon=item.lon,
            cell=item.cell, price=price, original_price=original, currency="USD",
            attrs={"op": "update", "capacity": item.capacity},
        )

    def hour_start(self, hour: int) -> datetime:
        return datetime.fromtimestamp(self.start + hour * HOUR_S, timezone.utc)

    def step(self, hour: int, prices: dict[str, float], events: bool = True) -> HourOutcome:
        """What happens in ``hour`` at these prices: events (in time order), sales, revenue."""
        out: list[tuple[float, Event]] = []
        sales: dict[str, int] = {}
        revenue: dict[str, float] = {}
        base = self.start + hour * HOUR_S
        for i, item in enumerate(self.items):
            price = prices[item.item_id]
            draws = self._draws[(i, hour)]
            multiplier = float(self.curves[item.category][self.how[hour]])
            probabilities = self.funnel(item, price, multiplier)[:, draws.users]  # (3, n)
            passed = np.cumprod(probabilities > draws.uniforms.T, axis=0).astype(bool)
            viewed, bought = passed[0], passed[2]
            sold = 0
            for j in range(len(draws.users)):
                if not viewed[j]:
                    continue
                ts = base + float(draws.offsets[j])
                user = f"u{i}-{int(draws.users[j])}"
                if events:
                    out.append((ts, self._engagement(item, "view", hour, j, user, ts, price)))
                if bought[j] and sold < item.capacity:
                    sold += 1
                    if events:
                        out.append((ts + 1.0, self._engagement(item, "purchase", hour, j, user, ts + 1.0, price)))
            sales[item.item_id] = sold
            revenue[item.item_id] = sold * price
        out.sort(key=lambda pair: pair[0])
        return HourOutcome([e for _, e in out], sales, revenue)

    def _engagement(
        self, item: PricedItem, kind: str, hour: int, j: int, user: str, ts: float, price: float
    ) -> Event:
        north, east = math.cos(j) * 0.3, math.sin(j) * 0.3  # users stand around the item
        lat, lon = offset_km(item.lat, item.lon, north, east)
        return Event(
            event_id=f"{item.item_id}-{hour}-{j}-{kind}", ts=datetime.fromtimestamp(ts, timezone.utc),
            actor_type="user", actor_id=user, kind=kind, item_id=item.item_id,
            category=item.category, lat=lat, lon=lon, cell=cell_of(lat, lon, 8),
            price=price if kind == "purchase" else None, currency="USD",
            attrs={"qty": 1, "business_id": item.business_id} if kind == "purchase" else {},
        )


def stage_probability(
    stage: str,
    interest: np.ndarray,
    distance_km: np.ndarray,
    price: float | np.ndarray,
    reference_price: float,
    discount: float | np.ndarray,
    price_sensitivity: np.ndarray,
    demand: float,
) -> np.ndarray:
    """:func:`kairos.simulate.model.engagement_probability` over arrays of people (same formula;
    a test holds the two equal). ``price`` and ``discount`` may be column vectors ``(G, 1)`` of
    candidate prices: the result is then ``(G, people)``."""
    a_interest, a_distance, a_price, a_discount, a_demand = STAGE_EXPONENTS[stage]
    affinity = np.minimum(1.0, (np.maximum(interest, 0.0) * len(CATEGORIES)) ** 0.8 / 2.5)
    proximity = np.exp(-np.maximum(distance_km, 0.0) / DISTANCE_SCALE_KM)
    price = np.asarray(price, dtype=float)
    ratio = np.where(price > 0, price, 1.0) / reference_price if reference_price > 0 else np.ones_like(price)
    price_factor = np.clip(ratio ** (-PRICE_ELASTICITY * price_sensitivity), 0.2, 2.0)
    # Free things are attractive; a missing reference leaves price out of it.
    price_factor = np.where(price == 0, 1.3, np.where((price < 0) | (reference_price <= 0), 1.0, price_factor))
    discount_factor = 1.0 + np.maximum(np.asarray(discount, dtype=float), 0.0) * (0.5 + 1.5 * price_sensitivity)
    probability = (
        STAGE_BASE[stage]
        * affinity ** a_interest
        * proximity ** a_distance
        * price_factor ** a_price
        * discount_factor ** a_discount
        * max(demand, 0.0) ** a_demand
    )
    return np.clip(probability, 0.0, MAX_PROBABILITY)


def local_hour_label(env: PricingEnv, hour: int) -> str:
    local = env.hour_start(hour).astimezone(CITIES[CITY].zone)
    return local.strftime("%A %H:00")


__all__ = [
    "CAPACITY_PER_HOUR",
    "HourOutcome",
    "PricedItem",
    "PricingEnv",
    "PricingEnvConfig",
    "expected_sales",
    "stage_probability",
]
