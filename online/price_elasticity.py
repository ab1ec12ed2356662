"""Price elasticity learned online, pooled from category to area to item (DESIGN §5).

:class:`PriceElasticity` models the sales of an item in an hour as Poisson with mean::

    exposure × exp(a + e · (log(price / reference) - the item's average of that log ratio))

``exposure`` is how much demand there was to sell to (the area's traffic that hour), ``e`` the
elasticity (a 1 % price cut brings about ``-e`` % more sales) and ``a`` the log of the item's
sales per unit of exposure at its usual price.

Pooling: there is one such model per category, per (category, area) and per item. Each is fitted
to the observations that pass through it and is held, by a quadratic penalty, close to the model
one level up (the category's to a prior). So a new item starts from its group's estimate, a new
group from its category's, and an item's own estimate departs from the group's only as far as its
own evidence carries it. Fitting is one online Newton step per observation (the Poisson Fisher
information accumulates): fast at first, steady later, and free of learning-rate tuning.

The penalties are strong by default (50 units of Fisher information, about what a hundred hours
of selling with the price moving by ±15 % gives): in the pricing benchmark, weaker pooling let a
few noisy hours swing an elasticity and cost revenue.

The price is centred on the item's own average, so elasticity is learned from *changes* of an
item's price and the sales that followed, not from the fact that dear shops differ from cheap ones
in many ways besides price. Sold-out hours are censored: demand was at least what sold, so they
can only pull the estimate up.

>>> import random
>>> rng = random.Random(3)
>>> model = PriceElasticity(prior_elasticity=-1.0)
>>> for hour in range(2000):
...     price = rng.choice([8.0, 9.0, 10.0, 11.0])
...     x = {"item": "latte", "category": "coffee", "area": "8a2a1072b59ffff", "price": price,
...          "reference": 10.0}
...     mean = 5.0 * (price / 10.0) ** -2.5  # the truth: elasticity -2.5
...     sales = sum(rng.random() < mean / 50 for _ in range(50))
...     model.learn_one(x, sales, exposure=1.0)
>>> -2.8 < model.elasticity(x) < -2.2  # from a prior of -1.0
True
>>> new_item = dict(x, item="flat-white")  # never seen: starts from what lattes taught
>>> -2.8 < model.elasticity(new_item) < -2.2
True
>>> model.estimate(new_item).source, model.estimate(x).source
('area', 'item')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Levels of the pooling path, from the broadest to the item.
LEVELS = ("category", "area", "item")
#: Evidence (Fisher information about the elasticity) that counts as "the item's own estimate".
ITEM_EVIDENCE = 4.0


@dataclass(frozen=True)
class ElasticityEstimate:
    """What is known about an item's response to price, and how much it rests on."""

    elasticity: float
    #: The level the estimate comes from: ``item``, ``area``, ``category`` or ``prior``.
    source: str
    item_samples: int
    group_samples: int
    #: Fisher information about the item's elasticity from its own price changes.
    item_evidence: float
    #: Standard deviation of the item's log price ratio seen so far (0: never changed price).
    item_price_spread: float


class _Node:
    """One level's model: ``(a, e)``, the data's Fisher information, price statistics."""

    __slots__ = ("a", "e", "parent_a", "parent_e", "haa", "hae", "hee", "n", "x_n", "x_mean", "x_m2")

    def __init__(self, a: float, e: float) -> None:
        self.a = a
        self.e = e
        # The parent's values when this node last followed them (see ``_newton``).
        self.parent_a = a
        self.parent_e = e
        self.haa = 0.0
        self.hae = 0.0
        self.hee = 0.0
        self.n = 0
        self.x_n = 0
        self.x_mean = 0.0
        self.x_m2 = 0.0

    @property
    def spread(self) -> float:
        return math.sqrt(self.x_m2 / self.x_n) if self.x_n > 1 else 0.0


class PriceElasticity:
    """Hierarchical, online Poisson log-linear price response (see the module docstring).

    Parameters
    ----------
    prior_elasticity
        Elasticity before any evidence (a typical retail value: demand falls faster than price).
    prior_log_share
        ``a`` before any evidence: log of sales per unit of exposure at the usual price.
    prior_strength
        Penalty holding a category's elasticity to ``prior_elasticity``, in units of Fisher
        information: how much evidence it takes before a category speaks for itself.
    pool_elasticity
        The same for an area's elasticity towards its category's and an item's towards its area's:
        strong, because within a category what is learned from few price changes is mostly noise.
    pool_share
        The same for ``a``; weak, since items legitimately sell different amounts.
    forget
        Information kept per update (``1``, the default, never forgets; below 1 lets tastes drift).
    bounds
        Elasticities are clipped to this range when used: a learned elasticity above the upper
        bound (sales rising with price) is noise, not a reason to raise prices forever.
    """

    def __init__(
        self,
        prior_elasticity: float = -1.5,
        prior_log_share: float = -3.0,
        prior_strength: float = 50.0,
        pool_elasticity: float = 50.0,
        pool_share: float = 0.2,
        forget: float = 1.0,
        bounds: tuple[float, float] = (-6.0, -0.2),
    ) -> None:
        if bounds[0] >= bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
        if not 0 < forget <= 1:
            raise ValueError(f"forget must be in (0, 1], got {forget}")
        self.prior_elasticity = prior_elasticity
        self.prior_log_share = prior_log_share
        self.prior_strength = prior_strength
        self.pool_elasticity = pool_elasticity
        self.pool_share = pool_share
        self.forget = forget
        self.bounds = bounds
        self._nodes: dict[tuple[str, ...], _Node] = {}
        self.n_learned = 0

    # ---- public API --------------------------------------------------------------------------

    def predict_one(self, x: dict[str, Any], exposure: float = 1.0) -> float:
        """Expected sales at ``x["price"]`` given ``exposure``.

        For an item never seen, ``x["price"]`` is taken as its usual price.
        """
        node, parent_a, parent_e = self._deepest(self._path(x))
        ratio = _log_ratio(x)
        centred = 0.0 if ratio is None or node is None or node.x_n == 0 else ratio - node.x_mean
        a = node.a if node is not None else parent_a
        e = self._clip(node.e if node is not None else parent_e)
        return max(0.0, exposure) * math.exp(min(a + e * centred, 30.0))

    def learn_one(self, x: dict[str, Any], y: float, exposure: float = 1.0, censored: bool = False) -> None:
        """Fold in ``y`` sales at ``x["price"]`` over ``exposure``.

        ``censored``: the item sold out, so demand was at least ``y``; an hour like that only
        ever raises the estimate.
        """
        ratio = _log_ratio(x)
        if ratio is None or not exposure > 0 or not math.isfinite(float(y)) or y < 0:
            return  # no price, no exposure or a broken count: nothing to learn
        path = self._path(x)
        item = self._nodes.get(path[-1])
        if item is None:
            _, parent_a, parent_e = self._deepest(path)
            item = self._nodes[path[-1]] = _Node(parent_a, parent_e)
        _observe_price(item, ratio)
        centred = ratio - item.x_mean
        parent = (self.prior_log_share, self.prior_elasticity)
        for depth, key in enumerate(path):
            node = self._nodes.get(key)
            if node is None:
                node = self._nodes[key] = _Node(*parent)
            self._newton(node, parent, float(y), exposure, centred, censored, depth)
            parent = (node.a, node.e)
        self.n_learned += 1

    def elasticity(self, x: dict[str, Any]) -> float:
        """The item's elasticity (its group's or category's while it has none), within ``bounds``."""
        node, _, parent_e = self._deepest(self._path(x))
        return self._clip(node.e if node is not None else parent_e)

    def estimate(self, x: dict[str, Any]) -> ElasticityEstimate:
        """The elasticity with the evidence behind it (for reasons and "not enough data")."""
        path = self._path(x)
        category, group, item = (self._nodes.get(k) for k in path)
        if item is not None and item.hee >= ITEM_EVIDENCE:
            source = "item"
        elif group is not None and group.hee >= ITEM_EVIDENCE:
            source = "area"
        elif category is not None and category.hee >= ITEM_EVIDENCE:
            source = "category"
        else:
            source = "prior"
        return ElasticityEstimate(
            elasticity=self.elasticity(x),
            source=source,
            item_samples=item.n if item else 0,
            group_samples=group.n if group else 0,
            item_evidence=item.hee if item else 0.0,
            item_price_spread=item.spread if item else 0.0,
        )

    # ---- internals ---------------------------------------------------------------------------

    @staticmethod
    def _path(x: dict[str, Any]) -> list[tuple[str, ...]]:
        category = str(x.get("category") or "")
        area = str(x.get("area") or "")
        return [("category", category), ("area", category, area), ("item", str(x.get("item") or ""))]

    def _deepest(self, path: list[tuple[str, ...]]) -> tuple[_Node | None, float, float]:
        """The item's node (None if unseen) and the ``(a, e)`` of the deepest known level above."""
        a, e = self.prior_log_share, self.prior_elasticity
        for key in path[:-1]:
            node = self._nodes.get(key)
            if node is None:
                break
            a, e = node.a, node.e
        return self._nodes.get(path[-1]), a, e

    def _newton(
        self, node: _Node, parent: tuple[float, float], y: float, exposure: float, centred: float,
        censored: bool, depth: int,
    ) -> None:
        eta = min(node.a + node.e * centred, 30.0)
        mean = exposure * math.exp(eta)
        residual = y - mean
        if censored and residual < 0:
            return
        node.n += 1
        pull_a = self.pool_share if depth > 0 else self.pool_share * 0.1
        pull_e = self.pool_elasticity if depth > 0 else self.prior_strength
        # The pull towards the parent is a prior centred on the parent's value: when the parent
        # moved since the last update, this node moves along by the prior's share of its precision.
        node.a += pull_a / (node.haa + pull_a) * (parent[0] - node.parent_a)
        node.e += pull_e / (node.hee + pull_e) * (parent[1] - node.parent_e)
        node.parent_a, node.parent_e = parent
        node.haa = self.forget * node.haa + mean
        node.hae = self.forget * node.hae + mean * centred
        node.hee = self.forget * node.hee + mean * centred * centred
        # Online Newton step on the Poisson log-likelihood; the prior adds its precision.
        grad_a, grad_e = residual, residual * centred
        haa, hae, hee = node.haa + pull_a, node.hae, node.hee + pull_e
        det = haa * hee - hae * hae
        if det <= 1e-12:
            return
        step_a = (hee * grad_a - hae * grad_e) / det
        step_e = (haa * grad_e - hae * grad_a) / det
        # A single odd hour must not throw the estimate across the range.
        node.a += max(-1.0, min(1.0, step_a))
        node.e += max(-1.0, min(1.0, step_e))

    def _clip(self, e: float) -> float:
        return min(self.bounds[1], max(self.bounds[0], e))


def _log_ratio(x: dict[str, Any]) -> float | None:
    price, reference = x.get("price"), x.get("reference")
    if isinstance(price, bool) or isinstance(reference, bool):
        return None
    if not isinstance(price, (int, float)) or not isinstance(reference, (int, float)):
        return None
    if not (price > 0 and reference > 0 and math.isfinite(price) and math.isfinite(reference)):
        return None
    return math.log(price / reference)


def _observe_price(node: _Node, ratio: float) -> None:
    node.x_n += 1
    delta = ratio - node.x_mean
    node.x_mean += delta / node.x_n
    node.x_m2 += delta * (ratio - node.x_mean)


__all__ = ["LEVELS", "ElasticityEstimate", "PriceElasticity"]
