"""The services a request needs, created once per process and handed to routes with ``Depends``.

Stores are opened at startup (lifespan), not per request: opening Feast costs seconds, and the
SQLite stores keep one connection per thread. Tests build one :class:`Services` per module and pass
it to :func:`serving.app.create_app`, so each test does not pay the start-up again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from kairos.config import Settings
from kairos.stores.catalog import open_catalog
from kairos.stores.event_store import EventStore, open_event_store
from kairos.stores.last_known import LastKnownCatalog, LastKnownFeatures
from online.transparent_ranker import TransparentRanker

log = logging.getLogger(__name__)
_EXTRAS_LOCK = threading.Lock()
_NAME_LOCKS: dict[tuple[int, str], threading.Lock] = {}


@dataclass
class Services:
    """Everything routes use: settings, stores and the ranker."""

    settings: Settings
    event_store: EventStore
    #: A catalog (SQLite or Redis), usually behind :class:`LastKnownCatalog`.
    catalog: Any
    #: :class:`kairos.stores.online_features.OnlineFeatures` (typed loosely: importing Feast is slow).
    features: Any
    #: A :class:`TransparentRanker`, or a :class:`online.bandit.LiveRanker` serving the newest
    #: published bandit (``KAIROS_RANKER=bandit``).
    ranker: Any = field(default_factory=TransparentRanker)
    #: Components a resource creates on first use (models, indexes), by name; see :meth:`extra`.
    extras: dict[str, Any] = field(default_factory=dict)

    def extra(self, name: str, factory: Callable[[Services], Any]) -> Any:
        """The component ``name``, created once with ``factory(self)`` on first use.

        Lets a router own its components without this container knowing every one of them.
        """
        component = self.extras.get(name)
        if component is not None:
            return component
        # One lock per name: building a slow component (MiniLM loads for seconds) must not stall
        # requests that need another one.
        with _EXTRAS_LOCK:
            lock = _NAME_LOCKS.setdefault((id(self), name), threading.Lock())
        with lock:
            if name not in self.extras:
                self.extras[name] = factory(self)
            return self.extras[name]

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Open the configured stores and register the feature views (idempotent)."""
        # Imported here so that importing the app (e.g. for OpenAPI generation) does not load Feast.
        from kairos.stores.online_features import OnlineFeatures

        settings.home.mkdir(parents=True, exist_ok=True)
        # Reads go through last-known caches: a store outage degrades answers instead of failing them.
        return cls(
            settings=settings,
            event_store=open_event_store(settings),
            catalog=LastKnownCatalog(open_catalog(settings)),
            features=LastKnownFeatures(OnlineFeatures(settings)),
            ranker=start_ranker(settings),
        )

    def close(self) -> None:
        # Each store closes the connection of the calling thread; worker-thread connections go with
        # the process, which is what SQLite expects.
        # Components first: some drain into the stores as they close (the impression writer).
        for store in (*self.extras.values(), self.event_store, self.catalog, self.ranker):
            if not hasattr(store, "close"):
                continue
            try:
                store.close()
            except Exception:  # closing must never hide the reason the app is stopping
                log.warning("closing %s failed", type(store).__name__, exc_info=True)


def start_ranker(settings: Settings) -> Any:
    """The transparent ranker, or the live bandit: the newest version the flow published, picked
    up by a background watcher without restart or blocking (the transparent ranker serves until
    the bandit has learned from ``KAIROS_BANDIT_MIN_EXAMPLES`` impressions)."""
    if settings.ranker != "bandit":
        return TransparentRanker()
    from online.bandit import LiveRanker
    from online.model_state import ModelWatcher, open_model_state, prepare_bandit

    watcher = ModelWatcher(open_model_state(settings), "bandit", interval_s=settings.model_poll_interval_s,
                           prepare=prepare_bandit)
    return LiveRanker(watcher, min_examples=settings.bandit_min_examples)


# ``async`` on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, and the
# hand-off to a worker thread and back cost more CPU than these attribute reads.
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_settings(request: Request) -> Settings:
    return request.app.state.services.settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
