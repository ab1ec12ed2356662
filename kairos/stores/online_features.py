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

from feast import FeatureStore, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
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
        online: Any = RedisOnlineStoreConfig(connection_string=settings.redis_url, skip_dedup=True,
                                             redis_type=settings.redis_type)
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
        self._provider_cache: Any = None
        self._views: dict[str, Any] = {}
        if apply:
            self.apply()

    def apply(self) -> None:
        """Register the entities and views (idempotent; the flow and API both call it on start)."""
        from feature_repo.definitions import feast_objects

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.store.apply(feast_objects(self.settings.offline_dir))

    def write(self, view: str, rows: list[dict[str, Any]]) -> None:
        """Upsert rows (entity keys + fields + ``as_of``) of one view into the online store.

        Goes straight to the online store's ``online_write_batch`` with protos built here: Feast's
        ``write_to_online_store`` converts through a DataFrame and Arrow per call, which cost more
        than the write itself on the flow's hot path.
        """
        if not rows:
            return
        spec = VIEWS[view]
        data = [
            (
                EntityKeyProto(join_keys=list(spec.entities),
                               entity_values=[ValueProto(string_val=str(row[e])) for e in spec.entities]),
                {f.name: _to_proto(row.get(f.name), f.dtype) for f in spec.fields},
                datetime.fromtimestamp(float(row["as_of"]), timezone.utc),
                None,
            )
            for row in rows
        ]
        self._provider().online_write_batch(self.store.config, self._feature_view(view), data, progress=None)

    def _provider(self) -> Any:
        if self._provider_cache is None:
            self._provider_cache = self.store._get_provider()
        return self._provider_cache

    def _feature_view(self, view: str) -> Any:
        if view not in self._views:
            self._views[view] = self.store.get_feature_view(view)
        return self._views[view]

    def read(self, view: str, keys: list[dict[str, str]],
             fields: tuple[str, ...] | None = None) -> list[dict[str, Any] | None]:
        """Rows for the given entity keys, ``None`` where the store holds nothing for a key.

        ``fields`` limits the read to those fields (plus ``as_of``): a hot path that needs two
        counts of fifty items should not fetch and decode twenty fields of each.
        """
        if not keys:
            return []
        spec = VIEWS[view]
        names = spec.field_names if fields is None else [*dict.fromkeys([*fields, "as_of"])]
        response = self.store.get_online_features(
            features=[f"{view}:{name}" for name in names], entity_rows=keys
        ).to_dict()
        out: list[dict[str, Any] | None] = []
        for i in range(len(keys)):
            row = {name: _clean(response[name][i]) for name in names}
            out.append(None if row.get("as_of") is None else {**keys[i], **row})
        return out

    def read_one(self, view: str, key: dict[str, str]) -> dict[str, Any] | None:
        return self.read(view, [key])[0]


def _to_proto(value: Any, dtype: str) -> ValueProto:
    """A Feast value; None and NaN are stored as "no value" (read back as None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ValueProto()
    if dtype == "int":
        return ValueProto(int64_val=int(value))
    if dtype == "float":
        return ValueProto(double_val=float(value))
    if dtype == "bool":
        return ValueProto(bool_val=bool(value))
    return ValueProto(string_val=str(value))


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
