"""``kairos train run``: build training sets, train candidates, gate them, publish and promote.

One run, for each model:

1. point-in-time training set over the *training window* ``[end - eval - train, end - eval)``
   (:mod:`offline.training_sets`);
2. train a candidate (:mod:`offline.finetune`, :mod:`offline.sequence_model`); the bi-encoder
   always starts from the packaged MiniLM (fine-tuning a fine-tune again and again drifts);
3. evaluate the candidate and the model serving now (the promoted version, else the base MiniLM /
   a frequency baseline) on the *later* window ``[end - eval, end)``;
4. publish the candidate as a new registry version with ``report.json`` and plots beside it, and
   promote it only when it beats the current model (Recall@10 then NDCG@10; Acc@1 then Acc@3).

Serving picks a promotion up by itself: the text encoder through :mod:`online.embeddings` (the
search index re-embeds the catalog in the background, :class:`online.item_index.CatalogIndexer`),
the next-category GRU through :mod:`online.sequence_intent` (the next intent on location change).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kairos.registry import ModelRegistry
from offline.finetune import FinetuneConfig, RetrievalEval, evaluate_retrieval, finetune_bi_encoder
from offline.sequence_model import (
    FrequencyBaseline,
    SequenceConfig,
    SequenceModel,
    accuracy_at,
    examples_from_timeline,
)
from offline.training_sets import EventTimeline, build_training_set
from online.embeddings import TEXT_MODEL, LoadedModel, load_sentence_transformer

log = logging.getLogger(__name__)

SEQUENCE_MODEL = "next_category"
MODELS = (TEXT_MODEL, SEQUENCE_MODEL)
DAY_S = 86400.0


@dataclass
class TrainConfig:
    train_days: float = 3.0
    eval_days: float = 1.0
    #: End of the evaluation window (epoch s); default: the newest event.
    end: float | None = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    models: tuple[str, ...] = MODELS
    promote: bool = True
    k: int = 10


@dataclass
class Windows:
    train: tuple[float, float]
    eval: tuple[float, float]

    @classmethod
    def ending(cls, end: float, train_days: float, eval_days: float) -> Windows:
        split = end - eval_days * DAY_S
        return cls((split - train_days * DAY_S, split), (split, end))

    def to_json(self) -> dict[str, Any]:
        iso = lambda t: pd.Timestamp(t, unit="s", tz="UTC").isoformat()  # noqa: E731
        return {"train": [iso(t) for t in self.train], "eval": [iso(t) for t in self.eval],
                "train_epoch": list(self.train), "eval_epoch": list(self.eval)}


def better(candidate: dict[str, float], current: dict[str, float], keys: Sequence[str]) -> bool:
    """Strictly better on the first key that differs (NaN loses)."""
    for key in keys:
        a, b = candidate.get(key, math.nan), current.get(key, math.nan)
        a = -math.inf if a is None or math.isnan(a) else a
        b = -math.inf if b is None or math.isnan(b) else b
        if a > b + 1e-12:
            return True
        if a < b - 1e-12:
            return False
    return False


def catalog_at(timeline: EventTimeline, t: float) -> tuple[dict[str, str], dict[str, float]]:
    """Item texts as known strictly before ``t`` and when each item first appeared."""
    texts = {i: timeline.item_text(i, t) for i in timeline.item_ids()}
    return {i: x for i, x in texts.items() if x}, timeline.first_seen()


def retrieval_eval(encode: Callable[[Sequence[str]], np.ndarray], eval_set: Any, timeline: EventTimeline,
                   k: int = 10) -> RetrievalEval:
    pos = eval_set.positives()
    catalog, first_seen = catalog_at(timeline, eval_set.window[1])
    return evaluate_retrieval(encode, pos["context_text"].tolist(), pos["item_id"].tolist(), pos["t"].tolist(),
                              catalog, first_seen, k=k)


def run_training(settings: Any, config: TrainConfig, events: pd.DataFrame | None = None, store: Any = None,
                 registry: ModelRegistry | None = None, progress: bool = False) -> dict[str, Any]:
    """One training run over the offline log of ``settings``; returns the run's summary."""
    from offline.training_sets import feature_store, load_offline_events

    registry = registry or ModelRegistry.from_settings(settings)
    events = load_offline_events(settings) if events is None else events
    if events.empty:
        raise ValueError("the offline log holds no events: run the flow first")
    store = feature_store(settings) if store is None else store
    end = float(config.end if config.end is not None else events["t"].max() + 1e-3)
    windows = Windows.ending(end, config.train_days, config.eval_days)
    timeline = EventTimeline(events)
    summary: dict[str, Any] = {"windows": windows.to_json(), "models": {}}
    unknown = set(config.models) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; known: {list(MODELS)}")
    if TEXT_MODEL in config.models:
        train_set = build_training_set(events, store, *windows.train, timeline=timeline)
        eval_set = build_training_set(events, store, *windows.eval, timeline=timeline)
        summary["models"][TEXT_MODEL] = _train_text(registry, config, windows, train_set, eval_set, timeline, progress)
    if SEQUENCE_MODEL in config.models:
        summary["models"][SEQUENCE_MODEL] = _train_sequence(registry, config, windows, timeline, progress)
    return summary


def _progress_bar(total: int, label: str, enabled: bool) -> tuple[Callable[[int, float], None], Callable[[], None]]:
    if not enabled:
        return (lambda step, loss: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="step")

    def advance(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    return advance, bar.close


def _train_text(registry: ModelRegistry, config: TrainConfig, windows: Windows, train_set: Any, eval_set: Any,
                timeline: EventTimeline, progress: bool) -> dict[str, Any]:
    pairs = train_set.pairs()
    if len(pairs) < 2 or eval_set.positives().empty:
        return {"skipped": f"too little data: {len(pairs)} training pairs, "
                           f"{len(eval_set.positives())} evaluation engagements"}
    current_version = registry.current(TEXT_MODEL)
    current_path = registry.path(TEXT_MODEL, current_version) if current_version else None
    staging = registry.staging(TEXT_MODEL)
    try:
        advance, close = _progress_bar(config.finetune.steps, "fine-tune MiniLM", progress)
        try:
            stats = finetune_bi_encoder(pairs, staging, config.finetune, progress=advance)
        finally:
            close()
        candidate = LoadedModel(load_sentence_transformer(staging), staging, "candidate")
        current = LoadedModel(load_sentence_transformer(current_path), current_path or Path("base"), current_version)
        cand_eval = retrieval_eval(candidate.encode, eval_set, timeline, config.k)
        curr_eval = retrieval_eval(current.encode, eval_set, timeline, config.k)
        keys = [f"recall@{config.k}", f"ndcg@{config.k}"]
        won = better(cand_eval.metrics(), curr_eval.metrics(), keys)
        report = {
            "model": TEXT_MODEL, "windows": windows.to_json(), "training": {k: v for k, v in stats.items() if k != "losses"},
            "train_set": train_set.describe(), "eval_set": eval_set.describe(),
            "candidate": cand_eval.metrics(), "current": {**curr_eval.metrics(), "version": current_version or "base"},
            "gate": {"keys": keys, "better": won}, "config": asdict(config.finetune),
        }
        _write_report(staging, report, {"candidate": cand_eval.metrics(), "current": curr_eval.metrics()}, keys,
                      stats["losses"])
        return _publish(registry, TEXT_MODEL, staging, report, current_version, won and config.promote)
    except BaseException:
        registry.remove_staging(staging)
        raise


def _train_sequence(registry: ModelRegistry, config: TrainConfig, windows: Windows, timeline: EventTimeline,
                    progress: bool) -> dict[str, Any]:
    users = timeline.users()
    train = examples_from_timeline(timeline, users, *windows.train)
    test = examples_from_timeline(timeline, users, *windows.eval)
    if len(train) < 2 or not test:
        return {"skipped": f"too little data: {len(train)} training and {len(test)} evaluation examples"}
    categories = sorted({c for ex in train for c in (*ex.history, ex.target)})
    current_version = registry.current(SEQUENCE_MODEL)
    staging = registry.staging(SEQUENCE_MODEL)
    try:
        model = SequenceModel(categories, config.sequence)
        stats = model.fit(train)
        model.save(staging)
        if current_version:
            current: Any = SequenceModel.load(registry.path(SEQUENCE_MODEL, current_version))
        else:
            current = FrequencyBaseline(categories, train)
        cand = accuracy_at(model.scores(test), model.categories, test)
        curr = accuracy_at(current.scores(test), current.categories, test)
        strip = lambda m: {k: v for k, v in m.items() if k != "per_example"}  # noqa: E731
        keys = ["acc@1", "acc@3"]
        won = better(strip(cand), strip(curr), keys)
        report = {"model": SEQUENCE_MODEL, "windows": windows.to_json(), "training": stats,
                  "candidate": strip(cand), "current": {**strip(curr), "version": current_version or "frequency baseline"},
                  "gate": {"keys": keys, "better": won}, "config": asdict(config.sequence)}
        _write_report(staging, report, {"candidate": strip(cand), "current": strip(curr)}, keys, None)
        return _publish(registry, SEQUENCE_MODEL, staging, report, current_version, won and config.promote)
    except BaseException:
        registry.remove_staging(staging)
        raise


def _publish(registry: ModelRegistry, model: str, staging: Path, report: dict[str, Any], parent: str | None,
             promote: bool) -> dict[str, Any]:
    metadata = {"metrics": {"candidate": report["candidate"], "current": report["current"]},
                "data_window": report["windows"], "parent": parent or "base", "gate": report["gate"]}
    version = registry.publish(model, staging, metadata)
    promoted = False
    if promote:
        registry.promote(model, version, reason=f"beat {parent or 'base'} on {report['gate']['keys']}")
        promoted = True
    return {"version": version, "promoted": promoted, "candidate": report["candidate"], "current": report["current"],
            "report": str(registry.path(model, version) / "report.json")}


def _write_report(folder: Path, report: dict[str, Any], metrics: dict[str, dict[str, float]], keys: Sequence[str],
                  losses: Sequence[float] | None) -> None:
    """``report.json`` plus ``metrics.png`` (candidate vs current) and ``loss.png`` beside the artefact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
    fig, ax = plt.subplots(figsize=(5, 3))
    x = np.arange(len(keys))
    for n, (name, values) in enumerate(metrics.items()):
        ax.bar(x + (n - 0.5) * 0.38, [values.get(k, 0.0) or 0.0 for k in keys], width=0.38, label=name)
    ax.set_xticks(x, list(keys))
    ax.set_ylim(0, 1)
    ax.set_title(f"{report['model']}: {'promote' if report['gate']['better'] else 'keep current'}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "metrics.png", dpi=80)
    plt.close(fig)
    if losses:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(np.arange(1, len(losses) + 1), losses)
        ax.set_xlabel("step")
        ax.set_ylabel("MNRL loss")
        fig.tight_layout()
        fig.savefig(folder / "loss.png", dpi=80)
        plt.close(fig)


__all__ = ["MODELS", "SEQUENCE_MODEL", "TrainConfig", "Windows", "better", "catalog_at", "retrieval_eval",
           "run_training"]
