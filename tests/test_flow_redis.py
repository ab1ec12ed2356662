"""The same flow on the Redis profile (the Redis server at 127.0.0.1:6379, a DB of this test's own)."""

from __future__ import annotations

import pytest
import redis

from flows.runner import run_flow
from kairos.config import Settings
from kairos.simulate import SimConfig, simulate
from kairos.stores.event_store import open_event_store
from kairos.stores.online_features import OnlineFeatures
from tests.consistency import check_consistency

REDIS_DB = 11  # this test's own database; flushed before and after


@pytest.fixture()
def redis_settings(tmp_path):
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # CI starts Redis; a missing server is a failure, not a skip
        pytest.fail(f"Redis at 127.0.0.1:6379 is not reachable ({exc}); start it as .ci/run does")
    client.flushdb()
    yield Settings(home=tmp_path, profile="redis", redis_url=f"127.0.0.1:6379,db={REDIS_DB}",
                   feast_project="flow_redis_test")
    client.flushdb()


@pytest.mark.redis
def test_flow_writes_features_to_redis_that_match_batch(redis_settings):
    simulate(open_event_store(redis_settings), SimConfig(seed=5, days=1, n_users=40, n_businesses=20),
             redis_settings.sim_dir)
    run_flow(redis_settings, progress=False)
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    assert client.dbsize() > 50  # the rows really are in Redis, not in a SQLite file
    assert not (redis_settings.feast_dir / "online_store.db").exists()
    checked = check_consistency(redis_settings, OnlineFeatures(redis_settings, apply=False))
    assert checked["user_activity"] >= 20
