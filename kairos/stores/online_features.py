"""Online feature store: Feast, with its SQLite (local) or Redis (redis) online store.

A narrow interface in the style of Feast's own ``online_write_batch``/``online_read``: the flow
writes feature rows, the API reads them. Which online store backs it is configuration only.
"""

from __future__ import annotations

import logging
import math
import warnings
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from feast import FeatureStore, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import RegistryConfig

from kairos.config import Settings
from kairos.features import VIEWS, ViewSpec

log = logging.getLogger(__name__)


def repo_config(settings: Settings) -> RepoConfig:
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    if settings.profile == "redis":
        # skip_dedup: last write wins. Feast's default drops a row whose event time equals the stored
        # one, but a late event folds into a row with the *same* as_of and must replace it. Our sink
        # already keeps the newest row per key of a batch, and rows of a key arrive in order.
        online: Any = RedisOnlineStoreConfig(connection_string=settings.redis_url, skip_dedup=True)
    else:
        online = SqliteOnlineStoreConfig(path=str(settings.feast_dir / "online_store.db"))
    return RepoConfig(
        project=settings.feast_project,
        provider="local",
        # cache_ttl_seconds=0: the registry never changes under a running process once applied.
        registry=RegistryConfig(path=str(settings.feast_dir / "registry.db"), cache_ttl_seconds=0),
        online_store=online,
        offline_store={"type": "file"},
        repo_path=settings.feast_dir,
        entity_key_serialization_version=3,
    )


class OnlineFeatures:
    """Write and read feature rows of the views in :data:`kairos.features.VIEWS`."""

    def __init__(self, settings: Settings, apply: bool = True) -> None:
        self.settings = settings
        self.store = FeatureStore(config=repo_config(settings))
        if apply:
            self.apply()

    def apply(self) -> None:
        """Register the entities and views (idempotent; the flow and API both call it on start)."""
        from feature_repo.definitions import feast_objects

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.store.apply(feast_objects(self.settings.offline_dir))

    def write(self, view: str, rows: list[dict[str, Any]]) -> None:
        """Upsert rows (entity keys + fields + ``as_of``) of one view into the online store."""
        if not rows:
            return
        spec = VIEWS[view]
        frame = pd.DataFrame(rows, columns=[*spec.entities, *spec.field_names])
        frame["event_timestamp"] = pd.to_datetime(frame["as_of"], unit="s", utc=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.store.write_to_online_store(view, frame)

    def read(self, view: str, keys: list[dict[str, str]]) -> list[dict[str, Any] | None]:
        """Rows for the given entity keys, ``None`` where the store holds nothing for a key."""
        if not keys:
            return []
        spec = VIEWS[view]
        response = self.store.get_online_features(
            features=[f"{view}:{name}" for name in spec.field_names], entity_rows=keys
        ).to_dict()
        out: list[dict[str, Any] | None] = []
        for i in range(len(keys)):
            row = {name: _clean(response[name][i]) for name in spec.field_names}
            out.append(None if row.get("as_of") is None else {**keys[i], **row})
        return out

    def read_one(self, view: str, key: dict[str, str]) -> dict[str, Any] | None:
        return self.read(view, [key])[0]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def view_spec(view: str) -> ViewSpec:
    if view not in VIEWS:
        raise KeyError(f"unknown feature view {view!r}; known: {sorted(VIEWS)}")
    return VIEWS[view]


def as_of_datetime(row: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(float(row["as_of"]), timezone.utc)
