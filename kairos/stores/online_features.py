"""Online feature store: Feast, with its SQLite (local) or Redis (redis) online store.

A narrow interface in the style of Feast's own ``online_write_batch``/``online_read``: the flow
writes feature rows, the API reads them. Which online store backs it is configuration only.
"""

from __future__ import annotations

import logging
import math
import struct
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
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


def feast_redis_connection(settings: Settings) -> str:
    """``KAIROS_REDIS_URL`` for Feast, with socket timeouts (``KAIROS_REDIS_TIMEOUT_S``) unless it
    sets its own: redis-py's default is to wait forever on a Redis that stopped answering."""
    url = settings.redis_url
    keys = {part.split("=", 1)[0].strip() for part in url.split(",") if "=" in part}
    for key in ("socket_timeout", "socket_connect_timeout"):
        if key not in keys:
            url += f",{key}={settings.redis_timeout_s:g}"
    return url


def repo_config(settings: Settings) -> RepoConfig:
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    if settings.profile == "redis":
        # skip_dedup: last write wins. Feast's default drops a row whose event time equals the stored
        # one, but a late event folds into a row with the *same* as_of and must replace it. Our sink
        # already keeps the newest row per key of a batch, and rows of a key arrive in order.
        online: Any = RedisOnlineStoreConfig(connection_string=feast_redis_connection(settings), skip_dedup=True,
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
        self._writers: dict[str, Callable[[list[dict[str, Any]]], None]] = {}
        #: Serialised entity keys by (view, key values): the same entities are written again and again.
        self._entity_keys: dict[tuple[str, tuple[str, ...]], bytes] = {}
        #: Serving's direct Redis readers by view (False: the online store is not Redis).
        self._redis_readers: dict[str, Any] = {}
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

        On the flow's hot path. For Feast's SQLite and Redis online stores the stored bytes are
        built here and written in one statement batch / one pipeline, **exactly** as Feast's
        ``online_write_batch`` lays them out (same keys, hash fields, serialised values and
        timestamps; ``tests/test_online_write.py`` compares the two byte for byte), so Feast reads
        them as its own. Feast's path built a protobuf per value and sent one SQLite statement per
        (entity, feature); its ``write_to_online_store`` went through a DataFrame and Arrow.
        Any other online store configuration goes through Feast's ``online_write_batch``.
        """
        if not rows:
            return
        writer = self._writers.get(view)
        if writer is None:
            writer = self._writers[view] = self._writer_for(view)
        writer(rows)

    def _writer_for(self, view: str) -> Callable[[list[dict[str, Any]]], None]:
        from feast.infra.online_stores.redis import RedisOnlineStore
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        config = self.store.config
        online = config.online_store
        store = self._provider().online_store
        fv = self._feature_view(view)
        if (isinstance(store, SqliteOnlineStore) and not getattr(online, "vector_enabled", False)
                and not getattr(online, "enable_openai_compatible_store", False)):
            return self._sqlite_writer(view, store, fv)
        if (isinstance(store, RedisOnlineStore) and online.skip_dedup and not online.key_ttl_seconds
                and online.redis_type == "redis"):
            return self._redis_writer(view, store, fv)
        return lambda rows: self._feast_write(view, rows)

    def _entity_key_bytes(self, view: str, spec: ViewSpec, row: dict[str, Any]) -> bytes:
        values = tuple(str(row[e]) for e in spec.entities)
        cached = self._entity_keys.get((view, values))
        if cached is None:
            if len(self._entity_keys) > 500_000:  # bounded: a long run sees many entities
                self._entity_keys.clear()
            if self.store.config.entity_key_serialization_version == 3:
                cached = entity_key_v3(spec.entities, values)
            else:
                from feast.infra.key_encoding_utils import serialize_entity_key

                cached = serialize_entity_key(
                    EntityKeyProto(join_keys=list(spec.entities),
                                   entity_values=[ValueProto(string_val=v) for v in values]),
                    entity_key_serialization_version=self.store.config.entity_key_serialization_version)
            self._entity_keys[(view, values)] = cached
        return cached

    def _sqlite_writer(self, view: str, store: Any, fv: Any) -> Callable[[list[dict[str, Any]]], None]:
        from feast.infra.online_stores.sqlite import _quote_id, _table_id
        from feast.utils import to_naive_utc

        config = self.store.config
        spec = VIEWS[view]
        table = _table_id(config.project, fv, config.registry.enable_online_feature_view_versioning)
        sql = (f"INSERT INTO {_quote_id(table)} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
               "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
               "created_ts = excluded.created_ts;")
        encoders = [(f.name, _ENCODERS[f.dtype]) for f in spec.fields]

        def write(rows: list[dict[str, Any]]) -> None:
            params = []
            for row in rows:
                key = self._entity_key_bytes(view, spec, row)
                ts = to_naive_utc(datetime.fromtimestamp(float(row["as_of"]), timezone.utc))
                for name, encode in encoders:
                    value, text = encode(row.get(name))
                    params.append((key, name, value, text, ts, None))
            conn = store._get_conn(config)
            with conn:
                conn.executemany(sql, params)

        return write

    def _redis_writer(self, view: str, store: Any, fv: Any) -> Callable[[list[dict[str, Any]]], None]:
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name

        config = self.store.config
        spec = VIEWS[view]
        fv_name = _versioned_fv_name(fv, config)
        ts_field = f"_ts:{fv_name}"
        project = config.project.encode("utf-8")
        encoders = [(_mmh3(f"{fv_name}:{f.name}"), f.name, _ENCODERS[f.dtype]) for f in spec.fields]

        def write(rows: list[dict[str, Any]]) -> None:
            client = store._get_client(config.online_store)
            with client.pipeline(transaction=False) as pipe:
                for row in rows:
                    mapping: dict[Any, bytes] = {ts_field: timestamp_bytes(as_of_datetime(row))}
                    for field_key, name, encode in encoders:
                        mapping[field_key] = encode(row.get(name))[0]
                    pipe.hset(self._entity_key_bytes(view, spec, row) + project, mapping=mapping)
                pipe.execute()

        return write

    def _feast_write(self, view: str, rows: list[dict[str, Any]]) -> None:
        """Feast's own write path (and the reference the fast paths are tested against)."""
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
            if self.settings.profile == "redis":
                # Fail fast (kairos/stores/redis_conn.py): Feast's client keeps redis-py's 10 retries.
                from kairos.stores.redis_conn import fail_fast_retry

                client = self._provider_cache.online_store._get_client(self.store.config.online_store)
                client.set_retry(fail_fast_retry())
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

    # -- serving's fast read path (added for issue #4; the methods above are unchanged) ---------

    def read_fast(self, view: str, keys: list[dict[str, str]],
                  fields: tuple[str, ...] | None = None) -> list[dict[str, Any] | None]:
        """The same rows as :meth:`read`, from the online store's ``online_read`` directly.

        Feast stays the store of record (same keys, same hash fields, same ``ValueProto`` bytes):
        this only skips what ``get_online_features`` does around the read on every call (registry
        lookups, entity preparation, a response proto, ``to_dict``), which cost the API more CPU
        than the Redis round trip itself. Entity keys are built once per key and kept. On Feast's
        Redis store it reads the hashes itself (:meth:`_redis_reader_for`).
        """
        if not keys:
            return []
        spec = VIEWS[view]
        names = spec.field_names if fields is None else [*dict.fromkeys([*fields, "as_of"])]
        direct = self._redis_readers.get(view)
        if direct is None:
            direct = self._redis_readers[view] = self._redis_reader_for(view)
        if direct is not False:
            return direct(keys, names)
        entity_keys = [self._entity_key(spec, key) for key in keys]
        # online_read appends its timestamp field to the list it is given: hand it a copy.
        results = self._provider().online_read(self.store.config, self._feature_view(view), entity_keys,
                                               list(names))
        out: list[dict[str, Any] | None] = []
        for key, (_, values) in zip(keys, results, strict=True):
            if not values:
                out.append(None)
                continue
            row = {name: _python_value(values.get(name)) for name in names}
            out.append(None if row.get("as_of") is None else {**key, **row})
        return out

    def _redis_reader_for(self, view: str) -> Callable[[list[dict[str, str]], list[str]], list[dict[str, Any] | None]] | bool:
        """For Feast's Redis online store with redis-py: a reader sending one ``HMGET`` per key
        (:func:`kairos.stores.redis_conn.hmget_many`), for the same hash fields Feast's ``online_read`` asks for
        and decoding the same ``ValueProto`` bytes; ``False`` for any other online store. Serving
        reads one user row per request, and Feast's pipeline, its lists of field names and a
        ``ValueProto`` per feature cost more CPU than the round trip. It leaves out the row's
        ``_ts`` field: :meth:`read_fast` takes the row's time from ``as_of``, like :meth:`read`."""
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name

        from kairos.stores.redis_conn import hmget_many

        config = self.store.config
        online = config.online_store
        store = self._provider().online_store
        if (not isinstance(store, RedisOnlineStore) or online.redis_type != "redis"
                or getattr(online, "client", "redis") != "redis"):
            return False
        spec = VIEWS[view]
        fv_name = _versioned_fv_name(self._feature_view(view), config)
        project = config.project.encode("utf-8")
        hash_fields: dict[tuple[str, ...], list[bytes]] = {}
        parse = ValueProto.FromString

        def read(keys: list[dict[str, str]], names: list[str]) -> list[dict[str, Any] | None]:
            wanted = hash_fields.get(tuple(names))
            if wanted is None:
                wanted = hash_fields[tuple(names)] = [_mmh3(f"{fv_name}:{name}") for name in names]
            redis_keys = [self._entity_key_bytes(view, spec, key) + project for key in keys]
            replies = hmget_many(store._get_client(online), redis_keys, wanted)
            out: list[dict[str, Any] | None] = []
            for key, values in zip(keys, replies, strict=True):
                row = {name: (_python_value(parse(value)) if value else None)
                       for name, value in zip(names, values, strict=True)}
                out.append(None if row.get("as_of") is None else {**key, **row})
            return out

        return read

    def _entity_key(self, spec: ViewSpec, key: dict[str, str]) -> EntityKeyProto:
        cache: dict[tuple[Any, ...], EntityKeyProto] | None = getattr(self, "_entity_key_cache", None)
        if cache is None or len(cache) > 200_000:  # bounded: a long-running API meets many keys
            cache = self._entity_key_cache = {}
        values = tuple(str(key[e]) for e in spec.entities)
        cached = cache.get((spec.entities, values))
        if cached is None:
            cached = EntityKeyProto(join_keys=list(spec.entities),
                                    entity_values=[ValueProto(string_val=v) for v in values])
            cache[(spec.entities, values)] = cached
        return cached


def _python_value(value: ValueProto | None) -> Any:
    """The Python value of a stored ``ValueProto`` as :meth:`OnlineFeatures.read` returns it
    (the views hold only scalar int, float, str and bool fields; NaN and "no value" are ``None``)."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    return _clean(getattr(value, kind))


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


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_U32 = struct.Struct("<I")
_STRING = 2  # feast.types.Value.ValueType.STRING


def entity_key_v3(join_keys: tuple[str, ...] | list[str], values: tuple[str, ...]) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) of string entity values, byte for byte:
    key count, then each join key (type, length, UTF-8), then each value, sorted by join key.
    Feast's own builds two protobuf messages per key first; on the flow's hot path, for every
    entity seen for the first time, that cost more than the write itself."""
    pairs = list(zip(join_keys, values, strict=True))
    if len(pairs) > 1:
        pairs.sort()
    out = [_U32.pack(len(pairs))]
    for name, _ in pairs:
        raw = name.encode("utf8")
        out += [_U32.pack(_STRING), _U32.pack(len(raw)), raw]
    for _, value in pairs:
        raw = value.encode("utf8")
        out += [_U32.pack(_STRING), _U32.pack(len(raw)), raw]
    return b"".join(out)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def timestamp_bytes(when: datetime) -> bytes:
    """A serialised ``google.protobuf.Timestamp`` of an aware datetime (what
    ``Timestamp.FromDatetime`` then ``SerializeToString`` give): seconds = 1 and nanos = 2, both
    varints, each left out when zero."""
    seconds, micros = divmod((when - _EPOCH) // _MICROSECOND, 1_000_000)
    out = b""
    if seconds:
        out += b"\x08" + _varint(seconds & 0xFFFFFFFFFFFFFFFF)
    if micros:
        out += b"\x10" + _varint(micros * 1000)
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# Serialised feast.types.Value messages (the bytes ``_to_proto(...).SerializeToString()`` gives)
# and Feast's SQLite ``value_text``: fields int64_val = 4 (varint), double_val = 5 (64-bit),
# bool_val = 7 (varint), string_val = 2 (length-delimited). Oneof members are written even when
# zero. Negative int64 values are ten-byte two's-complement varints.
def _encode_int(value: Any) -> tuple[bytes, str | None]:
    if _missing(value):
        return b"", None
    n = int(value)
    return b"\x20" + _varint(n & 0xFFFFFFFFFFFFFFFF), str(n)


def _encode_float(value: Any) -> tuple[bytes, str | None]:
    if _missing(value):
        return b"", None
    x = float(value)
    return b"\x29" + struct.pack("<d", x), str(x)


def _encode_bool(value: Any) -> tuple[bytes, str | None]:
    if _missing(value):
        return b"", None
    return (b"\x38\x01", "True") if value else (b"\x38\x00", "False")


def _encode_str(value: Any) -> tuple[bytes, str | None]:
    if _missing(value):
        return b"", None
    text = str(value)
    raw = text.encode("utf-8")
    return b"\x12" + _varint(len(raw)) + raw, text


_ENCODERS: dict[str, Callable[[Any], tuple[bytes, str | None]]] = {
    "int": _encode_int, "float": _encode_float, "bool": _encode_bool, "str": _encode_str}


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
