"""A simulated day streamed through the Bytewax flow: stream and batch agree, nothing is lost."""

from __future__ import annotations

import pytest

from flows.runner import run_flow
from kairos.config import Settings
from kairos.simulate import SimConfig, simulate
from kairos.stores.catalog import open_catalog
from kairos.stores.deadletters import SqliteDeadLetters
from kairos.stores.event_store import open_event_store
from kairos.stores.offline_log import OfflineLog
from kairos.stores.online_features import OnlineFeatures
from offline import batch_features as batch
from tests.consistency import check_consistency, event_count


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("consistency"), feast_project="consistency_local")
    summary = simulate(open_event_store(settings), SimConfig(seed=11, days=1, n_users=80, n_businesses=40),
                       settings.sim_dir)
    report = run_flow(settings, progress=False)
    return settings, summary, report


def test_every_record_is_an_event_or_a_dead_letter(streamed):
    settings, summary, report = streamed
    total = open_event_store(settings).count()
    assert report.records == total == sum(summary.documents.values())
    letters = SqliteDeadLetters(settings.deadletter_path)
    assert letters.count() == summary.malformed > 0
    assert event_count(settings) + letters.count() == total


def test_online_features_equal_batch_recomputation(streamed):
    settings, _, _ = streamed
    checked = check_consistency(settings, OnlineFeatures(settings, apply=False))
    # Every view was exercised with a meaningful number of keys.
    assert checked["user_activity"] >= 50 and checked["item_stats"] >= 50
    assert checked["cell_demand"] >= 20 and checked["cell_supply"] >= 20


def test_catalog_holds_the_merged_state_of_every_item(streamed):
    settings, _, _ = streamed
    events = batch.prepare(OfflineLog(settings.offline_dir).read_events())
    states = batch.item_states_at(batch.item_events(events), float("inf"))
    catalog = open_catalog(settings)
    assert catalog.count() == len(states) > 0
    for state in states.to_dict("records"):
        item = catalog.get(state["item_id"])
        assert item is not None and item.deleted == state["deleted"]
        assert item.price == state["price"] and item.category == state["category"]
