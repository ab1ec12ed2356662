"""Dead letters: listed with reasons, replayed after a mapping fix (once), and a flood of bad
documents neither stops the flow nor slows the good ones below half their rate."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from importlib import resources

import pytest
from typer.testing import CliRunner

from flows.runner import run_flow
from kairos.cli import app
from kairos.config import Settings
from kairos.decoding import load_mappings
from kairos.replay import REPLAY_COLLECTION, replay
from kairos.stores.deadletters import SqliteDeadLetters
from kairos.stores.event_store import open_event_store
from kairos.stores.offline_log import OfflineLog

T0 = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
FIX = """
  checkins:
    actor_type: user
    actor_id: [member]
    kind: location
    ts: [when]
    location: [where]
"""


def checkin(i: int) -> dict:
    return {"_id": f"c{i}", "member": f"m{i % 7}", "when": (T0 + timedelta(minutes=i)).isoformat(),
            "where": {"lat": 40.75 + i * 1e-4, "lon": -73.98}}


def ping(i: int) -> dict:
    return {"_id": f"p{i}", "user_id": f"u{i % 2000}", "lat": 40.7 + (i % 100) * 1e-3, "lon": -73.98,
            "ts": (T0 + timedelta(seconds=i)).isoformat()}


def test_replay_after_a_mapping_fix_sends_each_letter_once(tmp_path):
    settings = Settings(home=tmp_path, feast_project="replay_test", epoch_interval_s=0.2)
    store = open_event_store(settings)
    store.append("checkins", [checkin(i) for i in range(30)])  # no mapping for this collection yet
    run_flow(settings, progress=False)
    letters = SqliteDeadLetters(settings.deadletter_path)
    assert letters.count("open") == 30
    assert "no mapping for collection 'checkins'" in letters.list(limit=1)[0]["reason"]

    mapping_file = tmp_path / "collections.yaml"
    mapping_file.write_text(resources.files("kairos").joinpath("collections.yaml").read_text() + FIX)
    fixed = settings.with_(collections_file=str(mapping_file))
    mappings = load_mappings(mapping_file)
    report = replay(letters, store, mappings, fixed.h3_resolution)
    assert report.replayed == 30 and report.still_failing == 0
    assert letters.count("open") == 0 and letters.count("replayed") == 30
    again = replay(letters, store, mappings, fixed.h3_resolution)
    assert again.replayed == 0  # nothing is sent twice
    assert store.count(REPLAY_COLLECTION) == 30

    run_flow(fixed, progress=False)  # resumes from its snapshot; reads only the replay envelopes
    events = OfflineLog(settings.offline_dir).read_events()
    located = events[events["collection"] == "checkins"]
    assert len(located) == 30 and set(located["kind"]) == {"location"}
    assert letters.count() == 30  # no new dead letters


def test_replay_interrupted_between_sending_and_marking_does_not_send_twice(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path)
    store = open_event_store(settings)
    letters = SqliteDeadLetters(settings.deadletter_path)
    from kairos.decoding import decode
    from kairos.stores.event_store import SourceRecord

    letters.write([decode(SourceRecord("checkins", str(i), "insert", checkin(i), T0), load_mappings(), 8)
                   for i in range(5)])
    mapping_file = tmp_path / "collections.yaml"
    mapping_file.write_text(resources.files("kairos").joinpath("collections.yaml").read_text() + FIX)

    def crash(ids):
        raise KeyboardInterrupt("killed after the append")

    monkeypatch.setattr(letters, "mark_replayed", crash)
    with pytest.raises(KeyboardInterrupt):
        replay(letters, store, load_mappings(mapping_file), 8)
    monkeypatch.undo()
    report = replay(letters, store, load_mappings(mapping_file), 8)
    assert report.replayed == 5 and store.count(REPLAY_COLLECTION) == 5  # marked, not re-sent


def test_still_failing_letters_stay_open_with_the_current_reason(tmp_path):
    settings = Settings(home=tmp_path)
    store = open_event_store(settings)
    store.append("pings", [{"_id": "bad", "user_id": "u1", "lat": 123.4, "lon": 0, "ts": T0.isoformat()}])
    run_flow(settings, progress=False)
    letters = SqliteDeadLetters(settings.deadletter_path)
    report = replay(letters, store, load_mappings(), 8)
    assert report.replayed == 0 and report.still_failing == 1
    assert letters.count("open") == 1 and "out of range" in next(iter(report.reasons))


def test_cli_lists_and_replays(tmp_path):
    settings = Settings(home=tmp_path)
    open_event_store(settings).append("checkins", [checkin(0)])
    run_flow(settings, progress=False)
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["deadletters", "list", "--home", str(tmp_path)]).output)
    assert listed["open"] == 1 and listed["letters"][0]["collection"] == "checkins"
    dry = json.loads(runner.invoke(app, ["deadletters", "replay", "--dry-run", "--home", str(tmp_path)]).output)
    assert dry == {"replayed": 0, "still_failing": 1, "dry_run": True,
                   "still_failing_reasons": {"checkins: no mapping for collection 'checkins'": 1}}


def test_a_flood_of_bad_documents_keeps_good_ones_flowing_and_accounts_for_every_one(tmp_path):
    n = 5_000  # enough that processing, not start-up noise, is what is timed (2,000 users, as in real traffic)
    good = [ping(i) for i in range(n)]
    bad_kinds = [{"_id": "x", "user_id": "u1", "lat": "north", "lon": 1, "ts": T0.isoformat()},
                 {"_id": "y", "user_id": "u1", "lat": 1, "lon": 1},
                 {"_id": "z", "user_id": "u1", "lat": 1, "lon": 1, "ts": "yesterday-ish"},
                 "not even an object"]

    def clean_run(k: int):
        settings = Settings(home=tmp_path / f"clean{k}", feast_project=f"flood_clean{k}", recovery=False)
        open_event_store(settings).append("pings", good)
        return settings, run_flow(settings, progress=False)

    def flooded_run(k: int):
        settings = Settings(home=tmp_path / f"flooded{k}", feast_project=f"flood_bad{k}", recovery=False)
        store = open_event_store(settings)
        for i in range(0, len(good), 500):  # as many bad documents as good ones, interleaved
            store.append("pings", good[i:i + 500])
            store.append("pings", [{**bad_kinds[j % 3], "_id": f"bad{i}-{j}"} for j in range(500)])
        store.append("pings", [{"wrapped": bad_kinds[3]}] * 10)
        return settings, run_flow(settings, progress=False)

    # Best of three, side by side: timing noise only ever adds time, so the minimum is the measure.
    clean = [clean_run(k) for k in range(3)]
    flooded = [flooded_run(k) for k in range(3)]
    for settings, _ in flooded:
        letters = SqliteDeadLetters(settings.deadletter_path)
        assert letters.count() == n + 10  # every bad one accounted for, with a reason
        assert len(OfflineLog(settings.offline_dir).read_events()) == n  # and every good one processed
    good_rate_clean = n / min(report.seconds for _, report in clean)
    good_rate_flooded = n / min(report.seconds for _, report in flooded)
    print(f"good documents per second: clean {good_rate_clean:.0f}, flooded {good_rate_flooded:.0f}")
    assert good_rate_flooded >= 0.5 * good_rate_clean, (good_rate_flooded, good_rate_clean)
