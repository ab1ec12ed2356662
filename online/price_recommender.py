"""Recommended prices within guardrails, with the expected effect and the reason in words.

:class:`PriceRecommender` takes what the market model knows about one item for the coming hour
(expected sales at the current price, elasticity, capacity, how demand compares with the usual
for the time, competitors' prices) and picks the price that maximises expected revenue

    price × E[min(capacity, Poisson(sales at that price))]

among candidates that respect the guardrails:

* at most ``max_step`` change from the current price per recommendation;
* never below the cost floor (given per item, else ``floor_ratio`` × the list price, or the
  current price when that is lower: a business selling at a price can afford it);
* never above the original price of a discounted item, and never more than ``max_markup`` above
  the list price otherwise.

Sales at a candidate price follow the elasticity: ``sales(p) = sales(now) × (p / now) ** e``.
Without a capacity limit that makes the best price independent of how busy the hour is (only the
elasticity decides); with one, a busy hour (demand well above what the item can serve) moves the
price up until demand fits, and a quiet one moves it down. A change is only recommended when it
is worth at least ``min_gain`` of the expected revenue (no churn for pennies).

>>> recommender = PriceRecommender(max_step=0.15)
>>> busy = PricingInput(item_id="massage", price=80.0, list_price=80.0, expected_sales=3.0,
...                     elasticity=-2.0, capacity=1, demand_ratio=2.4, slot_label="Friday 18:00",
...                     competitor_prices=(95.0, 99.0, 110.0), competitor_radius_km=1.0)
>>> r = recommender.recommend(busy)
>>> r.action, r.recommended_price, r.guardrail
('raise', 92.0, 'max step')
>>> r.reason
'Raise to 92.00 (+15 %): demand here is 2.4x usual for Friday 18:00; at 80.00 you would sell out (about 3.0 wanted per hour, capacity 1); 3 competitors within 1 km are 24 % dearer; limited to 15 % per step.'
>>> quiet = PricingInput(item_id="latte", price=5.0, list_price=5.0, expected_sales=2.0,
...                      elasticity=-2.5, demand_ratio=0.5, slot_label="Tuesday 15:00",
...                      elasticity_source="item")
>>> r = recommender.recommend(quiet)
>>> r.action, r.recommended_price, round(r.expected_revenue_change, 2)
('lower', 4.25, 0.28)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

#: Phrases for where an elasticity comes from, for the reason.
SOURCE_PHRASES = {
    "item": "learned from this item's price changes",
    "area": "learned from similar items in this area",
    "category": "learned from this category",
    "prior": "a default: no price changes seen yet",
}


@dataclass(frozen=True)
class PricingInput:
    """What is known about one item for the coming hour."""

    item_id: str
    price: float
    #: The price the item is normally sold at (its original price, else its first price).
    list_price: float
    #: Expected sales in the coming hour at ``price`` (None: no demand history to say).
    expected_sales: float | None
    elasticity: float
    elasticity_source: str = "prior"
    #: Units the item can sell per hour (None: unlimited).
    capacity: float | None = None
    #: The original price of a discount (the price may never go above it).
    original_price: float | None = None
    #: Absolute cost floor; None: ``floor_ratio`` × ``list_price`` (at most the current price).
    cost_floor: float | None = None
    #: Coming hour's demand in the area against the usual for that time (None: unknown).
    demand_ratio: float | None = None
    slot_label: str | None = None
    competitor_prices: tuple[float, ...] = ()
    competitor_radius_km: float = 1.0


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    action: str  # "raise", "lower" or "hold"
    current_price: float
    recommended_price: float
    change: float  # fraction of the current price
    lower_bound: float
    upper_bound: float
    #: The guardrail that stopped the price going further, if one did.
    guardrail: str | None
    expected_sales_now: float | None
    expected_sales: float | None
    expected_revenue_now: float | None
    expected_revenue: float | None
    #: Fractional change of expected revenue (None without demand history).
    expected_revenue_change: float | None
    elasticity: float
    reason: str
    parts: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["parts"] = list(self.parts)
        return out


def expected_sales(demand: float, capacity: float | None) -> float:
    """``E[min(capacity, N)]`` for ``N ~ Poisson(demand)``: sales when demand beyond capacity is lost.

    >>> round(expected_sales(2.0, None), 3), round(expected_sales(2.0, 1), 3), expected_sales(0.0, 3)
    (2.0, 0.865, 0.0)
    """
    if demand <= 0:
        return 0.0
    if capacity is None:
        return demand
    cap = math.floor(capacity)
    if cap <= 0:
        return 0.0
    # E[min(C, N)] = C - sum_{k<C} (C - k) P(N = k)
    p = math.exp(-demand)
    shortfall = 0.0
    for k in range(cap):
        shortfall += (cap - k) * p
        p *= demand / (k + 1)
    return max(0.0, cap - shortfall)


class PriceRecommender:
    """Guardrailed revenue-maximising price for one item at a time (see the module docstring).

    Parameters
    ----------
    max_step
        Largest change per recommendation, as a fraction of the current price.
    floor_ratio
        Cost floor as a share of the list price when the item has no cost floor of its own.
    max_markup
        How far above its list price an item without an original price may go.
    min_gain
        Smallest expected revenue gain (fraction) worth a price change.
    grid
        Candidate prices tried between the bounds.
    """

    def __init__(
        self,
        max_step: float = 0.15,
        floor_ratio: float = 0.7,
        max_markup: float = 0.25,
        min_gain: float = 0.01,
        grid: int = 61,
    ) -> None:
        if not 0 < max_step < 1:
            raise ValueError(f"max_step must be in (0, 1), got {max_step}")
        if not 0 < floor_ratio <= 1:
            raise ValueError(f"floor_ratio must be in (0, 1], got {floor_ratio}")
        if max_markup < 0:
            raise ValueError(f"max_markup must be >= 0, got {max_markup}")
        self.max_step = max_step
        self.floor_ratio = floor_ratio
        self.max_markup = max_markup
        self.min_gain = min_gain
        self.grid = max(3, grid)

    def bounds(self, item: PricingInput) -> tuple[float, float, str | None, str | None]:
        """``(low, high, guardrail at low, guardrail at high)`` for this step."""
        if item.cost_floor is not None:
            floor = item.cost_floor
        else:
            # No floor given: a share of the list price, but never above what the business itself
            # already sells at (its posted price says its cost is lower than that).
            floor = min(self.floor_ratio * item.list_price, item.price)
        if item.original_price:
            ceiling, ceiling_name = item.original_price, "original price"
        else:
            ceiling, ceiling_name = item.list_price * (1 + self.max_markup), "markup cap"
        if floor > ceiling:  # a floor above the ceiling: the floor wins (never sell at a loss)
            ceiling = floor
        low, low_name = item.price * (1 - self.max_step), "max step"
        high, high_name = item.price * (1 + self.max_step), "max step"
        if floor >= low:
            low, low_name = floor, "cost floor"
        if ceiling <= high:
            high, high_name = ceiling, ceiling_name
        if low > high:
            # The current price is outside the allowed range (below a floor given since, or above a
            # lowered ceiling): move towards the range by one step at most.
            if item.price < low:
                low = high = min(low, item.price * (1 + self.max_step))
            else:
                low = high = max(high, item.price * (1 - self.max_step))
        return low, high, low_name, high_name

    def recommend(self, item: PricingInput) -> Recommendation:
        if not (item.price > 0 and item.list_price > 0):
            raise ValueError(f"item {item.item_id!r}: price and list price must be positive")
        low, high, low_name, high_name = self.bounds(item)
        now = item.price
        base = item.expected_sales if item.expected_sales is not None else 1.0

        def revenue(p: float) -> float:
            return p * expected_sales(base * (p / now) ** item.elasticity, item.capacity)

        candidates = [low + (high - low) * i / (self.grid - 1) for i in range(self.grid)]
        feasible_now = low - 1e-9 <= now <= high + 1e-9
        if feasible_now:
            candidates.append(now)
        best = max(candidates, key=revenue)
        # Prices are in cents; rounding must not cross a guardrail (the original price above all).
        low_cents, high_cents = math.ceil(low * 100 - 1e-6) / 100, math.floor(high * 100 + 1e-6) / 100
        best = min(max(_round_price(best), low_cents), high_cents) if low_cents <= high_cents else high_cents
        gain = (revenue(best) - revenue(now)) / revenue(now) if revenue(now) > 0 else 0.0
        # With only the prior elasticity and no capacity to fill, a move would rest on an
        # assumption, not on anything seen here: keep the price until sales at other prices are.
        unlearned = item.elasticity_source == "prior" and item.capacity is None
        if feasible_now and (unlearned or gain < self.min_gain or abs(best - now) < 0.005):
            best = now
            gain = 0.0
        action = "raise" if best > now + 1e-9 else "lower" if best < now - 1e-9 else "hold"
        guardrail = None
        if action == "raise" and abs(best - high) < 0.01 and high_name:
            guardrail = high_name
        elif action == "lower" and abs(best - low) < 0.01 and low_name:
            guardrail = low_name
        elif action == "hold" and not feasible_now:
            guardrail = low_name if now < low else high_name
        known = item.expected_sales is not None
        sales_now = expected_sales(base, item.capacity) if known else None
        sales_best = expected_sales(base * (best / now) ** item.elasticity, item.capacity) if known else None
        parts = self._reason_parts(item, best, action, guardrail, low, high)
        head = {
            "raise": f"Raise to {best:.2f} ({(best / now - 1) * 100:+.0f} %)",
            "lower": f"Lower to {best:.2f} ({(best / now - 1) * 100:+.0f} %)",
            "hold": f"Keep {now:.2f}",
        }[action]
        return Recommendation(
            item_id=item.item_id,
            action=action,
            current_price=now,
            recommended_price=best,
            change=best / now - 1,
            lower_bound=round(low, 2),
            upper_bound=round(high, 2),
            guardrail=guardrail,
            expected_sales_now=sales_now,
            expected_sales=sales_best,
            expected_revenue_now=now * sales_now if sales_now is not None else None,
            expected_revenue=best * sales_best if sales_best is not None else None,
            expected_revenue_change=gain if known else None,
            elasticity=item.elasticity,
            reason=f"{head}: {'; '.join(parts)}." if parts else f"{head}.",
            parts=tuple(parts),
        )

    # ---- words -------------------------------------------------------------------------------

    def _reason_parts(
        self, item: PricingInput, best: float, action: str, guardrail: str | None, low: float, high: float
    ) -> list[str]:
        parts: list[str] = []
        if item.demand_ratio is not None and item.slot_label:
            ratio = item.demand_ratio
            if 0.85 <= ratio <= 1.15:
                parts.append(f"demand here is about usual for {item.slot_label}")
            else:
                parts.append(f"demand here is {ratio:.1f}x usual for {item.slot_label}")
        if item.capacity is not None and item.expected_sales is not None and item.expected_sales > item.capacity:
            parts.append(
                f"at {item.price:.2f} you would sell out (about {item.expected_sales:.1f} wanted per hour,"
                f" capacity {item.capacity:g})"
            )
        elif item.elasticity_source == "prior" and item.capacity is None:
            parts.append("how sales here respond to price is not learned yet (no sales at other prices seen)")
        elif action == "lower" or (action == "hold" and item.capacity is None):
            more = (0.9 ** item.elasticity - 1) * 100
            source = SOURCE_PHRASES.get(item.elasticity_source, item.elasticity_source)
            parts.append(f"each 10 % off brings about {more:.0f} % more sales ({source})")
        if item.competitor_prices:
            parts.append(competitor_phrase(item.price, item.competitor_prices, item.competitor_radius_km))
        if guardrail == "cost floor":
            parts.append(f"held at the cost floor {low:.2f}")
        elif guardrail == "original price":
            parts.append(f"capped at the original price {high:.2f}")
        elif guardrail == "markup cap":
            parts.append(f"capped at {self.max_markup * 100:.0f} % above the list price")
        elif guardrail == "max step":
            parts.append(f"limited to {self.max_step * 100:.0f} % per step")
        return parts


def competitor_phrase(price: float, prices: tuple[float, ...] | list[float], radius_km: float) -> str:
    """"3 competitors within 1 km are 20 % dearer" (median competitor price against ``price``).

    >>> competitor_phrase(10.0, [12.0, 12.5, 11.0], 1.0)
    '3 competitors within 1 km are 20 % dearer'
    >>> competitor_phrase(10.0, [9.0], 0.5)
    '1 competitor within 0.5 km is 10 % cheaper'
    """
    n = len(prices)
    median = statistics.median(prices)
    diff = median / price - 1
    who = f"{n} competitor{'s' if n != 1 else ''} within {radius_km:g} km"
    verb = "are" if n != 1 else "is"
    if abs(diff) < 0.03:
        return f"{who} {verb} priced about the same"
    return f"{who} {verb} {abs(diff) * 100:.0f} % {'dearer' if diff > 0 else 'cheaper'}"


def _round_price(value: float) -> float:
    return round(value, 2)


__all__ = ["PriceRecommender", "PricingInput", "Recommendation", "competitor_phrase", "expected_sales"]
