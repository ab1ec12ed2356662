"""The online store's fast write paths store exactly what Feast's own ``online_write_batch`` stores
(SQLite rows and Redis hashes, byte for byte), and Feast reads them back as written."""

from __future__ import annotations

import math
import sqlite3

import pytest
import redis

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.stores.online_features import OnlineFeatures

REDIS_DB = 10  # this test's own database; flushed before and after


def sample_rows() -> list[dict]:
    """user_activity and item_stats rows with every kind of value: None, NaN, zero, negative,
    large, booleans, unicode, an empty string; and one key written twice (the later row wins)."""
    rows: list[dict] = []
    for view, key, n in (("user_activity", "user_id", 5), ("item_stats", "item_id", 4)):
        spec = VIEWS[view]
        for i in range(n):
            row = {key: f"k{i}é" if i % 2 else f"k{i}", "as_of": 1_700_000_000.123456 + i * 7.5}
            for j, f in enumerate(spec.fields):
                if f.name == "as_of":
                    continue
                pick = (i + j) % 5
                if f.dtype == "int":
                    row[f.name] = [0, -3, 2**40, None, 7][pick]
                elif f.dtype == "float":
                    row[f.name] = [0.0, -1.5, math.nan, None, 1e-300][pick]
                elif f.dtype == "bool":
                    row[f.name] = [True, False, None, True, False][pick]
                else:
                    row[f.name] = ["", "spa", "café ☕", None, "8a2a1072b59ffff"][pick]
            rows.append((view, row))
    again = dict(rows[1][1]) | {"as_of": rows[1][1]["as_of"] + 60}
    rows.append(("user_activity", again))
    return rows


def write_both_ways(fast: OnlineFeatures, feast: OnlineFeatures) -> None:
    for view, row in sample_rows():
        fast.write(view, [row])
        feast._feast_write(view, [row])


def test_sqlite_fast_path_stores_what_feast_stores(tmp_path):
    fast = OnlineFeatures(Settings(home=tmp_path / "fast", feast_project="write_same"))
    feast = OnlineFeatures(Settings(home=tmp_path / "feast", feast_project="write_same"))
    write_both_ways(fast, feast)

    def dump(home) -> dict:
        conn = sqlite3.connect(home / "feast" / "online_store.db")
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}

    fast_rows, feast_rows = dump(tmp_path / "fast"), dump(tmp_path / "feast")
    assert sum(len(v) for v in feast_rows.values()) > 100
    assert fast_rows == feast_rows
    assert all("_sqlite_writer" in w.__qualname__ for w in fast._writers.values())  # not Feast's path
    check_reads(fast)


@pytest.mark.redis
def test_redis_fast_path_stores_what_feast_stores(tmp_path):
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    try:
        url = f"127.0.0.1:6379,db={REDIS_DB}"
        fast = OnlineFeatures(Settings(home=tmp_path / "fast", profile="redis", redis_url=url, feast_project="wfast"))
        feast = OnlineFeatures(Settings(home=tmp_path / "feast", profile="redis", redis_url=url, feast_project="wfeas"))
        write_both_ways(fast, feast)

        def dump(project: bytes) -> dict:
            return {key[: -len(project)]: client.hgetall(key) for key in client.keys(b"*" + project)}

        fast_hashes, feast_hashes = dump(b"wfast"), dump(b"wfeas")
        assert len(feast_hashes) == 9
        assert fast_hashes == feast_hashes
        assert all("_redis_writer" in w.__qualname__ for w in fast._writers.values())  # not Feast's path
        check_reads(fast)
        check_direct_reads(fast)
    finally:
        client.flushdb()


def check_direct_reads(features: OnlineFeatures) -> None:
    """Serving's direct Redis read (``read_fast``) returns what Feast's ``get_online_features``
    returns: every field or a few, a key read alone or with others, keys with nothing stored."""
    for view, entity in (("user_activity", "user_id"), ("item_stats", "item_id")):
        stored = sorted({row[entity] for v, row in sample_rows() if v == view})
        keys = [{entity: k} for k in [*stored, "nobody"]]
        few = tuple(f.name for f in VIEWS[view].fields if f.name != "as_of")[:2]
        for fields in (None, few):
            expected = features.read(view, keys, fields)
            assert features.read_fast(view, keys, fields) == expected
            assert [features.read_fast(view, [key], fields)[0] for key in keys] == expected  # one key: no pipeline
            assert expected[-1] is None and all(row is not None for row in expected[:-1])
    assert all(callable(reader) for reader in features._redis_readers.values())  # the direct path answered


def check_reads(features: OnlineFeatures) -> None:
    """Feast reads the fast path's rows back: the latest row of a key, None for None and NaN."""
    rows = sample_rows()
    latest = {}
    for view, row in rows:
        latest[(view, row.get("user_id") or row.get("item_id"))] = (view, row)
    for (view, key), (_, row) in latest.items():
        entity = VIEWS[view].entities[0]
        got = features.read_one(view, {entity: key})
        assert got is not None
        for name, value in row.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert got[name] is None, name
            elif isinstance(value, float):
                assert got[name] == pytest.approx(value), name
            else:
                assert got[name] == value, name


@pytest.mark.parametrize("keys, values", [
    (("user_id",), ("u1",)),
    (("user_id",), ("",)),
    (("cell", "category"), ("8a2a1072b59ffff", "spa")),  # two join keys: Feast sorts them by name
    (("b", "a"), ("café ☕", "x")),
])
def test_entity_key_encoding_is_feasts(keys, values):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from kairos.stores.online_features import entity_key_v3

    feast_bytes = serialize_entity_key(EntityKey(join_keys=list(keys), entity_values=[Value(string_val=v) for v in values]),
                                       entity_key_serialization_version=3)
    assert entity_key_v3(keys, values) == feast_bytes


def test_timestamp_encoding_is_protobufs():
    import random
    from datetime import datetime, timedelta, timezone

    from google.protobuf.timestamp_pb2 import Timestamp

    from kairos.stores.online_features import timestamp_bytes

    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    rng = random.Random(3)
    offsets = [0.0, 0.5, 1.0, 1_700_000_000.123456, 1_700_000_000.000001, -1.5, -100.25, 4e9]
    offsets += [rng.uniform(-1e10, 1e10) for _ in range(2000)]
    for seconds in offsets:
        when = epoch + timedelta(seconds=seconds)
        reference = Timestamp()
        reference.FromDatetime(when)
        assert timestamp_bytes(when) == reference.SerializeToString(), when
