"""Demand forecasting with delayed labels: a keyed series forecast ``horizon`` ahead (DESIGN §5).

:class:`DemandForecaster` predicts the value of a keyed series (bikes at a station, views per hour
in a cell × category, engagements per hour of an item) at a target moment, using only values
that were revealed at least ``horizon`` before that moment. It learns when the true value is
revealed, later, which is how River's delayed progressive validation
(``evaluate.progressive_val_score(..., moment=..., delay=...)``) scores it, and how the market
model feeds it hour by hour.

The forecast is the last revealed value (persistence) plus a learned correction::

    forecast = last + w · [usual_change, usual_change_weekday, gap_to_usual, trend, 1, context...]

* ``usual_change``: what the series usually did over the horizon into this time slot (an
  exponentially weighted mean of past realised changes ``y - last``, per key, weekday/weekend and
  slot of the day), shrunk towards 0 while it has few samples;
* ``usual_change_weekday``: the same per day of the week (Fridays are not Tuesdays);
* ``gap_to_usual``: the usual level of the slot (the time-of-week profile) minus the last value:
  pulls a series that strayed back to what is normal for the time;
* ``trend``: how the series moved over the horizon before the last value;
* context: numbers the caller passes in ``x`` (supply, price, weather), standardised online.

``w`` is per key, starting from pooled weights that every key teaches; it is learned online with
normalised updates on the absolute loss (a median forecast, best for MAE on counts that jump) or
the squared loss (a mean forecast, what expected-revenue arithmetic needs). Features are computed from the history *as of*
``moment - horizon`` both when predicting and when learning, so what is learned matches what is
predicted and nothing from the future leaks in.

It subclasses River's :class:`river.base.Regressor`, so River's evaluation tools take it as is.

>>> import datetime as dt
>>> f = DemandForecaster(horizon=dt.timedelta(hours=1), loss="squared", lr=0.05, prior={"usual_change": 1.0})
>>> t0 = dt.datetime(2026, 5, 4)  # a Monday
>>> for day in range(14):
...     for hour in range(24):
...         moment = t0 + dt.timedelta(days=day, hours=hour)
...         x = {"key": "cafe", "moment": moment}
...         _ = f.predict_one(x)
...         f.learn_one(x, 10.0 if hour == 8 else 2.0)  # a morning rush every day
>>> at_8 = {"key": "cafe", "moment": t0 + dt.timedelta(days=14, hours=8)}
>>> at_9 = {"key": "cafe", "moment": t0 + dt.timedelta(days=14, hours=9)}
>>> f.predict_one(at_8) > 7, f.predict_one(at_9) < 5
(True, True)
>>> round(f.usual("cafe", at_8["moment"]))
10
"""

from __future__ import annotations

import bisect
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from river import base

#: Names of the built-in features, in the order of the weight vector (context features follow).
BASE_FEATURES = ("usual_change", "usual_change_weekday", "gap_to_usual", "trend", "bias")
#: Samples a weekday-specific level needs before it is preferred over the weekday/weekend one.
_MIN_WEEKDAY_SAMPLES = 2


def clock(moment: datetime | float) -> tuple[float, int, int]:
    """``(epoch seconds, weekday, minute of day)`` of a moment.

    Naive datetimes are wall-clock times and are used as they read (the bike data is local time);
    aware ones are used in their own zone; numbers are epoch seconds, read in UTC.
    """
    if isinstance(moment, (int, float)):
        moment = datetime.fromtimestamp(float(moment), timezone.utc)
    if not isinstance(moment, datetime):
        raise TypeError(f"moment must be a datetime or epoch seconds, not {type(moment).__name__}")
    epoch = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    return epoch, moment.weekday(), moment.hour * 60 + moment.minute


class _Series:
    """Revealed values of one key, in moment order, and the key's own weights."""

    __slots__ = ("times", "values", "weights", "learned")

    def __init__(self, weights: list[float]) -> None:
        self.times: list[float] = []
        self.values: list[float] = []
        self.weights = weights
        self.learned = 0

    def value_before(self, epoch: float) -> tuple[float, float] | None:
        """The newest ``(time, value)`` at or before ``epoch``."""
        i = bisect.bisect_right(self.times, epoch)
        return (self.times[i - 1], self.values[i - 1]) if i else None

    def add(self, epoch: float, value: float, keep: int) -> None:
        i = bisect.bisect_right(self.times, epoch)
        self.times.insert(i, epoch)
        self.values.insert(i, value)
        if len(self.times) > 2 * keep:  # trim in blocks: deleting one at a time is quadratic
            del self.times[:-keep]
            del self.values[:-keep]


class DemandForecaster(base.Regressor):
    """Keyed demand forecaster learning from delayed labels (see the module docstring).

    Parameters
    ----------
    horizon
        How far ahead of the last revealed value the forecast is; values newer than
        ``moment - horizon`` are never used for a forecast at ``moment``.
    key, moment
        Names of the series key and of the target time in ``x``.
    slot_minutes
        Width of a time-of-day slot of the profiles (60 for hourly series).
    context
        Names of numeric context features in ``x`` (missing ones count as their running mean).
    decay
        Weight of a new sample in the exponentially weighted profiles once they hold more than
        ``1 / decay`` samples (before that, a plain mean): how fast the profile forgets.
    shrink
        Pseudo-samples pulling a young profile's usual change towards 0.
    lr
        Learning rate of the normalised weight updates.
    loss
        ``"absolute"`` (median forecast) or ``"squared"`` (mean forecast).
    integer
        Round forecasts to whole numbers (the median of an integer series is an integer).
    lower
        Forecasts are never below this (counts are never negative).
    history
        Revealed values kept per key (enough to cover ``2 x horizon`` at the series' rate).
    prior
        Initial weights by feature name (default all 0: plain persistence until it learns).
        Sparse count series do better starting from ``{"gap_to_usual": 0.5, ...}``.
    """

    def __init__(
        self,
        horizon: timedelta = timedelta(hours=1),
        key: str = "key",
        moment: str = "moment",
        slot_minutes: int = 60,
        context: tuple[str, ...] = (),
        decay: float = 0.02,
        shrink: float = 5.0,
        lr: float = 0.001,
        loss: str = "absolute",
        integer: bool = False,
        lower: float | None = 0.0,
        history: int = 256,
        prior: dict[str, float] | None = None,
    ) -> None:
        if horizon <= timedelta(0):
            raise ValueError(f"horizon must be positive, got {horizon}")
        if loss not in ("absolute", "squared"):
            raise ValueError(f"loss must be 'absolute' or 'squared', not {loss!r}")
        if not 0 < slot_minutes <= 1440 or 1440 % slot_minutes:
            raise ValueError(f"slot_minutes must divide a day (1440), got {slot_minutes}")
        self.horizon = horizon
        self.key = key
        self.moment = moment
        self.slot_minutes = slot_minutes
        self.context = tuple(context)
        self.decay = decay
        self.shrink = shrink
        self.lr = lr
        self.loss = loss
        self.integer = integer
        self.lower = lower
        self.history = history
        self.prior = dict(prior or {})
        self._horizon_s = horizon.total_seconds()
        self._n = len(BASE_FEATURES) + len(self.context)
        names = [*BASE_FEATURES, *self.context]
        unknown = set(self.prior) - set(names)
        if unknown:
            raise ValueError(f"prior names unknown features {sorted(unknown)}; known: {names}")
        self._weights = [float(self.prior.get(name, 0.0)) for name in names]
        self._series: dict[Any, _Series] = {}
        # (key, weekend?, slot) / (key, weekday, slot) -> [mean, samples]
        self._change: dict[tuple[Any, Any, int], list[float]] = {}
        self._change_weekday: dict[tuple[Any, Any, int], list[float]] = {}
        self._level: dict[tuple[Any, Any, int], list[float]] = {}
        self._level_weekday: dict[tuple[Any, Any, int], list[float]] = {}
        # context name -> [samples, mean, M2] (Welford)
        self._context_stats: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in self.context}
        self.n_learned = 0

    # ---- public API --------------------------------------------------------------------------

    def predict_one(self, x: dict[str, Any]) -> float:
        key, epoch, weekday, minute = self._where(x)
        features, last = self._features(key, epoch, weekday, minute, x)
        if last is None:
            usual = self._usual_level(key, weekday, minute)
            return self._finish(usual if usual is not None else (self.lower or 0.0))
        weights = self._effective_weights(key)
        return self._finish(last + sum(w * f for w, f in zip(weights, features, strict=True)))

    def learn_one(self, x: dict[str, Any], y: float) -> None:
        y = float(y)
        if not math.isfinite(y):
            return  # a broken reading teaches nothing
        key, epoch, weekday, minute = self._where(x)
        features, last = self._features(key, epoch, weekday, minute, x)
        series = self._series.get(key)
        if series is None:
            # A new key starts from the pooled weights: what every other key has taught so far.
            series = self._series[key] = _Series(list(self._weights))
        if last is not None:
            self._update_weights(series, features, y - (last + sum(
                w * f for w, f in zip(self._effective_weights(key), features, strict=True))))
            weekend, slot = weekday >= 5, minute // self.slot_minutes
            self._ew(self._change, (key, weekend, slot), y - last)
            self._ew(self._change_weekday, (key, weekday, slot), y - last)
        slot = minute // self.slot_minutes
        self._ew(self._level, (key, weekday >= 5, slot), y)
        self._ew(self._level_weekday, (key, weekday, slot), y)
        for name in self.context:
            value = _number(x.get(name))
            if value is not None:
                _welford(self._context_stats[name], value)
        series.add(epoch, y, self.history)
        series.learned += 1
        self.n_learned += 1

    def usual(self, key: Any, moment: datetime | float) -> float | None:
        """The usual level of ``key`` at the time slot of ``moment`` (its time-of-week profile),
        or None while nothing is known for that slot."""
        _, weekday, minute = clock(moment)
        return self._usual_level(key, weekday, minute)

    def usual_samples(self, key: Any, moment: datetime | float) -> int:
        """How many revealed values the usual level at ``moment``'s slot rests on."""
        _, weekday, minute = clock(moment)
        slot = minute // self.slot_minutes
        entry = self._level_weekday.get((key, weekday, slot))
        if entry is not None and entry[1] >= _MIN_WEEKDAY_SAMPLES:
            return int(entry[1])
        entry = self._level.get((key, weekday >= 5, slot))
        return int(entry[1]) if entry else 0

    def last_value(self, key: Any, moment: datetime | float) -> tuple[float, float] | None:
        """``(epoch, value)`` of the newest value revealed at least ``horizon`` before ``moment``."""
        series = self._series.get(key)
        if series is None:
            return None
        return series.value_before(clock(moment)[0] - self._horizon_s)

    def explain_one(self, x: dict[str, Any]) -> dict[str, Any]:
        """The forecast with its parts: last value, features, weights and contributions."""
        key, epoch, weekday, minute = self._where(x)
        features, last = self._features(key, epoch, weekday, minute, x)
        names = [*BASE_FEATURES, *self.context]
        weights = self._effective_weights(key)
        return {
            "forecast": self.predict_one(x),
            "last": last,
            "usual": self._usual_level(key, weekday, minute),
            "features": dict(zip(names, features, strict=True)),
            "weights": dict(zip(names, weights, strict=True)),
            "contributions": {n: w * f for n, w, f in zip(names, weights, features, strict=True)},
        }

    def keys(self) -> list[Any]:
        return list(self._series)

    def weights_by_key(self) -> dict[Any, dict[str, float]]:
        """The learned weights of every key, by feature name."""
        names = [*BASE_FEATURES, *self.context]
        return {key: dict(zip(names, s.weights, strict=True)) for key, s in self._series.items()}

    # ---- internals ---------------------------------------------------------------------------

    def _where(self, x: dict[str, Any]) -> tuple[Any, float, int, int]:
        if self.moment not in x:
            raise KeyError(f"x has no {self.moment!r} (the target time)")
        epoch, weekday, minute = clock(x[self.moment])
        return x.get(self.key), epoch, weekday, minute

    def _features(
        self, key: Any, epoch: float, weekday: int, minute: int, x: dict[str, Any]
    ) -> tuple[list[float], float | None]:
        series = self._series.get(key)
        known = series.value_before(epoch - self._horizon_s) if series is not None else None
        context = [self._standardised(name, x.get(name)) for name in self.context]
        if known is None:
            return [0.0, 0.0, 0.0, 0.0, 1.0, *context], None
        last_time, last = known
        slot = minute // self.slot_minutes
        usual_change = self._shrunk(self._change.get((key, weekday >= 5, slot)))
        usual_change_weekday = self._shrunk(self._change_weekday.get((key, weekday, slot)))
        level = self._level.get((key, weekday >= 5, slot))
        # Weekday/weekend level, not the weekday-specific one: it rests on more samples and
        # measured better on real counts.
        gap = level[0] - last if level is not None else 0.0
        assert series is not None
        before = series.value_before(last_time - self._horizon_s)
        trend = last - before[1] if before is not None else 0.0
        return [usual_change, usual_change_weekday, gap, trend, 1.0, *context], last

    def _usual_level(self, key: Any, weekday: int, minute: int) -> float | None:
        slot = minute // self.slot_minutes
        entry = self._level_weekday.get((key, weekday, slot))
        if entry is not None and entry[1] >= _MIN_WEEKDAY_SAMPLES:
            return entry[0]
        entry = self._level.get((key, weekday >= 5, slot))
        return entry[0] if entry else None

    def _shrunk(self, entry: list[float] | None) -> float:
        if not entry:
            return 0.0
        mean, n = entry
        return mean * n / (n + self.shrink)

    def _ew(self, table: dict[Any, list[float]], slot_key: Any, value: float) -> None:
        entry = table.get(slot_key)
        if entry is None:
            table[slot_key] = [value, 1.0]
            return
        entry[1] += 1.0
        alpha = max(1.0 / entry[1], self.decay)
        entry[0] += alpha * (value - entry[0])

    def _effective_weights(self, key: Any) -> list[float]:
        series = self._series.get(key)
        return series.weights if series is not None else self._weights

    def _update_weights(self, series: _Series, features: list[float], error: float) -> None:
        norm = math.sqrt(1.0 + sum(f * f for f in features))
        if self.loss == "absolute":
            step = self.lr * (1.0 if error > 0 else -1.0 if error < 0 else 0.0) / norm
        else:
            step = self.lr * error / (norm * norm)
        # The key's weights learn from its own values only; the pooled ones, which new keys start
        # from, from every key.
        for i, f in enumerate(features):
            self._weights[i] += step * f
            series.weights[i] += step * f

    def _standardised(self, name: str, value: Any) -> float:
        n, mean, m2 = self._context_stats[name]
        number = _number(value)
        if number is None or n < 2:
            return 0.0
        std = math.sqrt(m2 / (n - 1))
        return (number - mean) / std if std > 0 else 0.0

    def _finish(self, value: float) -> float:
        if self.lower is not None:
            value = max(self.lower, value)
        return float(round(value)) if self.integer else float(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _welford(stats: list[float], value: float) -> None:
    stats[0] += 1.0
    delta = value - stats[1]
    stats[1] += delta / stats[0]
    stats[2] += delta * (value - stats[1])


def bike_forecaster() -> DemandForecaster:
    """The forecaster configured for bike counts at stations, 30 minutes ahead.

    Counts are sampled every few minutes, so slots are 15 minutes wide; the target is an integer
    stock read with MAE, so the forecast is a median (absolute loss) rounded to whole bikes.
    """
    return DemandForecaster(
        horizon=timedelta(minutes=30),
        key="station",
        moment="moment",
        slot_minutes=15,
        decay=0.02,
        shrink=5.0,
        lr=0.001,
        loss="absolute",
        integer=True,
        history=512,
    )


__all__ = ["BASE_FEATURES", "DemandForecaster", "bike_forecaster", "clock"]
