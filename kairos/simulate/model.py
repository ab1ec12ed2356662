"""The hidden behaviour model of the simulated city: cities, prices, demand rhythms, engagement.

Everything here is ground truth. The product never imports it; benchmarks may, to score how well
Kairos recovers what drives behaviour. :func:`engagement_probability` is the one formula by which
simulated users decide to view, click, save and buy, so a benchmark can compute the ideal ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np

from kairos.schema import CATEGORIES


@dataclass(frozen=True)
class City:
    """A simulated city: centre, time zone, currency and the neighbourhoods businesses cluster in."""

    name: str
    lat: float
    lon: float
    tz: str
    currency: str
    #: (neighbourhood, lat, lon): real neighbourhood centres, so maps look right.
    hubs: tuple[tuple[str, float, float], ...]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


CITIES: dict[str, City] = {
    "new-york": City(
        "new-york", 40.7306, -73.9866, "America/New_York", "USD",
        (
            ("Midtown", 40.7549, -73.9840), ("East Village", 40.7265, -73.9815),
            ("Williamsburg", 40.7081, -73.9571), ("SoHo", 40.7233, -74.0030),
            ("Upper West Side", 40.7870, -73.9754), ("Chelsea", 40.7465, -74.0014),
            ("Financial District", 40.7075, -74.0113), ("Harlem", 40.8116, -73.9465),
            ("Astoria", 40.7644, -73.9235), ("Park Slope", 40.6710, -73.9814),
        ),
    ),
    "mumbai": City(
        "mumbai", 19.0760, 72.8777, "Asia/Kolkata", "INR",
        (
            ("Bandra", 19.0596, 72.8295), ("Colaba", 18.9067, 72.8147),
            ("Andheri", 19.1136, 72.8697), ("Lower Parel", 18.9986, 72.8302),
            ("Powai", 19.1176, 72.9060), ("Juhu", 19.1075, 72.8263),
        ),
    ),
}

#: Typical (median) price of one item per category and city, in the city's currency. Items are
#: priced around it; it is also the reference a price-sensitive user compares against.
BASE_PRICES: dict[str, dict[str, float]] = {
    "new-york": {
        "food": 22.0, "coffee": 5.5, "spa": 95.0, "fitness": 28.0,
        "sport": 65.0, "culture": 38.0, "retail": 55.0, "services": 75.0,
    },
    "mumbai": {
        "food": 650.0, "coffee": 220.0, "spa": 2400.0, "fitness": 600.0,
        "sport": 900.0, "culture": 500.0, "retail": 1600.0, "services": 900.0,
    },
}

#: Share of each category in an average person's interests (Dirichlet prior mean).
POPULARITY: dict[str, float] = {
    "food": 0.20, "coffee": 0.17, "spa": 0.10, "fitness": 0.10,
    "sport": 0.10, "culture": 0.13, "retail": 0.12, "services": 0.08,
}
#: What people want on a trip: they rest, eat out and see the city (the DESIGN's spa example).
TRAVEL_INTERESTS: dict[str, float] = {
    "food": 0.25, "coffee": 0.15, "spa": 0.30, "fitness": 0.0,
    "sport": 0.05, "culture": 0.20, "retail": 0.05, "services": 0.0,
}
#: Weight of TRAVEL_INTERESTS in a traveller's interests while away from home.
TRAVEL_BLEND = 0.5

#: Demand bumps by local hour: category -> (weekday, weekend) lists of (hour, width h, height).
Bumps = tuple[tuple[float, float, float], ...]
DEMAND_BUMPS: dict[str, tuple[Bumps, Bumps]] = {
    "coffee": (((8.0, 1.5, 1.0), (15.0, 2.0, 0.5)), ((10.0, 2.0, 1.0), (15.0, 2.0, 0.5))),
    "food": (((12.5, 1.2, 1.0), (19.5, 1.8, 1.0)), ((11.5, 2.0, 0.9), (20.0, 2.0, 1.0))),
    "spa": (((13.0, 3.0, 0.6), (18.0, 2.0, 0.7)), ((12.0, 3.0, 1.0), (16.0, 3.0, 0.9))),
    "fitness": (((7.0, 1.2, 1.0), (18.5, 1.5, 1.0)), ((10.0, 2.0, 0.9),)),
    "sport": (((19.5, 2.0, 1.0),), ((14.0, 2.5, 1.0), (19.0, 2.0, 0.9))),
    "culture": (((20.0, 2.0, 1.0),), ((15.0, 2.0, 0.6), (20.5, 2.0, 1.0))),
    "retail": (((13.0, 2.0, 0.6), (18.0, 2.0, 0.8)), ((14.0, 3.0, 1.0),)),
    "services": (((10.0, 2.0, 0.8), (15.0, 2.5, 0.8)), ((11.0, 2.0, 0.5),)),
}
_DEMAND_FLOOR = 0.05


def demand_curves() -> dict[str, np.ndarray]:
    """Category -> 168 demand multipliers by local hour of week (Monday 00:00 = 0), mean 1."""
    curves = {}
    for category in CATEGORIES:
        curve = np.full(168, _DEMAND_FLOOR)
        for day in range(7):
            bumps = DEMAND_BUMPS[category][1 if day >= 5 else 0]
            hours = np.arange(24, dtype=float)
            for centre, width, height in bumps:
                # Wrap around midnight so a late bump does not fall off the day.
                gap = np.minimum(np.abs(hours - centre), 24 - np.abs(hours - centre))
                curve[day * 24: day * 24 + 24] += height * np.exp(-0.5 * (gap / width) ** 2)
        curves[category] = curve / curve.mean()
    return curves


def hour_of_week(ts: float, city: City) -> int:
    """Local hour of week (Monday 00:00 = 0) of an epoch time in a city."""
    local = datetime.fromtimestamp(ts, timezone.utc).astimezone(city.zone)
    return local.weekday() * 24 + local.hour


# ---- engagement -------------------------------------------------------------------------------

#: Base probability of each funnel stage, before the factors below. Stages are conditional:
#: ``click`` given a view, ``save`` and ``purchase`` given a click.
STAGE_BASE: dict[str, float] = {"view": 0.55, "click": 0.35, "save": 0.25, "purchase": 0.15}
#: Exponent of each factor per stage: (interest, distance, price, discount, demand). Distance
#: matters most for looking and buying; price and discount most for buying.
STAGE_EXPONENTS: dict[str, tuple[float, float, float, float, float]] = {
    "view": (1.0, 1.0, 0.5, 0.5, 0.5),
    "click": (0.5, 0.3, 0.5, 0.7, 0.2),
    "save": (0.7, 0.0, 0.3, 0.3, 0.0),
    "purchase": (0.5, 0.7, 1.0, 1.0, 0.3),
}
#: Willingness to travel: the distance factor halves about every ``DISTANCE_SCALE_KM`` x ln 2.
DISTANCE_SCALE_KM = 1.5
#: How strongly a fully price-sensitive user reacts to log(price / reference price).
PRICE_ELASTICITY = 1.6
MAX_PROBABILITY = 0.95


def engagement_probability(
    stage: str,
    interest: float,
    distance_km: float,
    price: float | None,
    reference_price: float,
    discount: float,
    price_sensitivity: float,
    demand: float = 1.0,
) -> float:
    """Probability that a simulated user takes the funnel ``stage`` for one item.

    ``stage`` is ``view`` (opens an item shown nearby), ``click``, ``save`` or ``purchase``
    (each given the previous step). The model multiplies five factors, each raised to the
    stage's exponent in :data:`STAGE_EXPONENTS`:

    * interest: the user's weight for the item's category (sums to 1 over categories),
      rescaled so an average category gives 0.4 and a dominant one saturates at 1;
    * distance: ``exp(-distance_km / DISTANCE_SCALE_KM)``;
    * price: ``(price / reference_price) ** (-PRICE_ELASTICITY * price_sensitivity)``, clipped
      to [0.2, 2]: cheaper than the area's typical price attracts sensitive users, dearer repels;
    * discount: ``1 + discount * (0.5 + 1.5 * price_sensitivity)``: any discount helps, most
      for the price-sensitive;
    * demand: the category's hour-of-week demand multiplier (mean 1).

    >>> round(engagement_probability("view", 0.3, 0.5, 80.0, 95.0, 0.2, 0.6, 1.4), 3)
    0.462
    >>> engagement_probability("view", 0.3, 0.5, 80.0, 95.0, 0.2, 0.6) > engagement_probability(
    ...     "view", 0.3, 3.0, 80.0, 95.0, 0.2, 0.6)
    True
    """
    if stage not in STAGE_BASE:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_BASE)}")
    a_interest, a_distance, a_price, a_discount, a_demand = STAGE_EXPONENTS[stage]
    affinity = min(1.0, (max(interest, 0.0) * len(CATEGORIES)) ** 0.8 / 2.5)
    proximity = math.exp(-max(distance_km, 0.0) / DISTANCE_SCALE_KM)
    if price is None or price <= 0 or reference_price <= 0:
        price_factor = 1.3 if price == 0 else 1.0  # free things are attractive
    else:
        ratio = price / reference_price
        price_factor = min(2.0, max(0.2, ratio ** (-PRICE_ELASTICITY * price_sensitivity)))
    discount_factor = 1.0 + max(0.0, discount) * (0.5 + 1.5 * price_sensitivity)
    probability = (
        STAGE_BASE[stage]
        * affinity ** a_interest
        * proximity ** a_distance
        * price_factor ** a_price
        * discount_factor ** a_discount
        * max(demand, 0.0) ** a_demand
    )
    return min(MAX_PROBABILITY, max(0.0, probability))


def model_description() -> dict[str, object]:
    """The model's constants, written into the ground truth so benchmarks see what was used."""
    return {
        "stage_base": STAGE_BASE,
        "stage_exponents": {k: list(v) for k, v in STAGE_EXPONENTS.items()},
        "stage_exponent_order": ["interest", "distance", "price", "discount", "demand"],
        "distance_scale_km": DISTANCE_SCALE_KM,
        "price_elasticity": PRICE_ELASTICITY,
        "travel_interests": TRAVEL_INTERESTS,
        "travel_blend": TRAVEL_BLEND,
        "popularity": POPULARITY,
    }
