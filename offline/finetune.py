"""Fine-tuning the MiniLM bi-encoder on (user context → engaged item) pairs, and retrieval metrics.

Training is a plain torch loop over :class:`sentence_transformers` modules with
``MultipleNegativesRankingLoss``: each batch of pairs is its own set of negatives (the other items
of the batch), which suits engagement logs (positives only) and needs no sampling. It is sized for
CPUs: a few hundred steps of small batches with a short ``max_seq_length`` (contexts and item
texts are one or two sentences) take minutes on two cores.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-5
    max_seq_length: int = 64
    seed: int = 0
    #: Train only the top this many transformer layers (and the pooling); the embeddings and lower
    #: layers stay frozen. On CPUs this halves a step and keeps the general language knowledge.
    train_layers: int = 2
    #: MNRL temperature (the library's default scale).
    scale: float = 20.0


def finetune_bi_encoder(pairs: Sequence[tuple[str, str]], out_dir: Path | str, config: FinetuneConfig = FinetuneConfig(),
                        base_path: Path | str | None = None,
                        progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Fine-tune from ``base_path`` (default: the packaged MiniLM) and save to ``out_dir``.

    Returns training stats (steps, mean loss of the first and last tenth of the steps).
    """
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from online.embeddings import load_sentence_transformer

    pairs = [(a, b) for a, b in pairs if a and b]
    if len(pairs) < 2:
        raise ValueError(f"fine-tuning needs at least 2 (context, item) pairs, got {len(pairs)}")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    model = load_sentence_transformer(base_path)
    model.max_seq_length = config.max_seq_length
    loss_fn = MultipleNegativesRankingLoss(model, scale=config.scale)
    _freeze_lower(model, config.train_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    batch = max(2, min(config.batch_size, len(pairs)))
    model.train()
    losses: list[float] = []
    order: list[int] = []
    for step in range(config.steps):
        chosen = []
        seen_items: set[str] = set()
        while len(chosen) < batch:
            if not order:
                order = list(range(len(pairs)))
                rng.shuffle(order)
            i = order.pop()
            # The same item twice in a batch would be its own false negative.
            if pairs[i][1] in seen_items and len(seen_items) < len({p[1] for p in pairs}):
                continue
            seen_items.add(pairs[i][1])
            chosen.append(pairs[i])
        anchors = model.tokenize([a for a, _ in chosen])
        positives = model.tokenize([b for _, b in chosen])
        loss = loss_fn([anchors, positives], torch.zeros(len(chosen)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1])
    model.eval()
    out_dir = Path(out_dir)
    model.save(str(out_dir))
    tenth = max(1, len(losses) // 10)
    return {"steps": config.steps, "batch_size": batch, "pairs": len(pairs), "lr": config.lr,
            "max_seq_length": config.max_seq_length, "loss_first": float(np.mean(losses[:tenth])),
            "loss_last": float(np.mean(losses[-tenth:])), "losses": [round(x, 4) for x in losses]}


def _freeze_lower(model: Any, train_layers: int) -> None:
    """Freeze everything but the top ``train_layers`` encoder layers (all trainable when < 0)."""
    if train_layers < 0:
        return
    layers = [m for name, m in model.named_modules() if name.endswith("encoder.layer")]
    if not layers:
        return
    top = list(layers[0])[len(layers[0]) - train_layers:] if train_layers else []
    for p in model.parameters():
        p.requires_grad = False
    for layer in top:
        for p in layer.parameters():
            p.requires_grad = True


@dataclass
class RetrievalEval:
    """Per-query hits and gains, so metrics and their bootstrap intervals come from one pass."""

    hits: np.ndarray  # 1 when the engaged item is in the top k
    gains: np.ndarray  # NDCG@k of the query (one relevant item: 1/log2(rank+1))
    k: int

    @property
    def recall(self) -> float:
        return float(self.hits.mean()) if len(self.hits) else math.nan

    @property
    def ndcg(self) -> float:
        return float(self.gains.mean()) if len(self.gains) else math.nan

    def metrics(self) -> dict[str, float]:
        return {f"recall@{self.k}": self.recall, f"ndcg@{self.k}": self.ndcg, "queries": int(len(self.hits))}


def evaluate_retrieval(encode: Callable[[Sequence[str]], np.ndarray], contexts: Sequence[str], targets: Sequence[str],
                       times: Sequence[float], catalog: dict[str, str], first_seen: dict[str, float],
                       k: int = 10) -> RetrievalEval:
    """Rank every item known before each query's time by cosine(context, item text).

    ``catalog``: item id → text; ``targets``: the engaged item id of each query.
    """
    ids = [i for i in catalog if catalog[i]]
    position = {item_id: n for n, item_id in enumerate(ids)}
    keep = [n for n, target in enumerate(targets) if target in position]
    if not keep or not ids:
        return RetrievalEval(np.zeros(0), np.zeros(0), k)
    item_vectors = encode([catalog[i] for i in ids])
    query_vectors = encode([contexts[n] for n in keep])
    sims = query_vectors @ item_vectors.T
    born = np.array([first_seen.get(i, -math.inf) for i in ids])
    hits, gains = [], []
    for row, n in enumerate(keep):
        scores = np.where(born < times[n], sims[row], -np.inf)
        target = position[targets[n]]
        # An item not in the catalog yet at query time cannot be retrieved: a miss.
        better = int(np.sum(scores > scores[target])) if np.isfinite(scores[target]) else len(ids)
        rank = better + 1  # ties count in the target's favour
        hits.append(1.0 if rank <= k else 0.0)
        gains.append(1.0 / math.log2(rank + 1) if rank <= k else 0.0)
    return RetrievalEval(np.array(hits), np.array(gains), k)


def bootstrap_ci(values: np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (queries resampled with replacement)."""
    if len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


__all__ = ["FinetuneConfig", "RetrievalEval", "bootstrap_ci", "evaluate_retrieval", "finetune_bi_encoder"]
