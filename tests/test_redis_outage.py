"""Redis goes away mid-run: the flow retries with backoff and loses nothing; the API answers from
last known values with ``degraded: true``, never a 500."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.simulate import SimConfig, simulate
from kairos.stores.catalog import RedisCatalog, open_catalog
from kairos.stores.event_store import open_event_store
from kairos.stores.online_features import OnlineFeatures
from serving.app import create_app
from tests.consistency import check_consistency
from tests.redis_server import OwnRedis

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def own_redis(tmp_path):
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_flow_survives_a_redis_restart_mid_stream(tmp_path, own_redis):
    home = tmp_path / "home"
    settings = Settings(home=home, profile="redis", redis_url=own_redis.url, feast_project="outage_flow",
                        epoch_interval_s=0.2, source_batch_size=40)
    summary = simulate(open_event_store(settings), SimConfig(seed=8, days=1, n_users=120, n_businesses=30),
                       settings.sim_dir)
    env = {**os.environ, "KAIROS_HOME": str(home), "KAIROS_PROFILE": "redis", "KAIROS_REDIS_URL": own_redis.url,
           "KAIROS_FEAST_PROJECT": "outage_flow", "KAIROS_EPOCH_INTERVAL_S": "0.2", "KAIROS_SOURCE_BATCH_SIZE": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "kairos.cli", "flow", "run", "--progress", "lines"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("progress ") and int(line.split()[1]) >= summary.total // 5:
            break
    own_redis.stop()
    time.sleep(3.0)
    assert proc.poll() is None, "the flow died when Redis went away"
    own_redis.start()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "retrying" in err  # it did meet the outage, and waited it out
    check_consistency(settings, OnlineFeatures(settings, apply=False))
    catalog = open_catalog(settings)
    assert isinstance(catalog, RedisCatalog) and catalog.count() > 0


def test_api_serves_last_known_values_while_redis_is_down(tmp_path, own_redis):
    home = tmp_path / "home"
    settings = Settings(home=home, profile="redis", redis_url=own_redis.url, feast_project="outage_api", auth_required=False,
                        epoch_interval_s=0.5)
    simulate(open_event_store(settings), SimConfig(seed=9, days=1, n_users=60, n_businesses=30), settings.sim_dir)
    from flows.runner import run_flow

    run_flow(settings, progress=False)
    user = "u0001"
    at = datetime.now(UTC).isoformat()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        fresh = client.get(f"/v1/users/{user}/suggestions", params={"at": at})
        assert fresh.status_code == 200 and fresh.json()["degraded"] is False
        own_redis.stop()
        stale = client.get(f"/v1/users/{user}/suggestions", params={"at": at})
        assert stale.status_code == 200, stale.text
        assert stale.json()["degraded"] is True
        # Same user, same place, same items: answered from the last known rows and items.
        assert [i["item_id"] for i in stale.json()["items"]] == [i["item_id"] for i in fresh.json()["items"]]
        moved = client.post(f"/v1/users/{user}/location", json={"lat": 40.7549, "lon": -73.984})
        assert moved.status_code == 200 and moved.json()["degraded"] is True
        own_redis.start()
        time.sleep(1.1)  # the breaker lets the next request try the store again
        back = client.get(f"/v1/users/{user}/suggestions", params={"at": at})
        assert back.status_code == 200 and back.json()["degraded"] is False


@pytest.mark.parametrize("inline", [True, False], ids=["on-the-event-loop", "on-the-thread-pool"])
def test_a_hung_redis_fails_reads_after_the_timeout_and_the_api_degrades(tmp_path, own_redis, inline):
    """SIGSTOP: the server keeps its connections but answers nothing (a hang, not a refusal).
    Without socket timeouts on Feast's client the request would wait forever."""
    import signal
    import threading

    settings = Settings(home=tmp_path / "home", profile="redis", redis_url=own_redis.url, feast_project="hung_api",
                        auth_required=False, epoch_interval_s=0.5, redis_timeout_s=0.5, api_inline_suggestions=inline)
    simulate(open_event_store(settings), SimConfig(seed=9, days=1, n_users=20, n_businesses=10), settings.sim_dir)
    from flows.runner import run_flow

    run_flow(settings, progress=False)
    at = datetime.now(UTC).isoformat()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        fresh = client.get("/v1/users/u0001/suggestions", params={"at": at})
        assert fresh.status_code == 200 and fresh.json()["degraded"] is False
        answers: list = []
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            asking = threading.Thread(target=lambda: answers.append(
                client.get("/v1/users/u0001/suggestions", params={"at": at})), daemon=True)
            started = time.monotonic()
            asking.start()
            asking.join(timeout=30)
            waited = time.monotonic() - started
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert answers, "the request hung on a Redis that does not answer"
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["degraded"] is True
        assert [i["item_id"] for i in answers[0].json()["items"]] == [i["item_id"] for i in fresh.json()["items"]]
        assert waited < 10  # a few reads, each a timeout and one retry, before the breakers open
