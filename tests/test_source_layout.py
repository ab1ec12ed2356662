"""The source shard count is kept for the life of a recovery directory: Bytewax resumes only the
partitions its snapshots name, so changing ``KAIROS_SOURCE_SHARDS`` under existing snapshots must
not abort the flow (or, worse, re-read a collection from the start)."""

from __future__ import annotations

import json
import logging

import pytest

from flows.runner import SOURCE_LAYOUT_FILE, keep_source_layout, recovery_config, run_flow
from kairos.config import Settings
from kairos.stores.event_store import open_event_store
from kairos.stores.online_features import OnlineFeatures


def test_a_fresh_directory_records_the_configured_shards(tmp_path):
    settings = Settings(home=tmp_path, source_shards=3)
    assert keep_source_layout(settings) is settings
    assert json.loads((settings.recovery_dir / SOURCE_LAYOUT_FILE).read_text()) == {"source_shards": 3}


def test_a_changed_setting_is_ignored_with_a_warning_until_the_directory_is_reset(tmp_path, caplog):
    keep_source_layout(Settings(home=tmp_path, source_shards=2))
    with caplog.at_level(logging.WARNING, logger="flows.runner"):
        kept = keep_source_layout(Settings(home=tmp_path, source_shards=4))
    assert kept.source_shards == 2
    assert "KAIROS_SOURCE_SHARDS=4 ignored" in caplog.text and "started with 2" in caplog.text


def test_a_directory_from_before_shards_keeps_one_partition_per_collection(tmp_path):
    settings = Settings(home=tmp_path, source_shards=2)
    recovery_config(Settings(home=tmp_path))  # partitions as an older Kairos created them: no layout
    assert not (settings.recovery_dir / SOURCE_LAYOUT_FILE).exists()
    assert keep_source_layout(settings).source_shards == 1
    assert json.loads((settings.recovery_dir / SOURCE_LAYOUT_FILE).read_text()) == {"source_shards": 1}


def test_an_unreadable_layout_is_a_clear_error_not_a_guess(tmp_path):
    settings = Settings(home=tmp_path)
    settings.recovery_dir.mkdir(parents=True)
    (settings.recovery_dir / SOURCE_LAYOUT_FILE).write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable.*remove the whole directory"):
        keep_source_layout(settings)


def test_without_recovery_nothing_is_recorded(tmp_path):
    settings = Settings(home=tmp_path, recovery=False, source_shards=5)
    assert keep_source_layout(settings) is settings
    assert not settings.recovery_dir.exists()


def test_a_resumed_flow_with_another_shard_count_carries_on_from_its_snapshots(tmp_path):
    """Run with 2 shards, append, resume with the setting changed to 3: the flow resumes (Bytewax
    would abort on partitions its snapshots do not name) and counts every event once."""
    settings = Settings(home=tmp_path, source_shards=2, learners=False, feast_project="layout_resume")
    store = open_event_store(settings)
    ping = {"user_id": "u1", "lat": 40.75, "lon": -73.98}
    store.append("pings", [{**ping, "_id": f"p{i}", "ts": f"2026-05-01T10:{i:02d}:00Z"} for i in range(5)])
    run_flow(settings, progress=False)
    store.append("pings", [{**ping, "_id": f"q{i}", "ts": f"2026-05-01T11:{i:02d}:00Z"} for i in range(4)])
    report = run_flow(Settings(home=tmp_path, source_shards=3, learners=False, feast_project="layout_resume"),
                      progress=False)
    assert report.resumed and report.records == 4  # only what was appended since
    row = OnlineFeatures(settings, apply=False).read_one("user_activity", {"user_id": "u1"})
    assert row is not None and row["location_count_24h"] == 9
