"""A contextual bandit ranker: a Bayesian engagement model explored by Thompson sampling (or UCB).

The transparent ranker (:mod:`online.transparent_ranker`) weighs its parts by hand. This ranker
learns the weights from feedback instead: every impression the API logs comes back from the flow
as a labelled example (``reward`` 1 when the user clicked, saved or bought within the attribution
window, 0 otherwise, see :mod:`flows.attribution`), and :class:`BanditRanker` folds it into
:class:`BayesianLogisticRegression`, an online Bayesian logistic regression of P(engage | user,
item, context). Ranking then samples one plausible weight vector from the posterior per request
(Thompson sampling), so items the model is unsure about get shown often enough to learn about them,
and stop being shown once the evidence says they are worse.

What the model sees (:func:`context_features`) is built from the transparent ranker's parts, so
the bandit reports the same ``parts`` and the same one-line ``reason``; only the weights, and so
the ``contributions`` (in log-odds), are learned:

* the eight parts (interest, distance, travel_time, timing, discount, price_vs_area, popularity,
  and taste: the user's taste embedding against the item's, 0 when unknown);
* shapes the engagement really has: ``log_interest``, ``distance_km`` (appeal falls
  exponentially with distance), the log price ratio to the area, and discount and price scaled
  by the user's discount sensitivity;
* the category, and the category by time of day (local solar hour in 3-hour dayparts): coffee
  sells at 8 am and jazz at 9 pm.

Both classes follow River's shape (parameters in ``__init__``, ``learn_one``, ``predict_*_one``),
are plain picklable objects, and are never mutated while serving: the flow learns and publishes a
new version (:mod:`online.model_state`), the API swaps whole objects.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from river import base

from kairos.schema import CATEGORIES
from online.transparent_ranker import (
    PARTS,
    Candidate,
    RankContext,
    ScoredItem,
    TransparentRanker,
)

#: How ranking explores: sample the posterior, add an optimism bonus, flip a coin, or not at all.
EXPLORATIONS = ("thompson", "ucb", "epsilon", "greedy")
#: Number of dayparts a local day is cut into (3 hours each).
DAYPARTS = 8
#: Discount sensitivity assumed when the user's is unknown (the middle of 0..1).
NEUTRAL_SENSITIVITY = 0.5
#: Floors of the logarithms: a zero part must not become minus infinity.
_LOG_FLOOR = 0.02
_MAX_DISTANCE_KM = 25.0
#: Which features explain which part (the rest are the context: category, daypart, bias).
PART_FEATURES: Mapping[str, tuple[str, ...]] = {
    "interest": ("interest", "log_interest"),
    "distance": ("distance", "distance_km"),
    "travel_time": ("travel_time",),
    "timing": ("timing", "log_timing"),
    "discount": ("discount", "discount_x_sensitivity"),
    "price_vs_area": ("price_vs_area", "log_price_ratio", "log_price_ratio_x_sensitivity"),
    "popularity": ("popularity",),
    "taste": ("taste",),
}
#: Contribution names beyond the parts: what the category and the hour add, the intercept, and
#: how much exploration moved the score.
EXTRA_CONTRIBUTIONS = ("category_hour", "baseline", "exploration")
BIAS = "bias"
#: Rows per product when ranking: small enough that OpenBLAS stays on the calling thread.
_ROWS = 256


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# -------------------------------------------------------------------------------------- model


class BayesianLogisticRegression(base.Classifier):
    """Online Bayesian logistic regression with a full Gaussian posterior over the weights.

    Each ``learn_one`` is one step of the extended Kalman filter for the logistic likelihood (the
    online Laplace approximation): the precision grows by ``p (1 - p) x xᵀ`` (a rank-one
    Sherman-Morrison update of the covariance) and the mean moves by the updated covariance times
    the error. It costs O(d²) per example with d features, no matrix inversion, fine for the
    hundred or so dense features of a ranker, and keeps what Thompson sampling and UCB need: the
    covariance.

    Parameters
    ----------
    prior_variance
        Variance of every weight before any data; larger means faster early learning and more
        early exploration.
    prior_mean
        Prior mean per feature (default 0), e.g. to start from a hand-tuned ranker.
    forgetting
        Before each example the weights drift towards the prior as an Ornstein-Uhlenbeck process
        whose stationary law is the prior: the covariance becomes ``(1 - f) Σ + f Σ₀`` and the
        mean ``m₀ + sqrt(1 - f) (m - m₀)``. The model keeps about ``1 / f`` examples' worth of
        certainty, so it keeps exploring and follows drift, and what it never sees stays at the
        prior (never more uncertain than that). 0 remembers everything.

    Features that appear for the first time join the model with the prior; features a prediction
    uses that the model has never learned on count with their prior mean (and prior variance).

    Examples
    --------
    >>> import random
    >>> model = BayesianLogisticRegression(prior_variance=1.0)
    >>> rng = random.Random(1)
    >>> for _ in range(2000):
    ...     x = {"bias": 1.0, "near": rng.random()}
    ...     y = rng.random() < _sigmoid(-2.0 + 3.0 * x["near"])
    ...     model.learn_one(x, y)
    >>> round(model.weights["near"], 1), round(model.weights["bias"], 1)  # truth: 3 and -2
    (2.9, -1.9)
    >>> model.predict_proba_one({"bias": 1.0, "near": 1.0})[True] > 0.65
    True
    >>> model.logit_std({"bias": 1.0, "near": 1.0}) < 0.2
    True
    """

    def __init__(
        self,
        prior_variance: float = 1.0,
        prior_mean: Mapping[str, float] | None = None,
        forgetting: float = 0.0,
    ) -> None:
        if not prior_variance > 0:
            raise ValueError(f"prior_variance must be positive, not {prior_variance!r}")
        if not 0.0 <= forgetting < 1.0:
            raise ValueError(f"forgetting must be in [0, 1), not {forgetting!r}")
        self.prior_variance = prior_variance
        self.prior_mean = dict(prior_mean or {})
        self.forgetting = forgetting
        self.index: dict[str, int] = {}
        self.mean = np.zeros(0)
        self.prior = np.zeros(0)  # prior means, aligned with ``index``
        self.cov = np.zeros((0, 0))
        self.n_seen = 0
        self.n_positive = 0
        self._revision = 0
        self._factor: tuple[int, np.ndarray] | None = None

    # -- vocabulary ------------------------------------------------------------------------------

    def add_features(self, names: Iterable[str]) -> None:
        """Make room for features up front (so serving never has to meet a new one)."""
        new = [n for n in dict.fromkeys(names) if n not in self.index]
        if not new:
            return
        d, k = len(self.index), len(new)
        for i, name in enumerate(new):
            self.index[name] = d + i
        prior = [float(self.prior_mean.get(n, 0.0)) for n in new]
        self.mean = np.concatenate([self.mean, prior])
        self.prior = np.concatenate([self.prior, prior])
        cov = np.zeros((d + k, d + k))
        cov[:d, :d] = self.cov
        cov[d:, d:] = np.eye(k) * self.prior_variance
        self.cov = cov
        self._revision += 1

    def vector(self, x: Mapping[str, float]) -> np.ndarray:
        """Dense vector of the known features of ``x`` (unknown ones are left out)."""
        v = np.zeros(len(self.index))
        for name, value in x.items():
            i = self.index.get(name)
            if i is not None:
                v[i] = value
        return v

    def _unknown(self, x: Mapping[str, float]) -> tuple[float, float]:
        """(mean, variance) the features the model has never seen add to the logit."""
        mean = var = 0.0
        for name, value in x.items():
            if name not in self.index and value:
                mean += float(self.prior_mean.get(name, 0.0)) * value
                var += self.prior_variance * value * value
        return mean, var

    @property
    def weights(self) -> dict[str, float]:
        """Posterior mean of every weight."""
        return {name: float(self.mean[i]) for name, i in self.index.items()}

    def _cholesky(self) -> np.ndarray:
        # Serving samples many times from one published state: factor it once. Two threads racing
        # here only compute the same factor twice.
        cached = self._factor
        if cached is None or cached[0] != self._revision:
            cached = (self._revision, _cholesky(self.cov))
            self._factor = cached
        return cached[1]

    # -- learning --------------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, float], y: Any, w: float = 1.0) -> None:
        """Fold one example in; ``y`` is truthy for an engagement, ``w`` weighs the example."""
        if not w > 0:
            raise ValueError(f"example weight must be positive, not {w!r}")
        self.add_features(name for name, value in x.items() if value)
        v = self.vector(x)
        if self.forgetting:
            f = self.forgetting
            self.mean = self.prior + math.sqrt(1.0 - f) * (self.mean - self.prior)
            self.cov *= 1.0 - f
            self.cov[np.diag_indices_from(self.cov)] += f * self.prior_variance
        sv = self.cov @ v
        p = _sigmoid(float(self.mean @ v))
        # Floor the curvature: a confident wrong prediction must still move the weights.
        curvature = w * max(p * (1.0 - p), 1e-4)
        denominator = 1.0 + curvature * float(v @ sv)
        self.cov -= np.outer(sv, sv) * (curvature / denominator)
        # Sherman-Morrison leaves tiny asymmetries; left alone they break the Cholesky factor.
        self.cov = (self.cov + self.cov.T) * 0.5
        self.mean += sv / denominator * (w * ((1.0 if y else 0.0) - p))
        self.n_seen += 1
        self.n_positive += 1 if y else 0
        self._revision += 1

    # -- predicting ------------------------------------------------------------------------------

    def predict_logit(self, x: Mapping[str, float]) -> float:
        unknown_mean, _ = self._unknown(x)
        return float(self.mean @ self.vector(x)) + unknown_mean

    def logit_std(self, x: Mapping[str, float]) -> float:
        """Posterior standard deviation of the logit: how unsure the model is about ``x``."""
        v = self.vector(x)
        _, unknown_var = self._unknown(x)
        return math.sqrt(max(0.0, float(v @ self.cov @ v)) + unknown_var)

    def predict_proba_one(self, x: Mapping[str, float], **kwargs: Any) -> dict[bool, float]:
        p = _sigmoid(self.predict_logit(x))
        return {False: 1.0 - p, True: p}

    def sample_weights(self, rng: np.random.Generator, scale: float = 1.0,
                       rows: np.ndarray | None = None) -> np.ndarray:
        """One weight vector drawn from the posterior (covariance scaled by ``scale²``).

        ``rows`` (feature indices) returns only those weights of the same draw: ``rng`` is used
        exactly as for the whole vector, and a request that touches a third of the features pays a
        third of the product.
        """
        if not len(self.index):
            return self.mean.copy() if rows is None else self.mean[rows]
        z = rng.standard_normal(len(self.index))
        if rows is None:
            return self.mean + scale * (self._cholesky() @ z)
        return self.mean[rows] + scale * (self._cholesky()[rows] @ z)

    def prepare(self) -> None:
        """Factor the covariance now (before serving, not on the first request)."""
        if len(self.index):
            self._cholesky()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_factor"] = None  # cheap to recompute, large to ship
        return state

    @classmethod
    def _unit_test_params(cls):  # River's estimator checks
        yield {"prior_variance": 1.0}


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor, with as little jitter as rounding needs."""
    d = len(cov)
    jitter = 1e-10
    while jitter <= 1e-3:
        try:
            return np.linalg.cholesky(cov + np.eye(d) * jitter)
        except np.linalg.LinAlgError:
            jitter *= 10
    return np.diag(np.sqrt(np.clip(np.diag(cov), 0.0, None)))


# ---------------------------------------------------------------------------------- features


def local_hour(at: datetime, lon: float) -> float:
    """Local solar hour at longitude ``lon``: UTC hour + lon / 15, in [0, 24).

    No time-zone database is needed and it is within an hour or so of the civil clock, which is all
    a 3-hour daypart needs.
    """
    utc = at.hour + at.minute / 60.0 + at.second / 3600.0
    return (utc + lon / 15.0) % 24.0


def daypart(at: datetime, lon: float) -> int:
    return min(DAYPARTS - 1, int(local_hour(at, lon) // (24 / DAYPARTS)))


def context_features(
    parts: Mapping[str, float],
    distance_km: float,
    category: str | None,
    at: datetime,
    lon: float,
    discount_sensitivity: float | None = None,
) -> dict[str, float]:
    """The feature vector of one (user, item, context): what the model learns and scores on.

    A pure function of values the API returns (``score_parts``, ``distance_km``, ``category``) and
    the request (time, longitude, the user's discount sensitivity), so the impression log can store
    exactly what the ranker saw (no training/serving skew).

    >>> from datetime import datetime, timezone
    >>> parts = {"interest": 1.0, "distance": 0.76, "travel_time": 0.78, "timing": 1.0,
    ...          "discount": 0.38, "price_vs_area": 0.49, "popularity": 0.5}
    >>> at = datetime(2026, 5, 1, 22, 0, tzinfo=timezone.utc)  # 6 pm in New York
    >>> x = context_features(parts, 0.4, "spa", at, -73.98, discount_sensitivity=0.8)
    >>> x["category=spa|daypart=5"], round(x["discount_x_sensitivity"], 3), x["bias"]
    (1.0, 0.304, 1.0)
    """
    sensitivity = NEUTRAL_SENSITIVITY
    if discount_sensitivity is not None and math.isfinite(discount_sensitivity):
        sensitivity = min(1.0, max(0.0, float(discount_sensitivity)))
    x = {name: float(parts.get(name, 0.0)) for name in PARTS}
    x = {name: value if math.isfinite(value) else 0.0 for name, value in x.items()}
    x["log_interest"] = math.log(max(x["interest"], _LOG_FLOOR))
    distance = float(distance_km)
    x["distance_km"] = min(max(distance, 0.0), _MAX_DISTANCE_KM) if math.isfinite(distance) else _MAX_DISTANCE_KM
    x["log_timing"] = math.log(max(x["timing"], _LOG_FLOOR))
    x["discount_x_sensitivity"] = x["discount"] * sensitivity
    # price_vs_area = 1 - price / area price, so this is log(price / area price).
    log_ratio = math.log(max(1.0 - x["price_vs_area"], 0.05))
    x["log_price_ratio"] = log_ratio
    x["log_price_ratio_x_sensitivity"] = log_ratio * sensitivity
    cat = category if category in CATEGORIES else "other"
    x[f"category={cat}"] = 1.0
    x[f"category={cat}|daypart={daypart(at, lon)}"] = 1.0
    x[BIAS] = 1.0
    return x


#: The features every item of a request has, in :func:`context_features`'s order (the two
#: category features follow, then the bias).
_NUMERIC_FEATURES = (*PARTS, "log_interest", "distance_km", "log_timing", "discount_x_sensitivity",
                     "log_price_ratio", "log_price_ratio_x_sensitivity")


@dataclass(frozen=True)
class FeatureBatch:
    """The features of one request's items, as the model's columns: what ranking multiplies.

    ``X`` has one row per item and only the columns of model features some item uses (about 35 of
    the 100 or so: one daypart, a few categories), in model-index order; ``columns`` are their
    indices. Features the model does not know add ``unknown_mean`` and ``unknown_var`` to the logit.
    """

    X: np.ndarray
    columns: np.ndarray
    unknown_mean: np.ndarray
    unknown_var: np.ndarray


def feature_batch(
    model: BayesianLogisticRegression,
    computed: Sequence[tuple[Mapping[str, float], float, float]],
    categories: Sequence[str | None],
    at: datetime,
    lon: float,
    discount_sensitivity: float | None = None,
) -> FeatureBatch:
    """:func:`context_features` of many items at once, laid out as ``model``'s columns.

    The same values as ``model`` would see in the dicts (tests check it, edge cases included), but
    in array operations: building a dict per candidate and scattering it into a matrix was most of
    the ranker's Python time. ``computed`` holds each item's ``(parts, distance km, minutes)``.
    """
    n = len(computed)
    sensitivity = NEUTRAL_SENSITIVITY
    if discount_sensitivity is not None and math.isfinite(discount_sensitivity):
        sensitivity = min(1.0, max(0.0, float(discount_sensitivity)))
    values = np.empty((n, len(_NUMERIC_FEATURES) + 1))  # the numeric features and the bias
    parts = np.array([[p.get(name, 0.0) for name in PARTS] for p, _, _ in computed], dtype=float)
    parts = parts.reshape(n, len(PARTS))  # (0, 8) when there are no items
    parts[~np.isfinite(parts)] = 0.0
    k = len(PARTS)
    values[:, :k] = parts
    values[:, k] = np.log(np.maximum(parts[:, PARTS.index("interest")], _LOG_FLOOR))
    distance = np.array([d for _, d, _ in computed], dtype=float)
    far = _MAX_DISTANCE_KM  # what an unknown distance counts as
    values[:, k + 1] = np.clip(np.nan_to_num(distance, nan=far, posinf=far, neginf=far), 0.0, far)
    values[:, k + 2] = np.log(np.maximum(parts[:, PARTS.index("timing")], _LOG_FLOOR))
    values[:, k + 3] = parts[:, PARTS.index("discount")] * sensitivity
    log_ratio = np.log(np.maximum(1.0 - parts[:, PARTS.index("price_vs_area")], 0.05))
    values[:, k + 4] = log_ratio
    values[:, k + 5] = log_ratio * sensitivity
    values[:, -1] = 1.0
    names = [*_NUMERIC_FEATURES, BIAS]

    # Each item has two one-hot features: its category, and its category at this request's daypart.
    part_of_day = daypart(at, lon)
    cats = [c if c in CATEGORIES else "other" for c in categories]
    slot = {cat: 2 * j for j, cat in enumerate(dict.fromkeys(cats))}
    for cat in slot:
        names += [f"category={cat}", f"category={cat}|daypart={part_of_day}"]
    onehot = np.zeros((n, 2 * len(slot)))
    rows = np.arange(n)
    first = np.array([slot[c] for c in cats], dtype=int)
    onehot[rows, first] = 1.0
    onehot[rows, first + 1] = 1.0
    full = np.hstack([values, onehot])

    index = model.index
    known = [j for j, name in enumerate(names) if name in index]
    unknown = [j for j, name in enumerate(names) if name not in index]
    unknown_mean, unknown_var = np.zeros(n), np.zeros(n)
    for j in unknown:  # features the model never learned count with their prior
        unknown_mean += float(model.prior_mean.get(names[j], 0.0)) * full[:, j]
        unknown_var += model.prior_variance * full[:, j] ** 2
    order = sorted(known, key=lambda j: index[names[j]])
    columns = np.array([index[names[j]] for j in order], dtype=int)
    return FeatureBatch(full[:, order], columns, unknown_mean, unknown_var)


#: Position buckets learned as nuisance features; position 0 (the first slot) is the reference.
POSITION_BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 9), (10, None))


def position_features(position: int | None) -> dict[str, float]:
    """``{"position=3-4": 1.0}`` for a 0-based position; ``{}`` for the first slot or unknown.

    >>> position_features(0), position_features(3), position_features(12)
    ({}, {'position=3-4': 1.0}, {'position=10+': 1.0})
    """
    if position is None or position < 1:
        return {}
    for low, high in POSITION_BUCKETS:
        if high is None or position <= high:
            name = f"{low}+" if high is None else (str(low) if low == high else f"{low}-{high}")
            return {f"position={name}": 1.0}
    return {}


def feature_names() -> list[str]:
    """Every feature :func:`context_features` can produce, in a stable order."""
    names = list(PARTS) + [f for fs in PART_FEATURES.values() for f in fs if f not in PARTS]
    for cat in (*CATEGORIES, "other"):
        names.append(f"category={cat}")
        names += [f"category={cat}|daypart={k}" for k in range(DAYPARTS)]
    names.append(BIAS)
    names += [next(iter(position_features(low))) for low, _ in POSITION_BUCKETS]
    return list(dict.fromkeys(names))


@functools.lru_cache(maxsize=1024)
def _contribution_group(name: str) -> str:
    for part, names in PART_FEATURES.items():
        if name in names:
            return part
    return "baseline" if name == BIAS or name.startswith("position=") else "category_hour"


def compute_parts(
    explainer: TransparentRanker, context: RankContext, item: Candidate
) -> tuple[dict[str, float], float, float]:
    """(parts, distance km, travel minutes) exactly as :meth:`TransparentRanker.score_one` has them,
    without writing the reason (only returned items need one)."""
    return explainer.parts_of(context, item)


# ------------------------------------------------------------------------------------ ranker


@dataclass(frozen=True)
class BanditScoredItem(ScoredItem):
    """A :class:`ScoredItem` whose ``score`` is a log-odds of engagement, with what it rests on."""

    #: Posterior-mean probability of engagement.
    probability: float = 0.0
    #: Posterior standard deviation of the logit (how unsure the model still is).
    uncertainty: float = 0.0
    #: The feature vector scored; the impression log stores it for learning.
    features: Mapping[str, float] = field(default_factory=dict)


class BanditRanker:
    """Rank by a learned engagement model, exploring by Thompson sampling; explain like the
    transparent ranker.

    Parameters
    ----------
    model
        The engagement model; default a :class:`BayesianLogisticRegression` whose prior starts from
        the transparent ranker's weights, so an untrained bandit already ranks sensibly.
    exploration
        ``thompson`` (one posterior sample per request), ``ucb`` (mean + ``ucb_alpha`` x std),
        ``epsilon`` (greedy, but a random item goes first with probability ``epsilon``) or
        ``greedy``.
    exploration_scale
        Thompson sampling draws from the posterior with its covariance scaled by this squared
        (below 1 explores less).
    explainer
        Computes the parts and writes the reason; default ``TransparentRanker()``.
    prior_scale
        Prior mean of each part's weight = ``prior_scale`` x the transparent ranker's weight.
    forgetting
        How fast the default model drifts back towards its prior per example (its memory is about
        1 / forgetting labelled impressions, here 100,000): tastes, prices and the city drift, and
        a posterior that never forgets would stop exploring and stop following them.
    seed
        Seed of the exploration randomness (None: fresh per process).

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> at = datetime(2026, 5, 1, 18, 0, tzinfo=timezone.utc)
    >>> end = at.timestamp() + 2 * 3600
    >>> items = [
    ...     Candidate("zen", "spa", 40.7590, -73.9845, price=31.0, original_price=50.0, valid_to=end),
    ...     Candidate("cup", "coffee", 40.7585, -73.9855, price=4.0, valid_to=end),
    ... ]
    >>> user = {"category_affinity": '{"spa": 0.7, "coffee": 0.3}', "discount_sensitivity": 0.8}
    >>> context = RankContext.build(40.7560, -73.9860, at, items, radius_km=2.0, user=user)
    >>> ranker = BanditRanker(seed=3)
    >>> best = ranker.rank(context, items, explore=False)[0]
    >>> best.item.item_id, best.reason.split("; ")[0]
    ('zen', '38 % off spa 0.4 km away (5 min walk), ends in 2 h, matches your taste')
    >>> for _ in range(300):  # this user never opens spa deals, always the coffee
    ...     for item, clicked in ((items[0], False), (items[1], True)):
    ...         ranker.learn_one(ranker.score_one(context, item).features, clicked)
    >>> [s.item.item_id for s in ranker.rank(context, items)]
    ['cup', 'zen']
    >>> round(sum(best.contributions.values()), 6) == round(best.score, 6)
    True
    """

    def __init__(
        self,
        model: BayesianLogisticRegression | None = None,
        exploration: str = "thompson",
        exploration_scale: float = 1.0,
        ucb_alpha: float = 1.0,
        epsilon: float = 0.1,
        explainer: TransparentRanker | None = None,
        prior_scale: float = 0.5,
        forgetting: float = 1e-5,
        seed: int | None = None,
    ) -> None:
        if exploration not in EXPLORATIONS:
            raise ValueError(f"exploration must be one of {list(EXPLORATIONS)}, not {exploration!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], not {epsilon!r}")
        if exploration_scale < 0 or ucb_alpha < 0:
            raise ValueError("exploration_scale and ucb_alpha must not be negative")
        self.explainer = explainer or TransparentRanker()
        if model is None:
            prior = {name: prior_scale * w for name, w in self.explainer.weights.items()}
            # Start near a realistic click rate (5 %) once the parts' prior weights are added.
            prior[BIAS] = math.log(0.05 / 0.95) - prior_scale * sum(self.explainer.weights.values()) / 2
            model = BayesianLogisticRegression(prior_variance=0.5, prior_mean=prior, forgetting=forgetting)
        self.model = model
        self.model.add_features(feature_names())
        self.exploration = exploration
        self.exploration_scale = exploration_scale
        self.ucb_alpha = ucb_alpha
        self.epsilon = epsilon
        self.seed = seed
        self._rng_seed = seed
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _rng(self) -> np.random.Generator:
        # One generator per thread: numpy generators are not safe to share between threads.
        rng = getattr(self._local, "rng", None)
        if rng is None:
            rng = np.random.default_rng(self._rng_seed)
            if self._rng_seed is not None:
                self._rng_seed += 1  # another thread must not replay the same draws
            self._local.rng = rng
        return rng

    @property
    def n_seen(self) -> int:
        return self.model.n_seen

    # -- learning --------------------------------------------------------------------------------

    def learn_one(self, features: Mapping[str, float], reward: Any, weight: float = 1.0,
                  position: int | None = None) -> None:
        """Learn from one labelled impression (``features`` as logged, ``reward`` 1 or 0).

        ``position`` (0 = first) is learned as a nuisance: lower slots get fewer clicks whatever
        they show, and without it the model would blame the items that tend to be ranked low.
        Serving scores every item as if it were first (no position features).
        """
        self.model.learn_one({**features, **position_features(position)}, bool(reward), weight)

    def predict_one(self, features: Mapping[str, float]) -> float:
        """Posterior-mean probability of engagement."""
        return self.model.predict_proba_one(features)[True]

    # -- scoring ---------------------------------------------------------------------------------

    def features(self, context: RankContext, item: Candidate, parts: Mapping[str, float],
                 distance_km: float) -> dict[str, float]:
        return context_features(parts, distance_km, item.category, context.at, context.lon,
                                context.discount_sensitivity)

    def score_one(self, context: RankContext, item: Candidate, explore: bool = False) -> BanditScoredItem:
        """Score one item (posterior mean unless ``explore``), with parts, contributions and reason."""
        return self.rank(context, [item], explore=explore)[0]

    def rank(
        self,
        context: RankContext,
        items: Iterable[Candidate],
        limit: int | None = None,
        explore: bool = True,
        explain: bool = True,
    ) -> list[BanditScoredItem]:
        """Items best first by the explored score; ties go to the nearer item, then the id.

        ``explain=False`` skips writing reasons (benchmarks rank millions of items).
        """
        items = list(items)
        if not items:
            return []
        computed = [compute_parts(self.explainer, context, item) for item in items]
        model = self.model
        batch = feature_batch(model, computed, [item.category for item in items], context.at, context.lon,
                              context.discount_sensitivity)
        # Only the columns the request uses: the rest of every row is zero. Besides the flops, this
        # keeps the products small enough that OpenBLAS does not wake its threads, which on a
        # small, busy server cost more CPU than the product itself.
        X, columns = batch.X, batch.columns
        mean = model.mean[columns]
        mean_logits = X @ mean + batch.unknown_mean
        cov = model.cov[np.ix_(columns, columns)]
        variances = np.concatenate([((X[a:a + _ROWS] @ cov) * X[a:a + _ROWS]).sum(axis=1)
                                    for a in range(0, len(X), _ROWS)])  # diag(X Σ Xᵀ), no n x n
        stds = np.sqrt(np.clip(variances + batch.unknown_var, 0.0, None))

        bonus = np.zeros(len(items))
        strategy = self.exploration if explore else "greedy"
        if strategy == "thompson":
            weights = model.sample_weights(self._rng(), self.exploration_scale, rows=columns)
            bonus = X @ weights - X @ mean
        elif strategy == "ucb":
            bonus = self.ucb_alpha * stds
        scores = mean_logits + bonus
        order = sorted(range(len(items)),
                       key=lambda i: (-scores[i], computed[i][1], items[i].item_id))
        if strategy == "epsilon" and len(items) > 1 and self._rng().random() < self.epsilon:
            lucky = int(self._rng().integers(len(items)))
            order.remove(lucky)
            order.insert(0, lucky)
        if limit is not None:
            order = order[:limit]

        names = list(model.index)
        groups = [_contribution_group(names[j]) for j in columns]
        out = []
        for i in order:
            item, (parts, distance, minutes) = items[i], computed[i]
            contributions = dict.fromkeys((*PARTS, *EXTRA_CONTRIBUTIONS), 0.0)
            row = X[i] * mean
            for j in np.flatnonzero(X[i]):
                contributions[groups[j]] += float(row[j])
            contributions["baseline"] += float(batch.unknown_mean[i])
            contributions["exploration"] = float(bonus[i])
            scored = BanditScoredItem(
                item=item,
                score=float(scores[i]),
                parts=parts,
                contributions=contributions,
                reason="",
                distance_km=distance,
                travel_minutes=minutes,
                probability=_sigmoid(float(mean_logits[i])),
                uncertainty=float(stds[i]),
                # Exactly what learning will see: the dict, not the array row.
                features=self.features(context, item, parts, distance),
            )
            if explain:
                scored = replace(scored, reason=self.explainer.reason(context, scored))
            out.append(scored)
        return out

    def __repr__(self) -> str:
        return (f"BanditRanker(exploration={self.exploration!r}, n_seen={self.model.n_seen}, "
                f"features={len(self.model.index)})")


class LiveRanker:
    """The ranker the API holds: the newest published bandit, or a fallback until there is one.

    ``source`` is anything with ``current()`` returning the latest model or ``None`` (a
    :class:`online.model_state.ModelWatcher`). Until a bandit has learned from ``min_examples``
    impressions the fallback (the transparent ranker) ranks: a bandit that has seen nothing only
    knows its prior.
    """

    def __init__(self, source: Any, fallback: TransparentRanker | None = None, min_examples: int = 100) -> None:
        self.source = source
        self.fallback = fallback or TransparentRanker()
        self.min_examples = min_examples

    def active(self) -> TransparentRanker | BanditRanker:
        model = self.source.current()
        if isinstance(model, BanditRanker) and model.n_seen >= self.min_examples:
            return model
        return self.fallback

    def rank(self, context: RankContext, items: Iterable[Candidate], limit: int | None = None) -> list[ScoredItem]:
        ranker = self.active()
        return list(ranker.rank(context, items, limit=limit))

    def score_one(self, context: RankContext, item: Candidate) -> ScoredItem:
        return self.active().score_one(context, item)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()


__all__ = [
    "EXPLORATIONS",
    "BayesianLogisticRegression",
    "BanditRanker",
    "BanditScoredItem",
    "LiveRanker",
    "context_features",
    "feature_names",
    "position_features",
    "compute_parts",
    "local_hour",
    "daypart",
]
