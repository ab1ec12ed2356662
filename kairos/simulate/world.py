"""The simulated population: businesses in competitor clusters, users with homes, jobs, tastes and
trips. Built once per run from the seeded generator, before any document is written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kairos.schema import CATEGORIES
from kairos.simulate.model import CITIES, POPULARITY, City

DAY_S = 86_400.0
HOUR_S = 3_600.0

#: Canonical category -> labels businesses put on their documents (decoding normalises them).
RAW_LABELS: dict[str, tuple[str, ...]] = {
    "coffee": ("coffee", "Café", "Coffee Shop"),
    "food": ("food", "Restaurant", "Pizza"),
    "spa": ("spa", "Beauty", "Massage", "Salon"),
    "fitness": ("fitness", "Gym", "Yoga"),
    "sport": ("sport", "Football", "Match"),
    "culture": ("culture", "Concert", "Theatre", "Museum"),
    "retail": ("retail", "Shop", "Fashion"),
    "services": ("services", "Repair", "Cleaning"),
}
#: Document styles of businesses (see items.py); each business keeps one style.
STYLES = ("A", "B", "C", "D")
#: Cluster categories in this order, so even a small world has a cluster of competing spas.
CLUSTER_ORDER = ("spa", "food", "coffee", "culture", "sport", "fitness", "retail", "services")

_NAME_FIRST = (
    "Blue", "Golden", "Urban", "Lotus", "Hudson", "Marine", "Saffron", "Maple", "Harbor", "Little",
    "Silver", "Crescent", "Juniper", "Monsoon", "Empire", "Coral", "Indigo", "Cedar",
)
_NAME_SECOND: dict[str, tuple[str, ...]] = {
    "coffee": ("Bean", "Roasters", "Cup", "Brew Bar"),
    "food": ("Kitchen", "Table", "Bistro", "Diner"),
    "spa": ("Spa", "Day Spa", "Beauty Lounge", "Wellness"),
    "fitness": ("Yoga Studio", "Gym", "Fitness Club", "Pilates"),
    "sport": ("Sports Bar", "Arena", "Football Club", "Sports Hall"),
    "culture": ("Jazz Club", "Theatre", "Gallery", "Arts Centre"),
    "retail": ("Boutique", "Store", "Outfitters", "Books"),
    "services": ("Repairs", "Cleaners", "Tailors", "Fix-It"),
}


@dataclass
class Business:
    id: str
    name: str
    category: str
    label: str  # category label as the business writes it
    city: str
    neighbourhood: str
    lat: float
    lon: float
    style: str
    price_level: float  # multiplier on the city's base price for the category
    cluster: int
    created: float  # epoch seconds the business joined


@dataclass
class Trip:
    city: str
    start: float
    end: float
    hotel: tuple[float, float]


@dataclass
class User:
    id: str
    city: str
    home: tuple[float, float]
    work: tuple[float, float] | None
    interests: np.ndarray  # weight per category in CATEGORIES order, sums to 1
    price_sensitivity: float  # 0: indifferent to price, 1: very sensitive
    activity: float  # multiplier on app sessions
    wake_hour: float
    sleep_hour: float
    signup: float
    lang: str
    trips: list[Trip] = field(default_factory=list)

    def trip_at(self, ts: float) -> Trip | None:
        for trip in self.trips:
            if trip.start <= ts < trip.end:
                return trip
        return None


def offset_km(lat: float, lon: float, north_km: float, east_km: float) -> tuple[float, float]:
    """A point moved by kilometres north and east (flat-earth; fine at city scale)."""
    return (
        lat + north_km / 110.57,
        lon + east_km / (111.32 * math.cos(math.radians(lat))),
    )


def _scatter(rng: np.random.Generator, lat: float, lon: float, sigma_km: float) -> tuple[float, float]:
    north, east = rng.normal(0.0, sigma_km, 2)
    point = offset_km(lat, lon, float(north), float(east))
    return round(point[0], 6), round(point[1], 6)


def _split(total: int, share: float) -> tuple[int, int]:
    """(new-york, mumbai) counts: most in New York, at least one in each when total allows."""
    mumbai = int(round(total * share))
    if total >= 2:
        mumbai = min(max(mumbai, 1), total - 1)
    return total - mumbai, mumbai


def build_businesses(rng: np.random.Generator, n: int, mumbai_share: float, start: float) -> list[Business]:
    """Businesses in clusters of 3-6 same-category competitors around neighbourhood hubs, so a
    user standing in a cluster can compare several spas (or cafés) within a couple of km."""
    businesses: list[Business] = []
    cluster = 0
    for city_name, count in zip(CITIES, _split(n, mumbai_share), strict=True):
        city = CITIES[city_name]
        remaining = count
        k = 0
        while remaining > 0:
            category = CLUSTER_ORDER[k % len(CLUSTER_ORDER)]
            size = min(remaining, int(rng.integers(3, 7)))
            if 0 < remaining - size < 3:  # no orphan cluster of one or two at the end
                size = remaining
            hub_name, hub_lat, hub_lon = city.hubs[int(rng.integers(len(city.hubs)))]
            centre = _scatter(rng, hub_lat, hub_lon, 0.5)
            for _ in range(size):
                index = len(businesses) + 1
                lat, lon = _scatter(rng, centre[0], centre[1], 0.35)
                name = f"{_pick(rng, _NAME_FIRST)} {_pick(rng, _NAME_SECOND[category])}"
                businesses.append(Business(
                    id=f"b{index:04d}",
                    name=name,
                    category=category,
                    label=_pick(rng, RAW_LABELS[category]),
                    city=city_name,
                    neighbourhood=hub_name,
                    lat=lat,
                    lon=lon,
                    style=STYLES[int(rng.integers(len(STYLES)))],
                    price_level=round(float(rng.lognormal(0.0, 0.15)), 3),
                    cluster=cluster,
                    created=start - float(rng.uniform(30, 400)) * DAY_S,
                ))
            remaining -= size
            cluster += 1
            k += 1
    # Make sure every style appears even in a tiny world: the decoder must see them all.
    for business, style in zip(businesses, STYLES, strict=False):
        business.style = style
    return businesses


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _random_place(rng: np.random.Generator, city: City, sigma_km: float) -> tuple[float, float]:
    _, lat, lon = city.hubs[int(rng.integers(len(city.hubs)))]
    return _scatter(rng, lat, lon, sigma_km)


def build_users(
    rng: np.random.Generator,
    n: int,
    mumbai_share: float,
    traveller_share: float,
    start: float,
    end: float,
) -> list[User]:
    """Users with a home, maybe a job, Dirichlet interests, price sensitivity, rhythms, trips.

    ``traveller_share`` of the Mumbai users fly to New York for 1-3 days (the first of them is
    still there on the last day), and a few New Yorkers go the other way.
    """
    prior = np.array([POPULARITY[c] for c in CATEGORIES]) * len(CATEGORIES) * 0.6
    users: list[User] = []
    for city_name, count in zip(CITIES, _split(n, mumbai_share), strict=True):
        city = CITIES[city_name]
        for _ in range(count):
            index = len(users) + 1
            employed = rng.random() < 0.85
            users.append(User(
                id=f"u{index:04d}",
                city=city_name,
                home=_random_place(rng, city, 1.5),
                work=_random_place(rng, city, 0.8) if employed else None,
                interests=rng.dirichlet(prior),
                price_sensitivity=round(float(rng.beta(2.0, 2.5)), 3),
                activity=round(float(rng.lognormal(0.0, 0.35)), 3),
                wake_hour=float(np.clip(rng.normal(7.0, 0.7), 5.0, 9.5)),
                sleep_hour=float(np.clip(rng.normal(23.2, 0.7), 21.5, 25.0)),
                signup=start - float(rng.uniform(10, 900)) * DAY_S,
                lang="en-US" if city_name == "new-york" else _pick(rng, ("en-IN", "hi-IN")),
            ))
    _plan_trips(rng, users, traveller_share, start, end)
    return users


def _plan_trips(rng: np.random.Generator, users: list[User], share: float, start: float, end: float) -> None:
    mumbaikars = [u for u in users if u.city == "mumbai"]
    new_yorkers = [u for u in users if u.city == "new-york"]
    if mumbaikars and share > 0:
        count = max(1, int(round(share * len(mumbaikars))))
        for i, user in enumerate(rng.permutation(len(mumbaikars))[:count]):
            traveller = mumbaikars[int(user)]
            days = float(rng.uniform(1.0, 3.0))
            if i == 0:
                # The DESIGN's story: someone from India lands in New York on the last day, after
                # a history at home (so their home is still Mumbai), and stays past the end.
                trip_start = max(start, end - float(rng.uniform(8.0, 16.0)) * HOUR_S)
                trip_end = trip_start + days * DAY_S
            else:
                trip_start = start + float(rng.uniform(0.0, max(end - start - DAY_S, HOUR_S)))
                trip_end = trip_start + days * DAY_S
            traveller.trips.append(_trip(rng, "new-york", trip_start, trip_end))
    if new_yorkers and share > 0:
        count = int(round(share / 4 * len(new_yorkers)))
        for user in rng.permutation(len(new_yorkers))[:count]:
            trip_start = start + float(rng.uniform(0.0, max(end - start - DAY_S, HOUR_S)))
            trip_end = trip_start + float(rng.uniform(1.0, 3.0)) * DAY_S
            new_yorkers[int(user)].trips.append(_trip(rng, "mumbai", trip_start, trip_end))


def _trip(rng: np.random.Generator, city_name: str, trip_start: float, trip_end: float) -> Trip:
    city = CITIES[city_name]
    return Trip(city_name, trip_start, trip_end, _scatter(rng, city.lat, city.lon, 1.2))
