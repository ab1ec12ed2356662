"""Point-in-time training sets: Feast historical features as known strictly before each label."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.schema import Event
from kairos.stores.offline_log import OfflineLog
from offline.training_sets import build_training_set, feature_store, labels_from_events, load_offline_events

T = 1_777_000_000.0


def ev(kind: str, t: float, actor: str = "u1", item: str | None = "i1", **kw: Any) -> Event:
    actor_type = "business" if kind in ("offer", "service") else "user"
    return Event(event_id=uuid.uuid4().hex, ts=datetime.fromtimestamp(t, UTC), actor_type=actor_type,
                 actor_id=actor if actor_type == "user" else "b1", kind=kind, item_id=item, **kw)


def user_row(top: str, as_of: float, clicks: int) -> dict[str, Any]:
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    row = {f.name: defaults[f.dtype] for f in VIEWS["user_activity"].fields}
    row.update(user_id="u1", top_category=top, click_count_7d=clicks, as_of=as_of)
    return row


@pytest.fixture()
def home(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path, auth_required=False, feast_project=f"t{uuid.uuid4().hex[:8]}")
    log = OfflineLog(settings.offline_dir)
    log.write_events([
        ev("offer", T - 900, text="Zen Spa massage", category="spa", attrs={"op": "create"}),
        ev("offer", T + 50, text="RENAMED after the label", category="spa", attrs={"op": "update"}),
        ev("search", T - 300, item=None, text="massage tonight", category="spa"),
        ev("view", T - 200, category="spa"),
        ev("click", T, category="spa"),  # the label
        ev("search", T + 10, item=None, text="LATER QUERY", category="food"),
        ev("click", T + 3600, item="i1", category="spa"),  # a second label, an hour on
    ])
    # Feature rows before, AT (the label's own update) and after the label: only "before" may show.
    log.write_rows("user_activity", [user_row("food", T - 100, 1), user_row("spa", T, 2),
                                     user_row("culture", T + 100, 3)])
    return settings


def test_features_and_texts_are_point_in_time(home: Settings) -> None:
    events = load_offline_events(home)
    ts = build_training_set(events, feature_store(home), T - 3600, T + 1)
    assert len(ts.rows) == 1
    row = ts.rows.iloc[0]
    # The row stamped at the label itself already counts the click: it must not leak in.
    assert row["user_activity__top_category"] == "food"
    assert row["user_activity__click_count_7d"] == 1
    assert "massage tonight" in row["context_text"] and "LATER" not in row["context_text"]
    assert row["item_text"] == "spa: Zen Spa massage"
    assert "food" in row["context_text"]  # likes food: the feature known then


def test_labels_without_any_earlier_feature_row_are_kept(home: Settings) -> None:
    events = load_offline_events(home)
    early = build_training_set(events, feature_store(home), T - 7200, T + 7200)
    assert len(early.rows) == 2
    later = early.rows.iloc[1]
    assert later["user_activity__top_category"] == "culture"  # newest row before T + 3600
    assert later["item_text"] == "spa: RENAMED after the label"


def test_impressions_are_labelled_like_the_online_learner(tmp_path: Path) -> None:
    events = [
        ev("impression", T, item="i1", attrs={"request_id": "r1"}),
        ev("click", T + 60, item="i1", attrs={"request_id": "r1"}),
        ev("impression", T, item="i2", attrs={"request_id": "r1"}),
        ev("location", T + 10_000, item=None),
        ev("impression", T + 20_000, item="i9", attrs={"request_id": "r2"}),
    ]
    log = OfflineLog(tmp_path)
    log.write_events(events)
    from offline.training_sets import prepare_events

    labels = labels_from_events(prepare_events(log.read_events()))
    imp = labels[labels["source"] == "impression"].set_index("item_id")["reward"].to_dict()
    assert imp["i1"] == 1 and imp["i2"] == 0 and imp["i9"] == 0
    assert int((labels["source"] == "engagement").sum()) == 1
    assert isinstance(labels, pd.DataFrame)
