"""``kairos train …``: periodic offline fine-tuning, the model registry, promotion and rollback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kairos.config import Settings

train_app = typer.Typer(help="Offline fine-tuning and the model registry (promote, roll back).",
                        no_args_is_help=True)
console = Console()

HomeOption = Annotated[Path | None, typer.Option("--home", help="Overrides KAIROS_HOME.")]
MODEL_NAMES = ("text_encoder", "next_category")


def _settings(home: Path | None) -> Settings:
    try:
        return Settings.from_env(home=home)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _model(name: str) -> str:
    if name not in MODEL_NAMES:
        raise typer.BadParameter(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return name


def _parse_every(text: str) -> float:
    """``24h``, ``30m``, ``90s``, ``1d`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError, KeyError):
        raise typer.BadParameter(f"--every must look like 24h, 30m, 90s or 1d, not {text!r}") from None
    if value <= 0:
        raise typer.BadParameter("--every must be positive")
    return value


def _run(settings: Settings, train_days: float, eval_days: float, steps: int, batch_size: int,
         max_seq_length: int, models: list[str], promote: bool) -> dict:
    from offline.finetune import FinetuneConfig
    from offline.training import TrainConfig, run_training

    config = TrainConfig(train_days=train_days, eval_days=eval_days, models=tuple(models), promote=promote,
                         finetune=FinetuneConfig(steps=steps, batch_size=batch_size, max_seq_length=max_seq_length))
    return run_training(settings, config, progress=True)


TrainDays = Annotated[float, typer.Option(min=0.01, help="Days of training data before the evaluation window.")]
EvalDays = Annotated[float, typer.Option(min=0.01, help="Days of the later window candidates are judged on.")]
Steps = Annotated[int, typer.Option(min=1, help="Fine-tuning steps of the bi-encoder.")]
Batch = Annotated[int, typer.Option(min=2, help="Pairs per step (in-batch negatives).")]
SeqLen = Annotated[int, typer.Option(min=8, help="Tokens per text.")]
Models = Annotated[list[str] | None, typer.Option("--model", help="Models to train (repeat); default both.")]
Promote = Annotated[bool, typer.Option(help="Promote a candidate that beats the current version.")]


@train_app.command("run")
def run(train_days: TrainDays = 3.0, eval_days: EvalDays = 1.0, steps: Steps = 200, batch_size: Batch = 16,
        max_seq_length: SeqLen = 64, model: Models = None, promote: Promote = True, home: HomeOption = None) -> None:
    """Build point-in-time training sets, train candidates, gate them on a later window, publish."""
    models = [_model(m) for m in (model or MODEL_NAMES)]
    try:
        summary = _run(_settings(home), train_days, eval_days, steps, batch_size, max_seq_length, models, promote)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print_json(json.dumps(summary, default=str))


@train_app.command("list")
def list_versions(model: Annotated[str | None, typer.Argument(help="One model; default all.")] = None,
                  home: HomeOption = None) -> None:
    """Versions with their metrics, data window and which one is promoted."""
    from kairos.registry import ModelRegistry

    registry = ModelRegistry.from_settings(_settings(home))
    table = Table("model", "version", "promoted", "created", "parent", "candidate", "current", "eval window")
    for name in [_model(model)] if model else MODEL_NAMES:
        current = registry.current(name)
        for meta in registry.versions(name):
            metrics = meta.get("metrics", {})
            fmt = lambda m: ", ".join(f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, float))  # noqa: E731
            table.add_row(name, meta["version"], "*" if meta["version"] == current else "",
                          time.strftime("%Y-%m-%d %H:%M", time.gmtime(meta.get("created_at", 0))),
                          str(meta.get("parent", "")), fmt(metrics.get("candidate", {})),
                          fmt(metrics.get("current", {})), " → ".join(meta.get("data_window", {}).get("eval", [])))
        if current is None:
            table.add_row(name, "base", "*", "", "", "", "", "")
    console.print(table)


@train_app.command("promote")
def promote(model: Annotated[str, typer.Argument(help="text_encoder or next_category")],
            version: Annotated[str, typer.Argument(help="e.g. v0003")], home: HomeOption = None) -> None:
    """Point serving at a version (serving picks it up within KAIROS_TEXT_MODEL_CHECK_S)."""
    from kairos.registry import ModelRegistry, RegistryError

    registry = ModelRegistry.from_settings(_settings(home))
    try:
        pointer = registry.promote(_model(model), version, reason="manual")
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"{model}: now {pointer.version}")


@train_app.command("rollback")
def rollback(model: Annotated[str, typer.Argument(help="text_encoder or next_category")],
             home: HomeOption = None) -> None:
    """Back to the version promoted before the current one (or the base model)."""
    from kairos.registry import ModelRegistry, RegistryError

    registry = ModelRegistry.from_settings(_settings(home))
    try:
        pointer = registry.rollback(_model(model))
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"{model}: now {pointer.version or 'base'}")


@train_app.command("schedule")
def schedule(every: Annotated[str, typer.Option(help="Interval: 24h, 6h, 30m …")] = "24h",
             train_days: TrainDays = 3.0, eval_days: EvalDays = 1.0, steps: Steps = 200, batch_size: Batch = 16,
             max_seq_length: SeqLen = 64, runs: Annotated[int, typer.Option(min=0, help="Stop after N runs (0: forever).")] = 0,
             home: HomeOption = None) -> None:
    """Run training now and then every interval (local stand-in for infra/k8s/train-cronjob.yaml)."""
    interval = _parse_every(every)
    settings = _settings(home)
    done = 0
    while True:
        started = time.monotonic()
        try:
            summary = _run(settings, train_days, eval_days, steps, batch_size, max_seq_length, list(MODEL_NAMES), True)
            console.print_json(json.dumps(summary, default=str))
        except ValueError as exc:  # no data yet: try again next time
            console.print(f"[yellow]training skipped: {exc}[/yellow]")
        done += 1
        if runs and done >= runs:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
