"""The demand forecaster: delayed labels, no look-ahead, profiles, River compatibility, and the bikes
benchmark's code path on a small synthetic file."""

from __future__ import annotations

import datetime as dt
import math
import pickle
import random
import zipfile
from pathlib import Path

import pytest
from river import evaluate, metrics

from kairos.bench.bikes import load_bikes, persistence_baseline, run_bikes
from online.demand_forecaster import BASE_FEATURES, DemandForecaster, bike_forecaster, clock

T0 = dt.datetime(2026, 5, 4)  # a Monday
HOUR = dt.timedelta(hours=1)


def daily_series(days: int, seed: int = 1, noise: float = 1.0) -> list[tuple[dict, float]]:
    """Hourly counts with a morning and an evening rush every day, plus noise."""
    rng = random.Random(seed)
    out = []
    for h in range(days * 24):
        moment = T0 + h * HOUR
        level = 3.0 + 12.0 * math.exp(-0.5 * ((moment.hour - 8) / 1.0) ** 2) \
            + 8.0 * math.exp(-0.5 * ((moment.hour - 18) / 1.5) ** 2)
        out.append(({"key": "cafe", "moment": moment}, max(0.0, level + rng.gauss(0.0, noise))))
    return out


def test_beats_persistence_on_a_daily_rhythm_under_delayed_labels() -> None:
    data = daily_series(28)
    forecaster = DemandForecaster(horizon=HOUR, loss="squared", lr=0.05)
    ours = evaluate.progressive_val_score(data, forecaster, metrics.MAE(), moment="moment", delay=HOUR)
    persistence = persistence_baseline()
    keyed = [({**x, "station": x["key"]}, y) for x, y in data]
    theirs = evaluate.progressive_val_score(keyed, persistence, metrics.MAE(), moment="moment", delay=HOUR)
    assert ours.get() < 0.6 * theirs.get(), (ours, theirs)
    # What it learned says why: the usual change into each hour carries the forecast.
    weights = forecaster.weights_by_key()["cafe"]
    assert weights["usual_change"] + weights["usual_change_weekday"] + weights["gap_to_usual"] > 0.5


def test_never_uses_a_value_newer_than_moment_minus_horizon() -> None:
    forecaster = DemandForecaster(horizon=dt.timedelta(minutes=30), slot_minutes=15)
    target = T0 + dt.timedelta(hours=5)
    for minutes in range(0, 271, 10):  # values up to 30 minutes before the target
        forecaster.learn_one({"key": "s", "moment": T0 + dt.timedelta(minutes=minutes)}, 5.0)
    assert forecaster.explain_one({"key": "s", "moment": target})["last"] == 5.0
    # A value 10 minutes before the target is too new for a 30-minute forecast: ignored.
    forecaster.learn_one({"key": "s", "moment": target - dt.timedelta(minutes=10)}, 500.0)
    explained = forecaster.explain_one({"key": "s", "moment": target})
    assert explained["last"] == 5.0
    assert explained["features"]["trend"] == 0.0
    assert forecaster.last_value("s", target) == ((T0 + dt.timedelta(minutes=270)).timestamp(), 5.0)


def test_learning_order_does_not_matter_for_what_is_revealed() -> None:
    """Values revealed out of order are kept in moment order."""
    forecaster = DemandForecaster(horizon=HOUR)
    for h in (3, 1, 2, 0):
        forecaster.learn_one({"key": "k", "moment": T0 + h * HOUR}, float(h))
    assert forecaster.last_value("k", T0 + 3 * HOUR) == ((T0 + 2 * HOUR).timestamp(), 2.0)


def test_new_key_starts_from_the_usual_level_then_persistence() -> None:
    forecaster = DemandForecaster(horizon=HOUR)
    assert forecaster.predict_one({"key": "new", "moment": T0}) == 0.0  # nothing known at all
    forecaster.learn_one({"key": "new", "moment": T0 + 9 * HOUR}, 7.0)
    # Same slot next day, no recent value yet for the target: the usual level of the slot.
    assert forecaster.usual("new", T0 + dt.timedelta(days=1, hours=9)) == 7.0
    assert forecaster.usual_samples("new", T0 + dt.timedelta(days=1, hours=9)) == 1
    assert forecaster.usual("new", T0 + dt.timedelta(days=5, hours=9)) is None  # Saturday: weekend slot


def test_context_feature_that_drives_demand_gets_weight() -> None:
    rng = random.Random(4)
    forecaster = DemandForecaster(horizon=HOUR, loss="squared", lr=0.05, context=("supply",))
    for h in range(2000):
        supply = rng.choice([0.0, 10.0])
        x = {"key": "k", "moment": T0 + h * HOUR, "supply": supply}
        forecaster.learn_one(x, 5.0 + supply)
    assert forecaster.weights_by_key()["k"]["supply"] > 1.0
    high = forecaster.predict_one({"key": "k", "moment": T0 + 2000 * HOUR, "supply": 10.0})
    low = forecaster.predict_one({"key": "k", "moment": T0 + 2000 * HOUR, "supply": 0.0})
    assert high - low > 4.0


def test_integer_lower_and_broken_values() -> None:
    forecaster = DemandForecaster(horizon=HOUR, integer=True, lower=0.0)
    forecaster.learn_one({"key": "k", "moment": T0}, 2.6)
    forecaster.learn_one({"key": "k", "moment": T0 + HOUR}, float("nan"))  # ignored
    forecaster.learn_one({"key": "k", "moment": T0 + HOUR}, float("inf"))  # ignored
    assert forecaster.n_learned == 1
    prediction = forecaster.predict_one({"key": "k", "moment": T0 + 2 * HOUR})
    assert prediction == 3.0 and float(prediction).is_integer()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"horizon": dt.timedelta(0)}, "horizon must be positive"),
        ({"loss": "huber"}, "loss must be"),
        ({"slot_minutes": 7}, "slot_minutes must divide a day"),
        ({"prior": {"weather": 1.0}}, "prior names unknown features"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        DemandForecaster(**kwargs)


def test_moment_must_be_a_time() -> None:
    forecaster = DemandForecaster()
    with pytest.raises(KeyError, match="moment"):
        forecaster.predict_one({"key": "k"})
    with pytest.raises(TypeError, match="moment must be"):
        forecaster.predict_one({"key": "k", "moment": "yesterday"})


def test_clock_reads_naive_aware_and_epoch_times() -> None:
    aware = dt.datetime(2026, 5, 8, 18, 30, tzinfo=dt.UTC)
    assert clock(aware) == (aware.timestamp(), 4, 18 * 60 + 30)
    assert clock(aware.timestamp())[1:] == (4, 18 * 60 + 30)
    assert clock(dt.datetime(2026, 5, 8, 18, 30))[1:] == (4, 18 * 60 + 30)  # wall clock as it reads


def test_pickles_and_predicts_the_same() -> None:
    forecaster = DemandForecaster(horizon=HOUR, loss="squared", lr=0.05)
    for x, y in daily_series(3):
        forecaster.learn_one(x, y)
    copy = pickle.loads(pickle.dumps(forecaster))
    x = {"key": "cafe", "moment": T0 + dt.timedelta(days=3, hours=8)}
    assert copy.predict_one(x) == forecaster.predict_one(x)
    assert set(copy.explain_one(x)["weights"]) == set(BASE_FEATURES)


def test_bike_forecaster_is_the_product_class() -> None:
    forecaster = bike_forecaster()
    assert type(forecaster) is DemandForecaster
    assert forecaster.horizon == dt.timedelta(minutes=30) and forecaster.integer and forecaster.key == "station"


def _bike_zip(path: Path, days: int = 3) -> Path:
    rng = random.Random(2)
    lines = ["moment,bikes,station,clouds,description,humidity,pressure,temperature,wind"]
    for step in range(days * 24 * 12):
        moment = dt.datetime(2016, 4, 4) + dt.timedelta(minutes=5 * step)
        for station, phase in (("carmes", 8), ("pomme", 18)):
            bikes = round(8 + 6 * math.cos((moment.hour - phase) / 24 * 2 * math.pi) + rng.gauss(0, 1))
            lines.append(f"{moment:%Y-%m-%d %H:%M:%S},{max(0, bikes)},{station},40,clear sky,60,1015.0,18.5,3.1")
    archive = path / "bikes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("toulouse_bikes.csv", "\n".join(lines) + "\n")
    return archive


def test_bikes_bench_runs_the_three_models_under_the_same_protocol(tmp_path: Path) -> None:
    archive = _bike_zip(tmp_path)
    data = load_bikes(archive)
    assert len(data) == 3 * 24 * 12 * 2
    x, y = data[0]
    assert isinstance(x["moment"], dt.datetime) and isinstance(x["clouds"], int) and isinstance(y, int)
    result = run_bikes(archive, progress=False)
    assert set(result["models"]) == {"kairos", "persistence", "river_tutorial"}
    for numbers in result["models"].values():
        assert math.isfinite(numbers["mae"]) and numbers["mae"] >= 0
    assert result["data"]["stations"] == 2
    assert result["goal"]["met"] == (result["models"]["kairos"]["mae"] <= 2.05)
    assert set(result["forecaster"]["learned_weights_by_station"]) == {"carmes", "pomme"}


def test_bikes_loader_refuses_a_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_bikes(tmp_path / "nope.zip")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no csv here")
    with pytest.raises(ValueError, match="no CSV"):
        load_bikes(empty)


def test_docstring_example_runs() -> None:
    import doctest

    import online.demand_forecaster

    result = doctest.testmod(online.demand_forecaster)
    assert result.attempted > 0 and result.failed == 0
