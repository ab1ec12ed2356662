"""Per-user online learners fed by the flow: next intent and user taste embeddings.

One sink partition holds the next-intent model (one global model learns from everyone) and the
users' decaying embeddings. Each batch is folded in event-time order; embeddings are written beside
the features (SQLite or Redis); the intent learner is published as versioned model state, which
the API watches (``POST /v1/users/{id}/location`` pre-fetches for the predicted intent).
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import Counter
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows import timing
from flows.sinks import with_backoff
from kairos import geo
from kairos.schema import Event
from online.next_intent import INTENT_MODEL

log = logging.getLogger(__name__)



def is_learner_event(event: Event) -> bool:
    return event.actor_type == "user" and event.kind in (
        "location", "search", "voice", "view", "click", "save", "purchase", "booking")


class _HomeTracker:
    """Where each user usually is (most frequent coarse cell of their pings), to tell the intent
    model whether an event happens while travelling — the same definition as ``user_activity``."""

    def __init__(self, resolution: int, travel_km: float) -> None:
        self.resolution, self.travel_km = resolution, travel_km
        self.cells: dict[str, Counter[str]] = {}

    def travelling(self, event: Event) -> bool:
        counts = self.cells.setdefault(event.actor_id, Counter())
        travelling = False
        if counts and event.lat is not None and event.lon is not None:
            home = min(counts, key=lambda c: (-counts[c], c))
            travelling = geo.haversine_km(event.lat, event.lon, *geo.cell_center(home)) > self.travel_km
        if event.kind == "location" and event.cell is not None:
            counts[geo.parent_cell(event.cell, self.resolution)] += 1
        return travelling


class UserLearnersPartition(StatefulSinkPartition[Event, bytes]):
    def __init__(self, settings: Any, state: dict[str, Any] | None) -> None:
        from kairos.stores.catalog import open_catalog
        from online.model_state import ModelPublisher, open_model_state
        from online.next_intent import IntentLearner
        from online.user_embeddings import UserEmbeddings, open_user_embedding_store

        self.settings = settings
        state = state or {}
        self.intent = state.get("intent") or IntentLearner()
        self.embeddings = state.get("embeddings") or UserEmbeddings(half_life_s=settings.user_embedding_half_life_s)
        self.homes = state.get("homes") or _HomeTracker(settings.home_resolution, settings.travel_km)
        self.store = open_user_embedding_store(settings)
        self.catalog = open_catalog(settings)
        self.publisher = ModelPublisher(open_model_state(settings), INTENT_MODEL,
                                        interval_s=settings.model_publish_interval_s)
        self.lock = threading.Lock()
        self._encoder: Any = None

    def _encode(self, texts: list[str]) -> Any:
        if self._encoder is None:
            from online.embeddings import shared_encoder

            # Loaded on first use (a flow without behaviour never pays); it follows promotions in
            # this home's model registry.
            self._encoder = shared_encoder(self.settings)
        return self._encoder.encode(texts)

    def _item_text(self, item_id: str) -> str | None:
        item = with_backoff(lambda: self.catalog.get(item_id), "catalog read")
        return item.text if item is not None else None

    def _publish(self) -> None:
        try:
            self.publisher.flush(self.intent)
        except Exception:  # a store outage must not stop learning: published again on the next batch
            log.warning("publishing %s failed; will retry", INTENT_MODEL, exc_info=True)

    def write_batch(self, items: list[Event]) -> None:
        from online.user_embeddings import learn_events

        events = sorted(items, key=lambda e: (e.ts, e.event_id))
        with self.lock:
            for event in events:
                self.intent.learn_event(event, travelling=self.homes.travelling(event))
                self.publisher.changed()
            learn_events(self.embeddings, events, self._encode, item_text=self._item_text)
            dirty = self.embeddings.pop_dirty()
            if self.publisher.clock() - self.publisher.last_publish >= self.publisher.interval_s:
                self._publish()
        if dirty:
            with_backoff(lambda: self.store.write_batch(dirty), "user embeddings write")

    def snapshot(self) -> bytes:
        with self.lock:
            self._publish()
            return pickle.dumps({"intent": self.intent, "embeddings": self.embeddings, "homes": self.homes},
                                protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        with self.lock:
            self._publish()
        timing.mark("end")


class UserLearnersSink(FixedPartitionedSink[Event, bytes]):
    """One partition: the intent model learns from every user (route with a constant key)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["user_learners"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: bytes | None) -> UserLearnersPartition:
        return UserLearnersPartition(self.settings, pickle.loads(resume_state) if resume_state else None)


class MarketModelPartition(StatefulSinkPartition[Event, bytes]):
    """Folds every event into the business side's market model (demand forecasters, elasticities)
    and checkpoints it for the API (``$KAIROS_HOME/models/market.pkl``, reloaded on change)."""

    def __init__(self, settings: Any, model: Any) -> None:
        from online.market_model import market_model_path, new_market_model

        self.model = model or new_market_model(settings)
        self.path = market_model_path(settings)
        self.interval_s = max(1.0, settings.model_publish_interval_s * 5)
        self.saved_at = 0.0
        self.changed = False

    def write_batch(self, items: list[Event]) -> None:
        for event in sorted(items, key=lambda e: (e.ts, e.event_id)):
            self.model.learn_event(event)
        self.changed = True
        if time.monotonic() - self.saved_at >= self.interval_s:
            self._save()

    def _save(self) -> None:
        if self.changed:
            self.model.save(self.path)
            self.saved_at, self.changed = time.monotonic(), False

    def snapshot(self) -> bytes:
        self._save()
        return pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        self._save()
        timing.mark("end")


class MarketModelSink(FixedPartitionedSink[Event, bytes]):
    """One partition: one market model learns from every event (route with a constant key)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["market_model"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: bytes | None) -> MarketModelPartition:
        return MarketModelPartition(self.settings, pickle.loads(resume_state) if resume_state else None)
