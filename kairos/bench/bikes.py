"""``kairos bench bikes``: the demand forecaster on real bike counts, 30 minutes ahead.

Data: the Toulouse bike-sharing counts River's tutorials use (``toulouse_bikes.zip``: a CSV with
``moment, bikes, station, clouds, description, humidity, pressure, temperature, wind``), read
from the path given, never downloaded.

Protocol: River's delayed progressive validation,
``evaluate.progressive_val_score(dataset, model, metric, moment="moment", delay=30 minutes)``:
every reading is predicted when it is taken, and its true value is revealed to the model only 30
minutes later. Three models go through the same protocol in the same run:

* ``kairos``: :func:`online.demand_forecaster.bike_forecaster`, the product's
  :class:`~online.demand_forecaster.DemandForecaster` configured for bike counts;
* ``persistence``: the station's newest revealed value (so at least 30 minutes old);
* ``river_tutorial``: the pipeline of River's "Bike-sharing forecasting" tutorial: weather
  features plus the mean count by station and hour (``TargetAgg``), ``StandardScaler``,
  ``LinearRegression(optimizer=SGD(0.001))``.

Goal: MAE ≤ 2.05 (persistence is about 2.21).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import platform
import sys
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer

from kairos.bench import emit

GOAL_MAE = 2.05
DELAY = dt.timedelta(minutes=30)
#: Column converters of River's ``datasets.Bikes``.
CONVERTERS = {"clouds": int, "humidity": int, "pressure": float, "temperature": float, "wind": float}


def load_bikes(path: Path | str) -> list[tuple[dict[str, Any], int]]:
    """``(x, bikes)`` pairs in file order from the zip (or a plain CSV), typed like River's loader."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bike data at {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".csv")]
            if not names:
                raise ValueError(f"{path} holds no CSV file")
            text = archive.read(names[0]).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        x: dict[str, Any] = {
            "moment": dt.datetime.strptime(record["moment"], "%Y-%m-%d %H:%M:%S"),
            "station": record["station"],
            "description": record["description"],
        }
        for name, convert in CONVERTERS.items():
            x[name] = convert(record[name])
        rows.append((x, int(record["bikes"])))
    return rows


def persistence_baseline() -> Any:
    """The station's newest revealed value: under the delayed protocol, at least 30 minutes old.

    A River regressor (built here so that importing this module does not import River).
    """
    from river import base

    class Persistence(base.Regressor):
        def __init__(self) -> None:
            self.last: dict[str, tuple[dt.datetime, float]] = {}

        def predict_one(self, x: dict[str, Any]) -> float:
            known = self.last.get(x["station"])
            return known[1] if known else 0.0

        def learn_one(self, x: dict[str, Any], y: float) -> None:
            known = self.last.get(x["station"])
            if known is None or x["moment"] >= known[0]:
                self.last[x["station"]] = (x["moment"], float(y))

    return Persistence()


def river_tutorial_pipeline() -> Any:
    """The model of River's bike-sharing tutorial, with the installed River's API."""
    from river import compose, feature_extraction, linear_model, optim, preprocessing, stats

    def get_hour(x: dict[str, Any]) -> dict[str, Any]:
        x["hour"] = x["moment"].hour
        return x

    model = compose.Select("clouds", "humidity", "pressure", "temperature", "wind")
    model += get_hour | feature_extraction.TargetAgg(by=["station", "hour"], how=stats.Mean())
    model |= preprocessing.StandardScaler()
    model |= linear_model.LinearRegression(optimizer=optim.SGD(0.001))
    return model


def run_bikes(path: Path | str, progress: bool = True) -> dict[str, Any]:
    from river import evaluate, metrics

    from online.demand_forecaster import bike_forecaster

    data = load_bikes(path)
    models: dict[str, Any] = {
        "kairos": bike_forecaster(),
        "persistence": persistence_baseline(),
        "river_tutorial": river_tutorial_pipeline(),
    }
    results: dict[str, Any] = {}
    for name, model in models.items():
        began = time.perf_counter()
        mae, rmse = metrics.MAE(), metrics.RMSE()
        evaluate.progressive_val_score(
            dataset=data, model=model, metric=metrics.base.Metrics([mae, rmse]), moment="moment", delay=DELAY,
        )
        results[name] = {"mae": round(mae.get(), 4), "rmse": round(rmse.get(), 4),
                         "seconds": round(time.perf_counter() - began, 1)}
        if progress:
            print(f"bikes: {name:>15} MAE {mae.get():.4f}", file=sys.stderr, flush=True)
    kairos = results["kairos"]["mae"]
    return {
        "benchmark": "bikes",
        "data": {"path": str(path), "readings": len(data),
                 "stations": len({x["station"] for x, _ in data}),
                 "first": min(x["moment"] for x, _ in data).isoformat(),
                 "last": max(x["moment"] for x, _ in data).isoformat()},
        "protocol": "river evaluate.progressive_val_score(moment='moment', delay=30 min): each reading is "
                    "predicted when taken; its value is revealed to the model 30 minutes later",
        "models": results,
        "forecaster": _describe(models["kairos"]),
        "goal": {"rule": f"kairos MAE <= {GOAL_MAE}", "mae": kairos, "met": kairos <= GOAL_MAE,
                 "vs_persistence": round(kairos / results["persistence"]["mae"] - 1, 4),
                 "vs_river_tutorial": round(kairos / results["river_tutorial"]["mae"] - 1, 4)},
    }


def _describe(forecaster: Any) -> dict[str, Any]:
    params = {k: (str(v) if isinstance(v, dt.timedelta) else v) for k, v in forecaster._get_params().items()}
    return {"class": "online.demand_forecaster.DemandForecaster", "params": params,
            "learned_weights_by_station": {str(k): {n: round(w, 4) for n, w in v.items()}
                                           for k, v in forecaster.weights_by_key().items()}}


def register(app: typer.Typer) -> None:
    @app.command("bikes")
    def bikes(
        data: Annotated[Path, typer.Option("--data", help="toulouse_bikes.zip (or its CSV)", exists=True,
                                           dir_okay=False, readable=True)],
        as_json: bool = typer.Option(False, "--json", help="print the whole result as JSON"),
        quiet: bool = typer.Option(False, help="no progress lines on stderr"),
    ) -> None:
        """MAE of the demand forecaster on real bike counts, 30 min ahead, beside two baselines."""
        result = run_bikes(data, progress=not quiet)
        result["command"] = "kairos bench bikes " + " ".join(sys.argv[3:])
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}
        if as_json:
            emit(json.loads(json.dumps(result, default=str)))
            return
        for name, numbers in result["models"].items():
            typer.echo(f"{name:>15}  MAE {numbers['mae']:.4f}  RMSE {numbers['rmse']:.4f}")
        typer.echo(f"goal (MAE <= {GOAL_MAE}): {'met' if result['goal']['met'] else 'NOT met'}")
