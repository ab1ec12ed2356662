"""The user's taste against items: one place for suggestions and search to read it.

A user's taste is their embedding (:mod:`online.user_embeddings`: a decaying average of the MiniLM
vectors of what they engaged with, kept beside the features); an item's vector comes from the
process's item index (:mod:`online.item_index`, built from the catalog by
:func:`serving.routers.search.item_indexer`). Their cosine is search's ``taste_match`` and the
ranker's ``taste`` part in suggestions.

Search builds and refreshes the index on its requests (it needs it to retrieve anyway).
Suggestions must not wait for MiniLM to load or for the catalog to be embedded, so they use the
index only once it holds items, and meanwhile have it built and kept fresh by a background thread
(:class:`TasteIndexRefresher`); until then the taste part is unknown (0 for every item).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from online.user_embeddings import cosine, open_user_embedding_store

log = logging.getLogger(__name__)


def user_embedding_store(services: Any) -> Any:
    """The process's user embedding store (Redis or SQLite, as configured)."""
    from serving.suggestions import cached_extra

    return cached_extra(services, "user_embeddings", lambda s: open_user_embedding_store(s.settings))


def user_taste(services: Any, user_id: str) -> tuple[np.ndarray | None, bool]:
    """``(unit taste vector or None, degraded)``: None when the user has no embedding yet."""
    from serving.suggestions import with_fallback

    states, failed = with_fallback(lambda: user_embedding_store(services).read([user_id]), [None],
                                   "user embeddings")
    state = states[0] if states else None
    return (state.unit() if state is not None else None), failed


def taste_matches(indexer: Any, taste: np.ndarray | None, item_ids: Sequence[str]) -> dict[str, float]:
    """``item_id -> cosine(taste, item vector)`` for the indexed items (``{}`` without a taste)."""
    if taste is None or indexer is None or not item_ids:
        return {}
    vectors = indexer.index.vectors(list(item_ids))
    if not vectors:
        return {}
    ids = list(vectors)
    matrix = np.stack([np.asarray(vectors[i], dtype=np.float32).reshape(-1) for i in ids])
    if matrix.shape[1] != np.asarray(taste).reshape(-1).shape[0]:  # a model swap mid-flight
        return {i: v for i in ids if (v := cosine(taste, vectors[i])) is not None}
    # cosine() for all items at once: one matrix-vector product instead of a norm pair per item.
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(taste))
    dots = matrix @ np.asarray(taste, dtype=np.float32).reshape(-1)
    return {i: float(d / n) for i, d, n in zip(ids, dots, norms, strict=True) if n > 1e-12}


class TasteIndexRefresher:
    """Builds the item index off the request path and keeps it following the catalog."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.interval_s = float(getattr(services.settings, "search_refresh_s", 1.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kairos-taste-index", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from online.embeddings import shared_encoder
        from serving.routers.search import item_indexer

        try:
            # Load MiniLM before asking for the index: the index is created under the services'
            # extras lock, which requests take too, and loading the model takes seconds.
            shared_encoder(self.services.settings)
            indexer = item_indexer(self.services)
        except Exception:  # no encoder: suggestions simply go without the taste part
            log.warning("item index unavailable; suggestions rank without taste", exc_info=True)
            return
        while not self._stop.is_set():
            try:
                indexer.maybe_refresh()
            except Exception:  # a catalog outage: keep the index as it is, try again later
                log.warning("item index refresh failed", exc_info=True)
            self._stop.wait(self.interval_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def ready_item_indexer(services: Any) -> Any | None:
    """The item index when it holds items; otherwise ``None``, and it is being built meanwhile."""
    from serving.suggestions import cached_extra

    cached_extra(services, "taste_index_refresher", TasteIndexRefresher)
    indexer = services.extras.get("item_index")
    if indexer is None or len(indexer.index) == 0:
        return None
    return indexer


def suggestion_taste(services: Any, user_id: str, item_ids: Sequence[str]) -> tuple[dict[str, float], bool]:
    """The ``taste`` part's inputs for a suggestions request, and whether the embedding store failed."""
    taste, degraded = user_taste(services, user_id)
    if taste is None:
        return {}, degraded
    return taste_matches(ready_item_indexer(services), taste, item_ids), degraded


__all__ = ["TasteIndexRefresher", "ready_item_indexer", "suggestion_taste", "taste_matches", "user_embedding_store",
           "user_taste"]
