"""A flow resuming from snapshots reads the source with the shard count they were written with:
Bytewax resumes only the partitions its snapshots name, so a changed ``KAIROS_SOURCE_SHARDS`` (or an
upgrade over a recovery directory from before shards) must neither abort the flow nor re-read a
collection from the start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from flows import source as source_module
from flows.runner import run_flow
from flows.source import bytewax_recovery_dir, recorded_shards, with_recorded_shards
from kairos.config import Settings
from kairos.stores.event_store import open_event_store
from kairos.stores.online_features import OnlineFeatures

PING = {"user_id": "u1", "lat": 40.75, "lon": -73.98}


def pings(prefix: str, hour: int, n: int) -> list[dict]:
    return [{**PING, "_id": f"{prefix}{i}", "ts": f"2026-05-01T{hour:02d}:{i:02d}:00Z"} for i in range(n)]


def settings_for(home: Path, shards: int, project: str) -> Settings:
    return Settings(home=home, source_shards=shards, learners=False, feast_project=project)


def location_count(settings: Settings) -> int:
    row = OnlineFeatures(settings, apply=False).read_one("user_activity", {"user_id": "u1"})
    assert row is not None
    return row["location_count_24h"]


@pytest.mark.parametrize(("first", "then"), [(1, 2), (2, 3)])
def test_a_resumed_flow_keeps_the_shards_its_snapshots_were_written_with(tmp_path, first, then, caplog):
    """1 → 2 is the upgrade over a directory from before shards (plain collection names)."""
    project = f"layout_{first}_{then}"
    store = open_event_store(settings_for(tmp_path, first, project))
    store.append("pings", pings("p", 10, 5))
    run_flow(settings_for(tmp_path, first, project), progress=False)
    assert recorded_shards(tmp_path / "recovery") == first
    store.append("pings", pings("q", 11, 4))
    with caplog.at_level(logging.WARNING, logger="flows.source"):
        report = run_flow(settings_for(tmp_path, then, project), progress=False)
    assert f"KAIROS_SOURCE_SHARDS={then} ignored" in caplog.text
    assert report.resumed and report.records == 4  # only what was appended since: nothing re-read
    assert location_count(settings_for(tmp_path, then, project)) == 9  # every ping counted once
    assert recorded_shards(tmp_path / "recovery") == first


def test_a_fresh_directory_takes_the_setting(tmp_path):
    settings = settings_for(tmp_path, 3, "layout_fresh")
    assert with_recorded_shards(settings, tmp_path / "recovery") is settings  # no directory yet
    (tmp_path / "recovery").mkdir()
    assert recorded_shards(tmp_path / "recovery") is None
    assert with_recorded_shards(settings, tmp_path / "recovery") is settings


def test_an_unreadable_recovery_partition_is_a_clear_error(tmp_path):
    (tmp_path / "part-0.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RuntimeError, match="cannot read the source's partitions .*part-0.sqlite3"):
        recorded_shards(tmp_path)


def test_bytewax_recovery_dir_is_read_only_under_bytewax_run(monkeypatch, tmp_path):
    assert bytewax_recovery_dir() is None  # pytest's own -r options must never be taken for it
    main = types.SimpleNamespace(__spec__=types.SimpleNamespace(name="bytewax.run"))
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(source_module.sys, "argv", ["run.py", "flows.dataflow:flow_from_env()", "-r", str(tmp_path),
                                                    "-s", "2"])
    assert bytewax_recovery_dir() == tmp_path
    monkeypatch.setattr(source_module.sys, "argv", ["run.py", "flows.dataflow:flow_from_env()"])
    monkeypatch.setenv("BYTEWAX_RECOVERY_DIRECTORY", str(tmp_path / "env"))
    assert bytewax_recovery_dir() == tmp_path / "env"


def test_bytewax_run_with_a_changed_setting_resumes_instead_of_aborting(tmp_path):
    """The deployed entry point: ``python -m bytewax.run "flows.dataflow:flow_from_env()" -r DIR``."""
    from bytewax.recovery import init_db_dir

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    home = tmp_path / "home"
    store = open_event_store(Settings(home=home))
    store.append("pings", pings("p", 10, 5))
    env = {**os.environ, "KAIROS_HOME": str(home), "KAIROS_FEAST_PROJECT": "layout_bytewax_run",
           "KAIROS_PROFILE": "local"}
    command = [sys.executable, "-m", "bytewax.run", "flows.dataflow:flow_from_env(follow=False)", "-r", str(recovery),
               "-s", "0", "-b", "0"]
    first = subprocess.run(command, env={**env, "KAIROS_SOURCE_SHARDS": "1"}, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    store.append("pings", pings("q", 11, 4))
    second = subprocess.run(command, env={**env, "KAIROS_SOURCE_SHARDS": "2"}, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "KAIROS_SOURCE_SHARDS=2 ignored" in second.stderr
    assert recorded_shards(recovery) == 1
    assert location_count(Settings(home=home, feast_project="layout_bytewax_run")) == 9
