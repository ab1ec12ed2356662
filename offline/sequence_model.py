"""A small torch GRU of a user's next category from their category history.

The online next-intent learner (:mod:`online.next_intent`) sees one event at a time; this batch
model reads the whole recent sequence (the last ``max_len`` engaged categories plus the hour of
the next event) and is retrained periodically. The artefact is a ``state_dict`` plus the
vocabulary, small enough to load anywhere.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

PAD = "<pad>"


@dataclass(frozen=True)
class SequenceConfig:
    max_len: int = 20
    embed_dim: int = 16
    hidden: int = 32
    epochs: int = 8
    batch_size: int = 64
    lr: float = 5e-3
    seed: int = 0


class NextCategoryGRU(nn.Module):
    def __init__(self, n_categories: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_categories + 1, embed_dim, padding_idx=0)
        self.hour = nn.Embedding(24, 4)
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden + 4, n_categories)

    def forward(self, seqs: torch.Tensor, lengths: torch.Tensor, hours: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(seqs), lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.gru(packed)
        return self.out(torch.cat([h[-1], self.hour(hours)], dim=1))


@dataclass
class Example:
    history: list[str]  # categories before, oldest first
    hour: int
    target: str


class SequenceModel:
    """Vocabulary + GRU; ``predict`` returns categories ranked by probability."""

    def __init__(self, categories: Sequence[str], config: SequenceConfig = SequenceConfig()) -> None:
        self.categories = list(categories)
        self.index = {c: i for i, c in enumerate(self.categories)}
        self.config = config
        torch.manual_seed(config.seed)
        self.net = NextCategoryGRU(len(self.categories), config.embed_dim, config.hidden)

    def _tensors(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, m = len(examples), self.config.max_len
        seqs = torch.zeros((n, m), dtype=torch.long)
        lengths = torch.zeros(n, dtype=torch.long)
        for row, ex in enumerate(examples):
            ids = [self.index[c] + 1 for c in ex.history[-m:] if c in self.index]
            if ids:
                seqs[row, :len(ids)] = torch.tensor(ids)
            lengths[row] = len(ids)
        hours = torch.tensor([ex.hour % 24 for ex in examples], dtype=torch.long)
        return seqs, lengths, hours

    def fit(self, examples: Sequence[Example]) -> dict[str, Any]:
        usable = [ex for ex in examples if ex.target in self.index]
        if not usable:
            raise ValueError("no training examples with a known target category")
        rng = np.random.default_rng(self.config.seed)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        loss_fn = nn.CrossEntropyLoss()
        targets = torch.tensor([self.index[ex.target] for ex in usable])
        seqs, lengths, hours = self._tensors(usable)
        losses = []
        self.net.train()
        for _ in range(self.config.epochs):
            order = rng.permutation(len(usable))
            for start in range(0, len(order), self.config.batch_size):
                idx = torch.as_tensor(order[start:start + self.config.batch_size])
                loss = loss_fn(self.net(seqs[idx], lengths[idx], hours[idx]), targets[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        self.net.eval()
        return {"examples": len(usable), "epochs": self.config.epochs, "loss_last": float(np.mean(losses[-5:]))}

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        if not examples:
            return np.zeros((0, len(self.categories)))
        with torch.no_grad():
            return torch.softmax(self.net(*self._tensors(examples)), dim=1).numpy()

    def save(self, folder: Path | str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / "model.pt")
        (folder / "vocab.json").write_text(json.dumps({"categories": self.categories, "config": asdict(self.config)}))

    @classmethod
    def load(cls, folder: Path | str) -> SequenceModel:
        folder = Path(folder)
        meta = json.loads((folder / "vocab.json").read_text())
        model = cls(meta["categories"], SequenceConfig(**meta["config"]))
        model.net.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        model.net.eval()
        return model


class FrequencyBaseline:
    """The user's most frequent past categories (then the global ones): the model to beat when no
    GRU has been promoted yet."""

    def __init__(self, categories: Sequence[str], examples: Sequence[Example]) -> None:
        self.categories = list(categories)
        counts = Counter(ex.target for ex in examples)
        self.prior = np.array([counts.get(c, 0) + 1e-3 for c in self.categories], dtype=float)
        self.prior /= self.prior.sum()

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        out = np.tile(self.prior, (len(examples), 1))
        index = {c: i for i, c in enumerate(self.categories)}
        for row, ex in enumerate(examples):
            for c, n in Counter(ex.history[-20:]).items():
                if c in index:
                    out[row, index[c]] += n
        return out


def accuracy_at(scores: np.ndarray, categories: Sequence[str], examples: Sequence[Example],
                ks: Sequence[int] = (1, 3)) -> dict[str, Any]:
    """Acc@k per example (arrays, for bootstraps) and their means."""
    index = {c: i for i, c in enumerate(categories)}
    per: dict[str, np.ndarray] = {}
    for k in ks:
        hits = []
        for row, ex in enumerate(examples):
            if ex.target not in index:
                hits.append(0.0)
                continue
            target = scores[row, index[ex.target]]
            rank = int(np.sum(scores[row] > target)) + 1
            hits.append(1.0 if rank <= k else 0.0)
        per[f"acc@{k}"] = np.array(hits)
    return {"per_example": per, **{name: (float(v.mean()) if len(v) else math.nan) for name, v in per.items()},
            "examples": len(examples)}


def examples_from_timeline(timeline: Any, users: Sequence[str], start: float, end: float,
                           min_history: int = 1) -> list[Example]:
    """Every engagement in ``[start, end)`` with the categories before it (any time before)."""
    out = []
    for user in users:
        ts, cats = timeline.history_at(user)
        for n, (t, c) in enumerate(zip(ts, cats, strict=True)):
            if start <= t < end and n >= min_history:
                hour = int((t // 3600) % 24)
                out.append(Example(list(cats[:n]), hour, c))
    return out


__all__ = ["Example", "FrequencyBaseline", "SequenceConfig", "SequenceModel", "accuracy_at",
           "examples_from_timeline"]
