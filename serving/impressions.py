"""Log what a response showed: one ``impression`` document per returned item.

Impressions are half of every label the bandit learns from: :mod:`flows.attribution` joins each one
with the clicks, saves, purchases and dismissals that follow (``POST /v1/feedback``) and labels it
1 or 0. So an impression carries what is needed to learn from it later without recomputing
anything: the request id (the key feedback names), user, item, position, the score, the score
parts and the ranker's feature vector exactly as the request had them (no training/serving skew).

Impressions go to the same collection as feedback (``feedback``), so the flow reads them in the
order they happened. Logging must never cost the user their suggestions: a failing event store
is logged and the response is served anyway (the labels of that one request are lost).

Routes do not write on the request path: :func:`enqueue_impressions` hands the response to the
process's :class:`ImpressionWriter`, a bounded queue drained by one background thread that builds
the documents and appends them in batches (one event store transaction for many requests). The
request captures what must be as of the request (the time shown, the ranker serving); a full queue
makes the request write its own impressions (slower, never lost); closing the writer (at shutdown,
through ``Services.close``) drains everything queued before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from online.bandit import context_features

log = logging.getLogger(__name__)

#: The collection impressions and feedback share (decoded by the ``feedback`` mapping).
FEEDBACK_COLLECTION = "feedback"


def _as_dict(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected a response model or a mapping, not {type(value).__name__}")


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return _when(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def impression_documents(
    response: Any,
    user: Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
    ts: datetime | None = None,
    ranker: str | None = None,
    source: str = "suggestions",
    lon: float | None = None,
) -> list[dict[str, Any]]:
    """The impression documents of a response (pure: nothing is written).

    ``response`` is a :class:`serving.schemas.SuggestionsResponse` or any model or mapping with
    ``request_id`` and ``items`` (``item_id``, ``score``, ``score_parts``, ``distance_km``,
    ``category``), and optionally ``user_id``, ``at`` and ``location`` (search responses too).
    ``user`` is the ``user_activity`` row the ranking used: its discount sensitivity is part of
    the features. ``ts`` is when the items were shown (default now); the features use the time the
    ranking was for (``at``) since that is what the ranker saw. ``lon`` (the request's longitude,
    for the local hour) is needed for the features when the response has no ``location``.
    """
    body = _as_dict(response)
    request_id = body.get("request_id")
    uid = user_id or body.get("user_id")
    if not request_id or not uid:
        raise ValueError("a response needs a request_id and a user_id to log impressions")
    shown = (ts or datetime.now(UTC)).astimezone(UTC)
    at = _when(body.get("at")) or shown
    location = body.get("location") or {}
    if lon is None and isinstance(location, Mapping):
        lon = location.get("lon")
    sensitivity = (user or {}).get("discount_sensitivity")
    documents = []
    for position, item in enumerate(body.get("items") or []):
        item = _as_dict(item)
        parts = {k: float(v) for k, v in (item.get("score_parts") or {}).items()}
        document: dict[str, Any] = {
            "_id": f"imp-{request_id}-{position}",
            "kind": "impression",
            "request_id": request_id,
            "user_id": uid,
            "item_id": item["item_id"],
            "ts": shown.isoformat(),
            "position": position,
            "category": item.get("category"),
            "score": item.get("score"),
            "score_parts": parts,
            "source": source,
        }
        if ranker:
            document["ranker"] = ranker
        if parts and item.get("distance_km") is not None and lon is not None:
            document["features"] = context_features(
                parts, float(item["distance_km"]), item.get("category"), at, float(lon),
                None if sensitivity is None else float(sensitivity),
            )
        documents.append(document)
    return documents


def log_impressions(
    services: Any,
    response: Any,
    user: Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
    ts: datetime | None = None,
    source: str = "suggestions",
    lon: float | None = None,
) -> list[str]:
    """Append one impression per returned item to the event store; returns their positions.

    Never raises for a store failure (logged; returns ``[]``): the user gets their suggestions
    whether or not the impressions could be recorded.
    """
    documents = impression_documents(response, user, user_id=user_id, ts=ts, ranker=serving_ranker(services),
                                     source=source, lon=lon)
    if not documents:
        return []
    try:
        positions: Sequence[str] = services.event_store.append(FEEDBACK_COLLECTION, documents)
    except Exception:
        log.warning("could not log %d impressions of request %s", len(documents),
                    documents[0]["request_id"], exc_info=True)
        return []
    return list(positions)


def serving_ranker(services: Any) -> str | None:
    """The class name of the ranker serving now (for a LiveRanker: the bandit or its fallback)."""
    serving = getattr(services, "ranker", None)
    active = getattr(serving, "active", None)
    if callable(active):
        serving = active()
    return type(serving).__name__ if serving is not None else None


@dataclass
class ImpressionJob:
    """One response's impressions, as of its request (documents are built by the writer)."""

    response: Any
    user: Mapping[str, Any] | None
    user_id: str | None
    ts: datetime
    ranker: str | None
    source: str
    lon: float | None
    queued: float = field(default_factory=time.monotonic)

    def documents(self) -> list[dict[str, Any]]:
        return impression_documents(self.response, self.user, user_id=self.user_id, ts=self.ts, ranker=self.ranker,
                                    source=self.source, lon=self.lon)


class ImpressionWriter:
    """A bounded queue of responses and one thread appending their impressions in batches.

    ``store`` is the event store (``append(collection, documents)``); ``reopen`` (optional) opens
    a fresh one if the store fails while draining at shutdown (the API closes its event store
    before its extras). A batch the store refuses is retried ``retries`` times with a growing
    pause, then logged and dropped, as a synchronous write would have been.

    After the first job of a batch the writer lingers ``linger_s`` for more: under load one append
    then carries tens of responses instead of one or two, and the requests' ``submit`` rarely has
    a waiting thread to wake (each wake-up is a GIL hand-off the request pays for).
    """

    def __init__(self, store: Any, maxsize: int = 10_000, batch_docs: int = 2000, retries: int = 3,
                 retry_pause_s: float = 0.2, reopen: Any = None, linger_s: float = 0.05) -> None:
        self.store = store
        self.linger_s = linger_s
        self.reopen = reopen
        self.batch_docs = batch_docs
        self.retries = retries
        self.retry_pause_s = retry_pause_s
        self._queue: queue.Queue[ImpressionJob | None] = queue.Queue(maxsize=max(1, maxsize))
        self._closed = False
        self._close_lock = threading.Lock()
        self.written = 0  # documents appended (tests and metrics)
        self.dropped = 0  # documents the store refused after retries
        self._thread = threading.Thread(target=self._run, name="kairos-impressions", daemon=True)
        self._thread.start()

    def submit(self, job: ImpressionJob) -> bool:
        """Queue a job; ``False`` when the queue is full or the writer closed (write it yourself)."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            return False
        return True

    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or given up on); ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _run(self) -> None:
        stop = False
        while not stop:
            job = self._queue.get()
            if job is not None and self.linger_s > 0 and not self._closed:
                time.sleep(self.linger_s)
            jobs: list[ImpressionJob | None] = [job]
            documents: list[dict[str, Any]] = []
            # Take whatever else is waiting: one append (one transaction) for many requests.
            while True:
                if job is None:
                    stop = True
                else:
                    try:
                        documents.extend(job.documents())
                    except Exception:  # one malformed response must not stop the writer
                        log.warning("could not build impressions", exc_info=True)
                if stop or len(documents) >= self.batch_docs:
                    break
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
            try:
                if documents:
                    self._append(documents)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    def _append(self, documents: list[dict[str, Any]]) -> None:
        attempt, reopened = 0, False
        while True:
            try:
                self.store.append(FEEDBACK_COLLECTION, documents)
                self.written += len(documents)
                return
            except Exception:
                if self._closed and self.reopen is not None and not reopened:
                    # Draining at shutdown after the API closed its store: open one of our own.
                    reopened = True
                    try:
                        self.store = self.reopen()
                        continue
                    except Exception:
                        log.warning("could not reopen the event store for impressions", exc_info=True)
                if attempt >= self.retries:
                    self.dropped += len(documents)
                    log.warning("could not log %d impressions (requests %s …)", len(documents),
                                documents[0]["request_id"], exc_info=True)
                    return
                attempt += 1
                time.sleep(self.retry_pause_s * attempt)

    def close(self) -> None:
        """Stop taking jobs, write everything queued, then stop the thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)  # after every job already queued; blocks while the queue is full
        self._thread.join()


def impression_writer(services: Any) -> ImpressionWriter:
    """The process's impression writer (closed, and so drained, by ``Services.close``)."""

    def build(s: Any) -> ImpressionWriter:
        from kairos.stores.event_store import open_event_store

        settings = s.settings
        return ImpressionWriter(s.event_store, maxsize=int(getattr(settings, "impression_queue_size", 10_000)),
                                reopen=lambda: open_event_store(settings))

    extras = getattr(services, "extras", None)
    found = extras.get("impression_writer") if isinstance(extras, dict) else None
    return found if found is not None else services.extra("impression_writer", build)


def enqueue_impressions(
    services: Any,
    response: Any,
    user: Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
    source: str = "suggestions",
    lon: float | None = None,
) -> bool:
    """Log a response's impressions off the request path; ``True`` when queued, ``False`` when the
    queue was full (or closed) and they were written here and now with :func:`log_impressions`."""
    ts = datetime.now(UTC)
    job = ImpressionJob(response, user, user_id, ts, serving_ranker(services), source, lon)
    try:
        if impression_writer(services).submit(job):
            return True
    except Exception:  # no writer (e.g. it could not start): write synchronously
        log.warning("impression writer unavailable; writing on the request", exc_info=True)
    log_impressions(services, response, user, user_id=user_id, ts=ts, source=source, lon=lon)
    return False


__all__ = ["FEEDBACK_COLLECTION", "ImpressionJob", "ImpressionWriter", "enqueue_impressions", "impression_documents",
           "impression_writer", "log_impressions", "serving_ranker"]
