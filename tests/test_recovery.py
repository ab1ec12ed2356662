"""Crash-exact features: SIGKILL the flow at random points mid-stream, restart, compare with batch."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from kairos.config import Settings
from kairos.simulate import SimConfig, simulate
from kairos.stores.deadletters import SqliteDeadLetters
from kairos.stores.event_store import open_event_store
from kairos.stores.online_features import OnlineFeatures
from tests.consistency import check_consistency, event_count

ROOT = Path(__file__).resolve().parents[1]


def flow_process(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kairos.cli", "flow", "run", "--progress", "lines"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_until(proc: subprocess.Popen[str], records: int) -> bool:
    """Read progress lines; SIGKILL the flow once it has read ``records``. True if it was killed."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("progress ") and int(line.split()[1]) >= records:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return True
    proc.wait(timeout=60)
    return False


def test_sigkill_at_random_points_loses_nothing_and_counts_nothing_twice(tmp_path):
    settings = Settings(home=tmp_path, feast_project="recovery_test", epoch_interval_s=0.2, source_batch_size=40)
    summary = simulate(open_event_store(settings), SimConfig(seed=21, days=1, n_users=150, n_businesses=40),
                       settings.sim_dir)
    total = summary.total
    env = {**os.environ, "KAIROS_HOME": str(tmp_path), "KAIROS_FEAST_PROJECT": settings.feast_project,
           "KAIROS_EPOCH_INTERVAL_S": "0.2", "KAIROS_SOURCE_BATCH_SIZE": "40", "KAIROS_PROFILE": "local"}
    rng = random.Random(1234)
    kills = 0
    for _ in range(3):
        # A random point within the next quarter of the log: three kills cannot reach its end.
        if run_until(flow_process(env), rng.randint(100, total // 4)):
            kills += 1
    assert kills == 3
    # Partway: the crashes left work undone (the final run below must still do some).
    assert event_count(settings) < total
    final = flow_process(env)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    assert "resumed from the last snapshot" in out

    letters = SqliteDeadLetters(settings.deadletter_path)
    assert letters.count() == summary.malformed  # every bad document once
    assert event_count(settings) + letters.count() == total  # every good one once (log deduplicates replays)
    check_consistency(settings, OnlineFeatures(settings, apply=False))
