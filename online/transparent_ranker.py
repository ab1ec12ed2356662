"""A transparent, hand-weighted ranker: every score is a weighted sum of named parts with a reason.

It is the ranker the API uses before (and beside) the learned bandit: it needs no training data, so
a cold-start user on a fresh install still gets sensible suggestions, and every number it produces
can be explained to the user ("38 % off spa 0.6 km away (8 min walk), ends in 2 h") and to the
analyst (``score_parts``). It follows River's shape: parameters in ``__init__``, one item at a time
(``score_one``), pure functions of their inputs.

The parts (DESIGN §5 features, computed on demand at request time):

* ``interest``: the user's category-affinity share for the item's category (uniform at cold start);
* ``distance``: ``exp(-km / distance_scale_km)``;
* ``travel_time``: ``exp(-minutes / travel_scale_min)`` with :func:`kairos.geo.travel_minutes`;
* ``timing``: open now with time left after getting there (ending within ``ending_soon_min`` of
  arrival is penalised), or upcoming, decaying with the wait before it starts;
* ``discount``: 0..1 off the original price;
* ``price_vs_area``: ``(area median - price) / area median`` clipped to [-1, 1];
* ``popularity``: smoothed 24 h click-through rate, 0.5 at the prior;
* ``taste``: cosine of the user's taste embedding (:mod:`online.user_embeddings`) and the item's
  (:mod:`online.item_index`), clipped to [0, 1]; 0 when either is unknown (a constant within a
  request, so it never reorders anything then).

``discount`` and ``price_vs_area`` are scaled by the user's discount sensitivity (neutral when
unknown), because a bargain matters more to people who habitually pick bargains.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from kairos.geo import WALK_LIMIT_KM, haversine_km, travel_minutes

#: Names of the score parts, in the order they are reported.
PARTS = ("interest", "distance", "travel_time", "timing", "discount", "price_vs_area", "popularity", "taste")

#: Plural nouns for "cheapest of 4 spas": category names alone read badly for some categories.
CATEGORY_PLURALS = {
    "food": "places to eat",
    "coffee": "coffee places",
    "spa": "spas",
    "fitness": "fitness studios",
    "sport": "sports events",
    "culture": "cultural events",
    "retail": "shops",
    "services": "services",
}

_EMPTY: Mapping[Any, Any] = MappingProxyType({})
#: Prices closer than this count as equal (float noise, not a real price difference).
_PRICE_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Candidate:
    """One item that may be suggested; times are epoch seconds like :class:`CatalogItem`'s."""

    item_id: str
    category: str | None
    lat: float
    lon: float
    price: float | None = None
    original_price: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    cell: str | None = None
    title: str | None = None
    kind: str = "offer"
    business_id: str = ""
    currency: str | None = None
    #: Engagement from the ``item_stats`` view; ``None`` when the store has no row yet.
    views_24h: int | None = None
    clicks_24h: int | None = None

    @property
    def discount(self) -> float:
        if self.price is None or not self.original_price or self.original_price <= 0:
            return 0.0
        return min(1.0, max(0.0, 1.0 - self.price / self.original_price))

    def open_at(self, ts: float) -> bool:
        """Valid at ``ts`` (started and not yet ended)."""
        if self.valid_from is not None and ts < self.valid_from:
            return False
        return not (self.valid_to is not None and ts >= self.valid_to)

    @classmethod
    def from_catalog(cls, item: Any, stats: Mapping[str, Any] | None = None) -> Candidate:
        """A candidate from a :class:`kairos.stores.catalog.CatalogItem` and its ``item_stats`` row."""
        stats = stats or {}
        return cls(
            item_id=item.item_id,
            category=item.category,
            lat=float(item.lat),
            lon=float(item.lon),
            price=item.price,
            original_price=item.original_price,
            valid_from=item.valid_from,
            valid_to=item.valid_to,
            cell=item.cell,
            title=item.title,
            kind=item.kind,
            business_id=item.business_id,
            currency=item.currency,
            views_24h=stats.get("view_count_24h"),
            clicks_24h=stats.get("click_count_24h"),
        )


@dataclass(frozen=True)
class RankContext:
    """Who is asking, where, when, and what the local market looks like.

    ``open_peers`` and ``peer_median_price`` describe the other candidates of the same request; build
    them with :meth:`build` so that every item of one response is compared against the same market.
    """

    lat: float
    lon: float
    at: datetime
    radius_km: float = 3.0
    #: ``{category: share}`` of the user's weighted engagement; empty at cold start.
    category_affinity: Mapping[str, float] = field(default_factory=dict)
    #: Share of the user's engagement on discounted items (0..1); ``None`` when unknown.
    discount_sensitivity: float | None = None
    #: ``(cell, category) -> median price`` from the ``cell_supply`` view.
    area_median_price: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: ``category -> ((item_id, price), ...)`` of priced candidates open now within the radius.
    open_peers: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    #: ``category -> median price`` of all priced candidates (the fallback area price).
    peer_median_price: Mapping[str, float] = field(default_factory=dict)
    #: ``item_id -> cosine`` of the user's taste embedding and the item's; empty when unknown.
    taste: Mapping[str, float] = field(default_factory=dict)

    @property
    def at_ts(self) -> float:
        return self.at.timestamp()

    @classmethod
    def build(
        cls,
        lat: float,
        lon: float,
        at: datetime,
        candidates: Iterable[Candidate],
        radius_km: float = 3.0,
        user: Mapping[str, Any] | None = None,
        area_median_price: Mapping[tuple[str, str], float] | None = None,
        taste: Mapping[str, float] | None = None,
    ) -> RankContext:
        """A context for ranking ``candidates`` for ``user`` (a ``user_activity`` row or ``None``);
        ``taste`` is the cosine of the user's taste embedding and each item's, where known."""
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware (UTC)")
        ts = at.timestamp()
        peers: dict[str, list[tuple[str, float]]] = {}
        prices: dict[str, list[float]] = {}
        for item in candidates:
            if item.category is None or item.price is None:
                continue
            prices.setdefault(item.category, []).append(item.price)
            if item.open_at(ts) and haversine_km(lat, lon, item.lat, item.lon) <= radius_km:
                peers.setdefault(item.category, []).append((item.item_id, item.price))
        user = user or {}
        sensitivity = user.get("discount_sensitivity")
        return cls(
            lat=lat,
            lon=lon,
            at=at,
            radius_km=radius_km,
            category_affinity=parse_affinity(user.get("category_affinity")),
            discount_sensitivity=None if sensitivity is None else float(sensitivity),
            area_median_price=dict(area_median_price or {}),
            open_peers={c: tuple(sorted(p, key=lambda x: (x[1], x[0]))) for c, p in peers.items()},
            peer_median_price={c: statistics.median(p) for c, p in prices.items()},
            taste=dict(taste or {}),
        )


@dataclass(frozen=True)
class ScoredItem:
    """A candidate with its total score, the parts it is made of, and a one-line reason."""

    item: Candidate
    score: float
    #: Raw part values (see :data:`PARTS`), each in [0, 1] except ``price_vs_area`` in [-1, 1].
    parts: Mapping[str, float]
    #: ``weight * part`` (after discount-sensitivity scaling); they sum to ``score``.
    contributions: Mapping[str, float]
    reason: str
    distance_km: float
    travel_minutes: float


class TransparentRanker:
    """Rank items by a weighted sum of interpretable parts, each explained in words.

    Parameters
    ----------
    weights
        Weight of each part in :data:`PARTS`; missing parts keep their default weight.
    distance_scale_km
        Distance at which the distance part falls to 1/e (about 37 %).
    travel_scale_min
        Travel time at which the travel-time part falls to 1/e.
    ending_soon_min
        An open item with less than this many minutes left *after getting there* is penalised
        linearly down to 0: suggesting it would send the user to a closed door.
    upcoming_scale_min
        Wait before an upcoming item starts at which its timing part falls to 1/e.
    prior_ctr, prior_views
        Beta prior of the click-through rate: ``prior_views`` pseudo-views at ``prior_ctr`` keep a
        new item with 1 view and 1 click from outranking everything.
    compare_min
        Compare prices ("cheapest of 4 spas") when at least this many priced items of the category,
        this one included, are open within the radius.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> at = datetime(2026, 5, 1, 18, 0, tzinfo=timezone.utc)
    >>> end = at.timestamp() + 2 * 3600
    >>> items = [
    ...     Candidate("zen", "spa", 40.7590, -73.9845, price=31.0, original_price=50.0, valid_to=end),
    ...     Candidate("lux", "spa", 40.7680, -73.9700, price=90.0, valid_to=end),
    ...     Candidate("cup", "coffee", 40.7585, -73.9855, price=4.0, valid_to=end),
    ... ]
    >>> user = {"category_affinity": '{"spa": 0.7, "coffee": 0.3}', "discount_sensitivity": 0.8}
    >>> context = RankContext.build(40.7560, -73.9860, at, items, radius_km=2.0, user=user)
    >>> ranker = TransparentRanker()
    >>> [s.item.item_id for s in ranker.rank(context, items)]
    ['zen', 'lux', 'cup']
    >>> best = ranker.score_one(context, items[0])
    >>> what, comparison = best.reason.split("; ")
    >>> what
    '38 % off spa 0.4 km away (5 min walk), ends in 2 h, matches your taste'
    >>> comparison
    'cheaper of 2 spas open within 2 km'
    >>> round(best.parts["discount"], 2), round(best.parts["price_vs_area"], 2)
    (0.38, 0.49)
    """

    DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
        {
            "interest": 3.0,
            "distance": 1.5,
            "travel_time": 0.5,
            "timing": 1.0,
            "discount": 1.0,
            "price_vs_area": 0.75,
            "popularity": 0.5,
            # As search weighs taste_match: a hint of what the user likes, below explicit interest.
            "taste": 1.5,
        }
    )

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        distance_scale_km: float = 1.5,
        travel_scale_min: float = 20.0,
        ending_soon_min: float = 30.0,
        upcoming_scale_min: float = 120.0,
        prior_ctr: float = 0.05,
        prior_views: float = 20.0,
        compare_min: int = 2,
    ) -> None:
        unknown = set(weights or {}) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown score parts {sorted(unknown)}; known: {list(PARTS)}")
        for name, value in (
            ("distance_scale_km", distance_scale_km),
            ("travel_scale_min", travel_scale_min),
            ("ending_soon_min", ending_soon_min),
            ("upcoming_scale_min", upcoming_scale_min),
            ("prior_ctr", prior_ctr),
            ("prior_views", prior_views),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        self.weights = {**self.DEFAULT_WEIGHTS, **(weights or {})}
        self.distance_scale_km = distance_scale_km
        self.travel_scale_min = travel_scale_min
        self.ending_soon_min = ending_soon_min
        self.upcoming_scale_min = upcoming_scale_min
        self.prior_ctr = prior_ctr
        self.prior_views = prior_views
        self.compare_min = max(2, compare_min)

    def __repr__(self) -> str:
        return (
            f"TransparentRanker(weights={self.weights}, distance_scale_km={self.distance_scale_km}, "
            f"travel_scale_min={self.travel_scale_min}, ending_soon_min={self.ending_soon_min}, "
            f"upcoming_scale_min={self.upcoming_scale_min}, prior_ctr={self.prior_ctr}, "
            f"prior_views={self.prior_views}, compare_min={self.compare_min})"
        )

    # -- scoring -------------------------------------------------------------------------------

    def parts_of(self, context: RankContext, item: Candidate) -> tuple[dict[str, float], float, float]:
        """(score parts, distance km, travel minutes) of one item: what every ranker scores from."""
        distance = haversine_km(context.lat, context.lon, item.lat, item.lon)
        minutes = travel_minutes(distance)
        parts = {
            "interest": interest_share(context.category_affinity, item.category),
            "distance": math.exp(-distance / self.distance_scale_km),
            "travel_time": math.exp(-minutes / self.travel_scale_min),
            "timing": self.timing(item, context.at_ts, minutes),
            "discount": item.discount,
            "price_vs_area": price_vs_area(item.price, area_price(context, item)),
            "popularity": self.popularity(item),
            "taste": min(1.0, max(0.0, context.taste.get(item.item_id, 0.0))),
        }
        return parts, distance, minutes

    def score_one(self, context: RankContext, item: Candidate) -> ScoredItem:
        """Score one item for the context: total, parts, contributions and reason."""
        scored = self._score(context, item)
        return replace(scored, reason=self.reason(context, scored))

    def _score(self, context: RankContext, item: Candidate) -> ScoredItem:
        """:meth:`score_one` without the reason (only the items returned need one)."""
        parts, distance, minutes = self.parts_of(context, item)
        price_weight = sensitivity_multiplier(context.discount_sensitivity)
        contributions = {
            name: self.weights[name]
            * value
            * (price_weight if name in ("discount", "price_vs_area") else 1.0)
            for name, value in parts.items()
        }
        return ScoredItem(
            item=item,
            score=sum(contributions.values()),
            parts=parts,
            contributions=contributions,
            reason="",
            distance_km=distance,
            travel_minutes=minutes,
        )

    def rank(
        self, context: RankContext, items: Iterable[Candidate], limit: int | None = None
    ) -> list[ScoredItem]:
        """Items best first; ties go to the nearer item, then the item id, so the order is stable."""
        scored = [self._score(context, item) for item in items]
        scored.sort(key=lambda s: (-s.score, s.distance_km, s.item.item_id))
        chosen = scored if limit is None else scored[:limit]
        # Reasons cost more than scores: write them for the returned items only.
        return [replace(s, reason=self.reason(context, s)) for s in chosen]

    def timing(self, item: Candidate, at_ts: float, travel_min: float) -> float:
        """1 for an item open long enough to enjoy; less when it ends soon or starts later; 0 when over."""
        if item.valid_to is not None and at_ts >= item.valid_to:
            return 0.0
        if item.valid_from is not None and at_ts < item.valid_from:
            # Waiting is what hurts, and the trip itself uses up part of the wait.
            wait_min = max(0.0, (item.valid_from - at_ts) / 60.0 - travel_min)
            return math.exp(-wait_min / self.upcoming_scale_min)
        if item.valid_to is None:
            return 1.0
        usable_min = (item.valid_to - at_ts) / 60.0 - travel_min
        return min(1.0, max(0.0, usable_min / self.ending_soon_min))

    def popularity(self, item: Candidate) -> float:
        """Smoothed CTR mapped so the prior is 0.5: unknown items are neither pushed nor buried."""
        views = max(0, item.views_24h or 0)
        clicks = min(max(0, item.clicks_24h or 0), views)
        ctr = (clicks + self.prior_ctr * self.prior_views) / (views + self.prior_views)
        return ctr / (ctr + self.prior_ctr)

    # -- explaining ----------------------------------------------------------------------------

    def reason(self, context: RankContext, scored: ScoredItem) -> str:
        """One line from the strongest parts: what, where, when, one standout, and the competition."""
        item, parts = scored.item, scored.parts
        noun = item.category or item.kind
        head = f"{round(parts['discount'] * 100)} % off {noun}" if parts["discount"] >= 0.05 else noun
        mode = "walk" if scored.distance_km <= WALK_LIMIT_KM else "ride"
        # Rounded up: arriving a minute early disappoints nobody, a minute late does.
        minutes = max(1, math.ceil(scored.travel_minutes - 0.05))
        text = f"{head} {format_distance(scored.distance_km)} ({minutes} min {mode})"
        when = self._when(item, context.at_ts)
        if when:
            text += f", {when}"
        comparison = self.comparison(context, item, scored.distance_km)
        standout = self._standout(context, scored, has_comparison=comparison is not None)
        if standout:
            text += f", {standout}"
        if comparison:
            text += f"; {comparison}"
        return text

    def comparison(self, context: RankContext, item: Candidate, distance_km: float) -> str | None:
        """ "2nd cheapest of 5 coffee places open within 3 km", or None without enough competitors."""
        if item.category is None or item.price is None or not item.open_at(context.at_ts):
            return None
        if distance_km > context.radius_km:
            return None
        peers = [p for i, p in context.open_peers.get(item.category, ()) if i != item.item_id]
        count = len(peers) + 1
        if count < self.compare_min:
            return None
        cheaper = sum(1 for p in peers if p < item.price - _PRICE_EPS)
        tied = sum(1 for p in peers if abs(p - item.price) <= _PRICE_EPS)
        rank = cheaper + 1
        if tied:
            position = "joint cheapest" if rank == 1 else f"joint {ordinal(rank)} cheapest"
        elif rank == 1:
            position = "cheaper" if count == 2 else "cheapest"
        elif rank == count:
            position = "dearer" if count == 2 else "most expensive"
        else:
            position = f"{ordinal(rank)} cheapest"
        radius = f"{round(context.radius_km, 1):g} km"
        return f"{position} of {count} {category_plural(item.category)} open within {radius}"

    def _when(self, item: Candidate, at_ts: float) -> str | None:
        if item.valid_from is not None and at_ts < item.valid_from:
            return f"starts in {format_minutes((item.valid_from - at_ts) / 60.0)}"
        if item.valid_to is not None and at_ts < item.valid_to:
            return f"ends in {format_minutes((item.valid_to - at_ts) / 60.0)}"
        return None

    def _standout(self, context: RankContext, scored: ScoredItem, has_comparison: bool) -> str | None:
        """The strongest remaining selling point, if one is strong enough to be worth saying."""
        parts, contributions = scored.parts, scored.contributions
        options: list[tuple[float, str]] = []
        if context.category_affinity and parts["interest"] >= 0.25 and scored.item.category:
            options.append((contributions["interest"], "matches your taste"))
        # The comparison already says where the price stands; repeating it as a percentage is noise.
        if not has_comparison and parts["price_vs_area"] >= 0.15:
            pct = round(parts["price_vs_area"] * 100)
            options.append((contributions["price_vs_area"], f"{pct} % below the area's median price"))
        if parts["popularity"] >= 0.7:
            options.append((contributions["popularity"], "popular right now"))
        # Said only when it is the strongest of these points (search says the same of taste_match).
        if parts.get("taste", 0.0) >= 0.5:
            options.append((contributions.get("taste", 0.0), "like what you usually choose"))
        return max(options)[1] if options else None


# -- pure helpers (tested on their own) ----------------------------------------------------------


def parse_affinity(value: Any) -> dict[str, float]:
    """``{category: share}`` from the JSON text the ``user_activity`` view stores; ``{}`` if unusable."""
    if isinstance(value, Mapping):
        raw: Any = value
    elif isinstance(value, str) and value.strip():
        try:
            raw = json.loads(value)
        except ValueError:
            return {}
    else:
        return {}
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, share in raw.items():
        if (
            isinstance(share, (int, float))
            and not isinstance(share, bool)
            and math.isfinite(share)
            and share > 0
        ):
            out[str(key)] = float(share)
    return out


def interest_share(affinity: Mapping[str, float], category: str | None) -> float:
    """The user's affinity for ``category`` relative to their favourite one (favourite = 1).

    Relative, not the raw share: a user who spreads their attention over four categories likes
    their favourite as much as a single-minded user likes theirs, and the interest part should
    weigh the same against distance and price for both. Cold start (no affinity): neutral 0.5.
    """
    top = max(affinity.values(), default=0.0)
    if top <= 0:
        return 0.5
    if category is None:
        return 0.0
    return affinity.get(category, 0.0) / top


def area_price(context: RankContext, item: Candidate) -> float | None:
    """The area's median price for the item's category: ``cell_supply`` first, candidates second."""
    if item.category is None:
        return None
    if item.cell is not None:
        median = context.area_median_price.get((item.cell, item.category))
        if median is not None and median > 0:
            return median
    median = context.peer_median_price.get(item.category)
    return median if median is not None and median > 0 else None


def price_vs_area(price: float | None, median: float | None) -> float:
    """``(median - price) / median`` clipped to [-1, 1]; 0 when either is unknown."""
    if price is None or median is None or median <= 0:
        return 0.0
    return min(1.0, max(-1.0, (median - price) / median))


def sensitivity_multiplier(sensitivity: float | None) -> float:
    """0.5 (ignores deals) .. 1.5 (hunts deals); 1 when unknown, so cold start stays neutral."""
    if sensitivity is None or not math.isfinite(sensitivity):
        return 1.0
    return 0.5 + min(1.0, max(0.0, sensitivity))


def category_plural(category: str) -> str:
    return CATEGORY_PLURALS.get(category, f"{category} offers")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def format_distance(km: float) -> str:
    if km < 0.1:
        return f"{max(10, round(km * 100) * 10)} m away"
    return f"{km:.1f} km away"


def format_minutes(minutes: float) -> str:
    """Round the way people speak: "25 min", "1.5 h", "5 h", "3 days"."""
    if minutes < 59.5:
        return f"{max(1, round(minutes))} min"
    if minutes < 600:
        hours = round(minutes / 30) / 2
        return f"{hours:g} h"
    if minutes < 2 * 1440:
        return f"{round(minutes / 60)} h"
    return f"{round(minutes / 1440)} days"


__all__ = [
    "PARTS",
    "Candidate",
    "RankContext",
    "ScoredItem",
    "TransparentRanker",
    "parse_affinity",
    "interest_share",
    "area_price",
    "price_vs_area",
    "sensitivity_multiplier",
    "format_minutes",
    "format_distance",
    "category_plural",
    "ordinal",
]
