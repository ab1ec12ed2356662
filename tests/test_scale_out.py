"""The flow as two processes (-i/-a) and as two workers (-w 2) gives the one-process results."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from flows.cluster import ProcessOutcome, is_timely_failure, wait_cluster
from flows.runner import run_flow
from kairos.config import Settings
from kairos.features import VIEWS
from kairos.net import free_port
from kairos.simulate import SimConfig, simulate
from kairos.stores.catalog import open_catalog
from kairos.stores.event_store import open_event_store
from kairos.stores.offline_log import OfflineLog
from kairos.stores.online_features import OnlineFeatures
from tests.consistency import check_consistency, same

ROOT = Path(__file__).resolve().parents[1]
SIM = SimConfig(seed=17, days=1, n_users=80, n_businesses=30)
FLOW = "flows.dataflow:flow_from_env(follow=False)"


def home(tmp: Path, name: str) -> Settings:
    settings = Settings(home=tmp / name, feast_project=f"scale_{name}", recovery=False)
    simulate(open_event_store(settings), SIM, settings.sim_dir)
    return settings


def env_for(settings: Settings) -> dict[str, str]:
    return {**os.environ, "KAIROS_HOME": str(settings.home), "KAIROS_FEAST_PROJECT": settings.feast_project,
            "KAIROS_PROFILE": "local"}


def all_rows(settings: Settings) -> dict[str, dict[tuple, dict]]:
    """Every online row of every view by entity key, for the keys the offline log knows."""
    features = OnlineFeatures(settings, apply=False)
    out = {}
    for view, spec in VIEWS.items():
        keys = OfflineLog(settings.offline_dir).read_rows(view)[list(spec.entities)].drop_duplicates()
        rows = features.read(view, keys.to_dict("records"))
        out[view] = {tuple(r[e] for e in spec.entities): r for r in rows if r is not None}
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    settings = home(tmp_path_factory.mktemp("scale"), "single")
    run_flow(settings, progress=False)
    return settings, all_rows(settings)


def assert_same_as_one_process(settings: Settings, one_process) -> None:
    single_settings, single_rows = one_process
    rows = all_rows(settings)
    for view, spec in VIEWS.items():
        assert rows[view].keys() == single_rows[view].keys() and rows[view], view
        for key, row in rows[view].items():
            # Same values; floats up to summation order (workers fold items in another order).
            different = [f for f in spec.field_names if not same(row[f], single_rows[view][key][f])]
            assert not different, f"{view} {key} differs from the one-process run in {different}"
    assert open_catalog(settings).count() == open_catalog(single_settings).count()
    check_consistency(settings, OnlineFeatures(settings, apply=False))


#: Launches of the two-process run before a Timely network panic fails the test (see flows/cluster.py).
TIMELY_PANIC_ATTEMPTS = 5


def launch_two_processes(settings: Settings) -> list[ProcessOutcome]:
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen([sys.executable, "-m", "bytewax.run", FLOW, "-i", str(i), "-a", addresses], cwd=ROOT,
                         env=env_for(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    return wait_cluster(procs, timeout_s=300)


def test_two_processes_equal_one(tmp_path, one_process):
    settings = home(tmp_path, "two_procs")
    results = launch_two_processes(settings)
    for attempt in range(1, TIMELY_PANIC_ATTEMPTS):
        if not is_timely_failure(results):
            break
        # Timely's network threads panic in roughly 1 of 6-16 two-process launches on this 2-CPU
        # machine (the first launch did in 3 of 5 full-suite runs; no retry did), before any output
        # is written and with no error of ours (flows/cluster.py). Retry on a fresh home on that
        # exact signature only; every attempt's results are checked in full.
        warnings.warn(f"two-process run hit the Timely 'Send thread panic' (attempt {attempt}); retrying",
                      stacklevel=1)
        settings = home(tmp_path, f"two_procs_retry{attempt}")
        results = launch_two_processes(settings)
    for i, outcome in enumerate(results):
        assert outcome.ok, outcome.describe(i)
    assert_same_as_one_process(settings, one_process)


def test_two_workers_equal_one(tmp_path, one_process):
    settings = home(tmp_path, "two_workers")
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", FLOW, "-w", "2"], cwd=ROOT, env=env_for(settings),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_as_one_process(settings, one_process)
