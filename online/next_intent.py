"""Next intent: which category a user is about to want, learned online from their behaviour.

When a user's location changes the app wants to show, before they type anything, what they are
likely to want *here and now* ("you may want a spa now"). :class:`NextIntent` is an online
multiclass model of the category of the user's next intent event (a search, a voice query, an
engagement, a purchase or a check-in) given:

* when: local hour, weekday, 3-hour daypart, weekend;
* what came before: the last two categories and the time since the last one;
* the user's own habits, as counts kept in their :class:`IntentHistory`: overall, after the last
  category, in this daypart, in this weekday-and-daypart slot, within an hour of this time of day
  (any day, and this weekday), on this kind of day, in this place, and in the last seven days;
* where: the H3 cell the user is in, and whether they are travelling (far from home).

It is a *conditional logit*: for each candidate category the model derives a handful of smoothed
log-probabilities ("evidence") from the user's counts in ``x`` and from population statistics it
learns itself (category frequencies, transitions after one and two categories, transitions by
daypart, categories chosen after being in a cell), and scores the category with one shared weight
per kind of evidence plus a per-category bias (also by travel state). Weights are learned by
AdaGrad on the softmax log-loss, one event at a time. Sharing the weights across categories lets a
new user, a new category or a rare one benefit from what every other one taught, and keeps the
model small and explainable: :meth:`NextIntent.explain_one` names the evidence behind a guess.

Both classes follow River's shape: parameters in ``__init__``, ``learn_one``/``predict_proba_one``,
plain picklable state. :class:`IntentLearner` wires them to canonical events for the flow, the
API and the check-ins benchmark.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from river import base

from kairos.schema import Event

#: Kinds whose category says what the user wanted (a location ping says where, not what, unless it
#: is a check-in at a venue of some category).
INTENT_KINDS = ("search", "voice", "view", "click", "save", "purchase", "booking", "location")
HOURS_PER_DAYPART = 3
RECENT_S = 7 * 86400.0
#: Words for "you may want ... now"; unknown categories are named as they are.
INTENT_NOUNS = {
    "food": "something to eat",
    "coffee": "a coffee",
    "spa": "a spa",
    "fitness": "a workout",
    "sport": "a game",
    "culture": "a show",
    "retail": "some shopping",
    "services": "a service",
}
#: The kinds of evidence, in the order they are reported; see :meth:`NextIntent.evidence_one`.
EVIDENCE = (
    "user", "user_after_last", "user_daypart", "user_slot", "user_near_hour", "user_weekday_near_hour",
    "user_daytype", "user_at_cell", "user_recent",
    "after_last", "after_last_two", "after_last_at_daypart", "after_cell", "same_as_last",
)
_LOG_FLOOR = 1e-3


def local_time(ts: float, lon: float | None) -> datetime:
    """Local solar time at longitude ``lon`` (15° per hour; UTC without a longitude).

    Routines follow the local clock; a solar offset is within an hour or two of the civil one,
    and needs no time-zone database (the same convention as the bandit's dayparts).
    """
    hours = 0 if lon is None or not math.isfinite(lon) else max(-12, min(14, round(lon / 15.0)))
    return datetime.fromtimestamp(ts, timezone(timedelta(hours=hours)))


def daypart(hour: int) -> int:
    return int(hour) // HOURS_PER_DAYPART


def _merged(tables: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for table in tables:
        for category, count in (table or {}).items():
            out[category] = out.get(category, 0.0) + count
    return out


def _shift(weekday: int, hour: int, hours: int) -> tuple[int, int]:
    """(weekday, hour) ``hours`` later (or earlier), wrapping around midnight and the week."""
    total = (weekday * 24 + hour + hours) % (7 * 24)
    return total // 24, total % 24


def _bump(counts: dict[Any, dict[str, float]], key: Any, category: str) -> None:
    inner = counts.get(key)
    if inner is None:
        inner = counts[key] = {}
    inner[category] = inner.get(category, 0.0) + 1.0


@dataclass
class IntentHistory:
    """What one user went for, when and where: the per-user state behind the features.

    ``update`` folds in an observed intent; ``features`` builds the model's ``x`` for a moment.
    Counts are plain (not decayed): a habit seen ten times stays a habit. ``max_cells`` bounds the
    per-place counts (least recently used cells go first).
    """

    max_cells: int = 64
    counts: dict[str, float] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    by_daypart: dict[int, dict[str, float]] = field(default_factory=dict)
    by_slot: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    by_hour: dict[int, dict[str, float]] = field(default_factory=dict)
    by_weekday_hour: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    by_daytype: dict[bool, dict[str, float]] = field(default_factory=dict)
    at_cell: OrderedDict[str, dict[str, float]] = field(default_factory=OrderedDict)
    recent: list[tuple[float, str]] = field(default_factory=list)
    last: tuple[float, str, str | None] | None = None  # (ts, category, cell)
    last2: str | None = None
    last_lon: float | None = None  # for the local clock of the next prediction

    def update(
        self, ts: float, local: datetime, category: str, cell: str | None = None, before_cell: str | None = None
    ) -> None:
        """Fold in that the user went for ``category`` at ``ts`` (local time ``local``) in ``cell``.

        ``before_cell`` is where the user was just before (what a prediction made then knew), so
        the per-place counts read "after being here, this user went for ...".
        """
        self.counts[category] = self.counts.get(category, 0.0) + 1.0
        if self.last is not None:
            _bump(self.after, self.last[1], category)
        part = daypart(local.hour)
        _bump(self.by_daypart, part, category)
        _bump(self.by_slot, (local.weekday(), part), category)
        _bump(self.by_hour, local.hour, category)
        _bump(self.by_weekday_hour, (local.weekday(), local.hour), category)
        _bump(self.by_daytype, local.weekday() >= 5, category)
        if before_cell is not None:
            _bump(self.at_cell, before_cell, category)
            self.at_cell.move_to_end(before_cell)
            while len(self.at_cell) > self.max_cells:
                self.at_cell.popitem(last=False)
        self.recent.append((ts, category))
        self.recent = [r for r in self.recent if r[0] > ts - RECENT_S]
        self.last2 = self.last[1] if self.last is not None else None
        self.last = (ts, category, cell)

    def features(self, ts: float, local: datetime, cell: str | None = None, travelling: bool = False) -> dict[str, Any]:
        """The model's ``x`` for a prediction at ``ts`` (local time ``local``) in ``cell``."""
        part = daypart(local.hour)
        last = self.last[1] if self.last is not None else None
        recent: dict[str, float] = {}
        for when, category in self.recent:
            if ts - RECENT_S < when <= ts:
                recent[category] = recent.get(category, 0.0) + 1.0
        return {
            "hour": local.hour,
            "weekday": local.weekday(),
            "daypart": part,
            "weekend": local.weekday() >= 5,
            "travelling": bool(travelling),
            "cell": cell,
            "last": last,
            "last2": self.last2 if last is not None else None,
            "hours_since_last": (ts - self.last[0]) / 3600.0 if self.last is not None else None,
            "user": dict(self.counts),
            "user_after_last": dict(self.after.get(last, {})) if last is not None else {},
            "user_daypart": dict(self.by_daypart.get(part, {})),
            "user_slot": dict(self.by_slot.get((local.weekday(), part), {})),
            # Within an hour of now: habits do not stop at daypart borders (7:59 vs 8:01).
            "user_near_hour": _merged(self.by_hour.get((local.hour + d) % 24) for d in (-1, 0, 1)),
            "user_weekday_near_hour": _merged(
                self.by_weekday_hour.get(_shift(local.weekday(), local.hour, d)) for d in (-1, 0, 1)
            ),
            "user_daytype": dict(self.by_daytype.get(local.weekday() >= 5, {})),
            "user_at_cell": dict(self.at_cell.get(cell, {})) if cell is not None else {},
            "user_recent": recent,
        }


def _table(counts: Mapping[str, float] | None) -> tuple[Mapping[str, float], float] | None:
    if not counts:
        return None
    return counts, float(sum(counts.values()))


def _share(table: tuple[Mapping[str, float], float] | None, category: str, prior: float, strength: float) -> float:
    """Dirichlet-smoothed share of ``category`` in the counts, shrunk towards ``prior``."""
    if table is None:
        return prior
    counts, total = table
    return (counts.get(category, 0.0) + strength * prior) / (total + strength)


class NextIntent(base.Classifier):
    """Online conditional-logit model of the next category a user goes for.

    Parameters
    ----------
    learning_rate
        AdaGrad step size of the evidence weights and category biases.
    user_strength
        Pseudo-counts with which a user's own shares are shrunk towards the population's: small
        values trust a user's habits after a few events.
    population_strength
        The same for the population's conditional shares (after a category, after a cell, ...),
        shrunk towards the overall category shares.
    l2
        Weight decay of the evidence weights (0: none).

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> model, history = NextIntent(), IntentHistory()
    >>> day = [(8, "coffee"), (13, "food"), (19, "spa")]  # the same routine, every day
    >>> def observe(d, hour, category):
    ...     at = datetime(2026, 5, d, hour, tzinfo=timezone.utc)
    ...     model.learn_one(history.features(at.timestamp(), at), category)
    ...     history.update(at.timestamp(), at, category)
    >>> for d in range(1, 15):
    ...     for hour, category in day:
    ...         observe(d, hour, category)
    >>> observe(15, 8, "coffee")
    >>> observe(15, 13, "food")
    >>> at = datetime(2026, 5, 15, 19, tzinfo=timezone.utc)
    >>> x = history.features(at.timestamp(), at)
    >>> model.predict_one(x)
    'spa'
    >>> round(model.predict_proba_one(x)["spa"], 1) > 0.5
    True
    """

    def __init__(
        self,
        learning_rate: float = 0.05,
        user_strength: float = 2.0,
        population_strength: float = 5.0,
        l2: float = 0.0,
    ) -> None:
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, not {learning_rate!r}")
        if user_strength <= 0 or population_strength <= 0:
            raise ValueError("user_strength and population_strength must be positive")
        self.learning_rate = learning_rate
        self.user_strength = user_strength
        self.population_strength = population_strength
        self.l2 = l2
        self.classes: dict[str, None] = {}  # insertion-ordered set
        self.weights: dict[str, float] = {name: 0.0 for name in EVIDENCE}
        self.bias: dict[str, float] = {}
        self._sq_grad: dict[str, float] = {}
        self.n_seen = 0
        # Population statistics.
        self._counts: dict[str, float] = {}
        self._after: dict[str, dict[str, float]] = {}
        self._after_two: dict[tuple[str, str], dict[str, float]] = {}
        self._after_at_daypart: dict[tuple[str, int], dict[str, float]] = {}
        self._after_cell: dict[str, dict[str, float]] = {}
        self._memo: tuple[Any, tuple[int, int], dict[str, dict[str, float]]] | None = None

    @property
    def _multiclass(self) -> bool:
        return True

    def __getstate__(self) -> dict[str, Any]:
        # The evidence memo holds the caller's last ``x``: not part of what was learned.
        return {**self.__dict__, "_memo": None}

    # -- evidence -------------------------------------------------------------------------------

    def evidence_one(self, x: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """Category -> {evidence name: value}: the smoothed log-shares each category is scored by."""
        memo = self._memo
        if memo is not None and memo[0] is x and memo[1] == (self.n_seen, len(self.classes)):
            return memo[2]
        last, last2, part = x.get("last"), x.get("last2"), x.get("daypart")
        cell = x.get("cell")
        a_user, a_pop = self.user_strength, self.population_strength
        # Each table with its total, computed once per call rather than once per category.
        tables = {
            "user": _table(x.get("user")),
            "user_after_last": _table(x.get("user_after_last")),
            "user_daypart": _table(x.get("user_daypart")),
            "user_slot": _table(x.get("user_slot")),
            "user_near_hour": _table(x.get("user_near_hour")),
            "user_weekday_near_hour": _table(x.get("user_weekday_near_hour")),
            "user_daytype": _table(x.get("user_daytype")),
            "user_at_cell": _table(x.get("user_at_cell")),
            "user_recent": _table(x.get("user_recent")),
            "after_last": _table(self._after.get(last) if last is not None else None),
            "after_last_two": _table(self._after_two.get((last2, last)) if last2 is not None else None),
            "after_last_at_daypart": _table(self._after_at_daypart.get((last, part)) if last is not None else None),
            "after_cell": _table(self._after_cell.get(cell) if cell is not None else None),
        }
        total = sum(self._counts.values())
        k = max(1, len(self.classes))
        out: dict[str, dict[str, float]] = {}
        for category in self.classes:
            prior = (self._counts.get(category, 0.0) + 1.0) / (total + k)
            user = _share(tables["user"], category, prior, a_user)
            pop_after = _share(tables["after_last"], category, prior, a_pop)
            shares = {
                "user": user,
                "user_after_last": _share(tables["user_after_last"], category, pop_after, a_user),
                "user_daypart": _share(tables["user_daypart"], category, user, a_user),
                "user_slot": _share(tables["user_slot"], category, user, a_user / 2),
                "user_near_hour": _share(tables["user_near_hour"], category, user, a_user),
                "user_weekday_near_hour": _share(tables["user_weekday_near_hour"], category, user, a_user / 2),
                "user_daytype": _share(tables["user_daytype"], category, user, a_user),
                "user_at_cell": _share(tables["user_at_cell"], category, user, a_user / 2),
                "user_recent": _share(tables["user_recent"], category, user, a_user),
                "after_last": pop_after,
                "after_last_two": _share(tables["after_last_two"], category, pop_after, a_pop),
                "after_last_at_daypart": _share(tables["after_last_at_daypart"], category, pop_after, a_pop),
                "after_cell": _share(tables["after_cell"], category, prior, a_pop),
            }
            evidence = {name: math.log(value + _LOG_FLOOR) for name, value in shares.items()}
            evidence["same_as_last"] = 1.0 if category == last else 0.0
            out[category] = evidence
        # ``learn_one(x, y)`` right after ``predict_proba_one(x)`` (the prequential loop) reuses it.
        self._memo = (x, (self.n_seen, len(self.classes)), out)
        return out

    def _scores(self, x: Mapping[str, Any], evidence: dict[str, dict[str, float]]) -> dict[str, float]:
        travel = "travelling" if x.get("travelling") else "home"
        return {
            category: sum(self.weights[name] * value for name, value in parts.items())
            + self.bias.get(category, 0.0)
            + self.bias.get(f"{category}|{travel}", 0.0)
            for category, parts in evidence.items()
        }

    # -- River API ------------------------------------------------------------------------------

    def predict_proba_one(self, x: Mapping[str, Any], **kwargs: Any) -> dict[str, float]:
        """Category -> probability; empty before the first ``learn_one``."""
        if not self.classes:
            return {}
        return _softmax(self._scores(x, self.evidence_one(x)))

    def learn_one(self, x: Mapping[str, Any], y: Any) -> None:
        """One AdaGrad step on the log-loss of ``y`` given ``x``, then count ``y`` in the statistics."""
        category = str(y)
        self.classes[category] = None
        if len(self.classes) > 1:
            evidence = self.evidence_one(x)
            probabilities = _softmax(self._scores(x, evidence))
            travel = "travelling" if x.get("travelling") else "home"
            gradient = dict.fromkeys(self.weights, 0.0)
            for c, p in probabilities.items():
                error = p - (1.0 if c == category else 0.0)
                for name, value in evidence[c].items():
                    gradient[name] += error * value
                self._step(self.bias, c, error)
                self._step(self.bias, f"{c}|{travel}", error)
            for name, g in gradient.items():
                self._step(self.weights, name, g + self.l2 * self.weights[name], key=f"w:{name}")
        self._count(x, category)
        self.n_seen += 1

    def _step(self, table: dict[str, float], name: str, gradient: float, key: str | None = None) -> None:
        key = key or f"b:{name}"
        sq = self._sq_grad.get(key, 1e-8) + gradient * gradient
        self._sq_grad[key] = sq
        table[name] = table.get(name, 0.0) - self.learning_rate * gradient / math.sqrt(sq)

    def _count(self, x: Mapping[str, Any], category: str) -> None:
        self._counts[category] = self._counts.get(category, 0.0) + 1.0
        last, last2, cell = x.get("last"), x.get("last2"), x.get("cell")
        if last is not None:
            _bump(self._after, last, category)
            _bump(self._after_at_daypart, (last, x.get("daypart")), category)
            if last2 is not None:
                _bump(self._after_two, (last2, last), category)
        if cell is not None:
            _bump(self._after_cell, cell, category)

    # -- explaining -----------------------------------------------------------------------------

    def explain_one(self, x: Mapping[str, Any], category: str) -> dict[str, float]:
        """Contribution (weight x evidence, log-odds) of each kind of evidence to ``category``'s score."""
        evidence = self.evidence_one(x).get(category)
        if evidence is None:
            return {}
        return {name: self.weights[name] * value for name, value in evidence.items()}


def _softmax(scores: Mapping[str, float]) -> dict[str, float]:
    top = max(scores.values())
    exps = {c: math.exp(s - top) for c, s in scores.items()}
    total = sum(exps.values())
    return {c: v / total for c, v in exps.items()}


def top_k(probabilities: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` most probable categories; ties go to the category name so results are stable."""
    return [c for c, _ in sorted(probabilities.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def intent_hint(probabilities: Mapping[str, float], min_probability: float = 0.3) -> str | None:
    """ "you may want a spa now" when one category is likely enough, else None."""
    if not probabilities:
        return None
    category = top_k(probabilities, 1)[0]
    if probabilities[category] < min_probability:
        return None
    return f"you may want {INTENT_NOUNS.get(category, category)} now"


#: Name the flow publishes the learner under (model state) and the API watches.
INTENT_MODEL = "next_intent"


@dataclass
class IntentLearner:
    """One :class:`NextIntent` model plus every user's :class:`IntentHistory`, fed canonical events.

    ``learn_event`` is what the flow calls for each user event, in event-time order per user; it
    returns the prediction the model made *before* seeing the event (prequential evaluation: the
    benchmark scores exactly these). ``predict`` is what the API calls on a location change.
    """

    model: NextIntent = field(default_factory=NextIntent)
    histories: dict[str, IntentHistory] = field(default_factory=dict)
    kinds: tuple[str, ...] = INTENT_KINDS
    #: Whether a prediction knows *when* the next intent happens (the API asks at a moment: yes).
    #: False predicts as of the user's previous event, like a pre-fetch made right after it.
    time_known: bool = True

    def history(self, user_id: str) -> IntentHistory:
        history = self.histories.get(user_id)
        if history is None:
            history = self.histories[user_id] = IntentHistory()
        return history

    def learn_event(self, event: Event, travelling: bool = False) -> dict[str, float] | None:
        """Learn from one user event with a category; returns the prediction made before learning
        (None for events that say nothing about intent)."""
        if event.actor_type != "user" or event.kind not in self.kinds or not event.category:
            return None
        ts = event.ts.timestamp()
        history = self.history(event.actor_id)
        # Where the user was before this event: what a prediction at this moment would have known.
        cell = history.last[2] if history.last is not None else None
        lon = history.last_lon if history.last_lon is not None else event.lon
        asked_at = ts if self.time_known or history.last is None else history.last[0]
        x = history.features(asked_at, local_time(asked_at, lon), cell=cell, travelling=travelling)
        prediction = self.model.predict_proba_one(x)
        self.model.learn_one(x, event.category)
        history.update(ts, local_time(ts, event.lon if event.lon is not None else lon), event.category,
                       cell=event.cell, before_cell=cell)
        if event.lon is not None:
            history.last_lon = event.lon
        return prediction

    def predict(
        self, user_id: str, at: datetime, lon: float | None = None, cell: str | None = None,
        travelling: bool = False,
    ) -> dict[str, float]:
        """Category probabilities for the user at ``at`` in ``cell`` (a new user gets the population's)."""
        ts = at.timestamp()
        history = self.histories.get(user_id) or IntentHistory()
        return self.model.predict_proba_one(history.features(ts, local_time(ts, lon), cell=cell,
                                                             travelling=travelling))


__all__ = [
    "EVIDENCE",
    "INTENT_KINDS",
    "INTENT_NOUNS",
    "IntentHistory",
    "IntentLearner",
    "NextIntent",
    "daypart",
    "intent_hint",
    "local_time",
    "top_k",
]
