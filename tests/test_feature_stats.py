"""The pure functions behind /v1/features: catalog, keys, as-of history, histograms, PSI drift, map."""

from __future__ import annotations

import math

import h3
import numpy as np
import pandas as pd
import pytest

from kairos import feature_stats as fs
from kairos.features import CELL_DEMAND, ITEM_STATS, USER_ACTIVITY, VIEWS
from kairos.geo import cell_of

T0 = pd.Timestamp("2026-05-01T12:00:00Z")
CELL = cell_of(40.758, -73.9855, 8)


def rows(*items: tuple[str, pd.Timestamp, int]) -> pd.DataFrame:
    """item_stats rows ``(item_id, event time, view_count_24h)`` in write order."""
    return pd.DataFrame([{"item_id": i, fs.TS: t, "view_count_24h": v, "as_of": t.timestamp()} for i, t, v in items])


def test_catalog_has_every_view_with_fields_windows_and_freshness() -> None:
    catalog = {v["name"]: v for v in fs.build_catalog(VIEWS.values(), {"user_id": "a person"})}
    assert list(catalog) == list(VIEWS)
    user = catalog["user_activity"]
    assert user["entities"] == [{"name": "user_id", "description": "a person"}]
    assert [w["name"] for w in user["windows"]] == ["1h", "24h", "7d"]
    assert user["freshness_objective_s"] == USER_ACTIVITY.freshness_s
    fields = {f["name"]: f for f in user["fields"]}
    assert fields["spend_7d"] == {"name": "spend_7d", "dtype": "float", "description": "sum of prices paid, 7d",
                                  "window": "7d"}
    assert fields["top_category"]["window"] is None
    assert catalog["cell_demand"]["key_format"] == "cell:category"
    assert catalog["cell_supply"]["windows"] == []


def test_parse_key_accepts_real_keys_and_says_what_is_wrong() -> None:
    assert fs.parse_key(USER_ACTIVITY, "u:1.x") == {"user_id": "u:1.x"}  # ':' is allowed in user ids
    assert fs.parse_key(CELL_DEMAND, f"{CELL}:spa", 8) == {"cell": CELL, "category": "spa"}
    with pytest.raises(fs.BadKey, match="2 parts"):
        fs.parse_key(CELL_DEMAND, CELL)
    with pytest.raises(fs.BadKey, match="not an H3 cell"):
        fs.parse_key(CELL_DEMAND, "zzz:spa")
    with pytest.raises(fs.BadKey, match="resolution 7"):
        fs.parse_key(CELL_DEMAND, f"{h3.cell_to_parent(CELL, 7)}:spa", 8)
    with pytest.raises(fs.BadKey, match="not one of"):
        fs.parse_key(CELL_DEMAND, f"{CELL}:casino")
    with pytest.raises(fs.BadKey, match="must match"):
        fs.parse_key(USER_ACTIVITY, "has space")
    with pytest.raises(fs.BadKey, match="must match"):
        fs.parse_key(ITEM_STATS, "tab\there")


def test_live_values_carry_event_time_and_age() -> None:
    row = {"item_id": "i1", "as_of": T0.timestamp(), "price": 9.5, "discount": math.nan, "view_count_24h": 3}
    live = fs.live_values(ITEM_STATS, row, now_s=T0.timestamp() + 90)
    assert live["key"] == {"item_id": "i1"} and live["age_s"] == 90 and live["fresh"] is False  # objective 60 s
    values = {v["name"]: v for v in live["values"]}
    assert "as_of" not in values
    assert values["price"]["value"] == 9.5 and values["price"]["age_s"] == 90
    assert values["price"]["event_time"] == "2026-05-01T12:00:00+00:00"
    assert values["discount"]["value"] is None  # NaN is "no value"
    assert values["view_count_24h"]["window"] == "24h"
    assert fs.live_values(ITEM_STATS, row, now_s=T0.timestamp() + 30)["fresh"] is True


def test_as_of_is_the_latest_row_at_or_before_t_and_the_last_written_of_a_tie() -> None:
    h = pd.Timedelta(hours=1)
    log = rows(("i1", T0 + 2 * h, 5), ("i1", T0, 1), ("i1", T0 + h, 2), ("i1", T0 + h, 3))  # late fold: 2 -> 3
    assert fs.as_of(log, T0 - h) is None
    assert fs.as_of(log, T0)["view_count_24h"] == 1
    assert fs.as_of(log, T0 + h)["view_count_24h"] == 3
    assert fs.as_of(log, T0 + 90 * pd.Timedelta(minutes=1))["view_count_24h"] == 3
    assert fs.as_of(log, T0 + 5 * h)["view_count_24h"] == 5

    history = fs.key_history(log, start=T0 + 30 * pd.Timedelta(minutes=1), end=T0 + 3 * h, at=T0 + h, limit=10)
    assert [r["view_count_24h"] for r in history["rows"]] == [3, 5]
    assert history["in_force_at_start"]["view_count_24h"] == 1
    assert history["at"]["row"]["view_count_24h"] == 3
    assert history["first_event_time"] == T0.isoformat()
    limited = fs.key_history(log, limit=1)
    assert limited["truncated"] and [r["view_count_24h"] for r in limited["rows"]] == [5]


def test_histogram_integer_bins_equal_width_bins_and_empty() -> None:
    ints = fs.histogram(pd.Series([0, 0, 1, 3]), "int")
    assert [(b["from"], b["count"]) for b in ints] == [(0, 2), (1, 1), (2, 0), (3, 1)]
    floats = fs.histogram(pd.Series([0.0, 0.5, 1.0, np.nan, np.inf]), "float", bins=2)
    assert [(b["from"], b["to"], b["count"]) for b in floats] == [(0.0, 0.5, 1), (0.5, 1.0, 2)]
    assert fs.histogram(pd.Series([], dtype=float), "float") == []
    assert fs.histogram(pd.Series([4.0, 4.0]), "float") == [{"from": 4.0, "to": 4.0, "count": 2}]


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    before = pd.Series(rng.normal(0, 1, 2000))
    same = pd.Series(rng.normal(0, 1, 2000))
    shifted = pd.Series(rng.normal(1.5, 1, 2000))
    assert fs.psi_numeric(before, same) < 0.05
    assert fs.psi_numeric(before, shifted) > 1.0
    # Values that start coming back empty are drift too.
    emptied = pd.Series(np.where(rng.random(2000) < 0.5, np.nan, rng.normal(0, 1, 2000)))
    assert fs.psi_numeric(before, emptied) > fs.PSI_MAJOR
    assert fs.psi_numeric(pd.Series([], dtype=float), same) is None
    cats_before = pd.Series(["spa"] * 50 + ["food"] * 50)
    assert fs.psi_categorical(cats_before, pd.Series(["spa"] * 50 + ["food"] * 50)) == pytest.approx(0.0)
    assert fs.psi_categorical(cats_before, pd.Series(["spa"] * 90 + ["food"] * 10)) > fs.PSI_MAJOR


def test_drift_words_levels_and_not_enough_data() -> None:
    assert fs.drift_words(0.02, 100, 100, 7)["level"] == "stable"
    assert fs.drift_words(0.15, 100, 100, 7)["level"] == "moderate"
    major = fs.drift_words(0.6, 100, 100, 7)
    assert major["level"] == "major" and "changed" in major["words"]
    few = fs.drift_words(0.6, 3, 100, 7)
    assert few["psi"] is None and few["level"] == "unknown" and "3 in the 7 days before" in few["words"]


def test_view_stats_counts_each_entity_once_and_flags_a_shift() -> None:
    day = pd.Timedelta(days=1)
    items = []
    for i in range(40):
        # Previous week: prices around 10; this week around 30, each item written twice this week.
        items.append({"item_id": f"i{i}", fs.TS: T0 - 10 * day, "price": 10.0 + i % 3, "category": "spa"})
        items.append({"item_id": f"i{i}", fs.TS: T0 - 2 * day, "price": 99.0, "category": "spa"})
        items.append({"item_id": f"i{i}", fs.TS: T0 - day, "price": 30.0 + i % 3,
                      "category": "spa" if i % 2 else None})
    frame = pd.DataFrame(items)
    frame["as_of"] = frame[fs.TS].map(pd.Timestamp.timestamp)
    stats = fs.view_stats(ITEM_STATS, frame)
    assert stats["reference_time"] == (T0 - day).isoformat()
    assert stats["entities_current"] == 40 and stats["entities_previous"] == 40
    fields = {f["name"]: f for f in stats["fields"]}
    price = fields["price"]
    assert price["count"] == 40 and price["summary"]["min"] == 30.0  # the last row of each item, not 99
    assert sum(b["count"] for b in price["histogram"]) == 40
    assert price["drift"]["level"] == "major"
    category = fields["category"]
    assert category["null_rate"] == 0.5 and category["top_values"] == [{"value": "spa", "count": 20}]
    assert category["drift"]["level"] == "major"  # half of them lost their category
    assert fields["view_count_24h"]["null_rate"] == 1.0  # never written: all missing, no crash
    assert "as_of" not in fields


def test_view_stats_on_an_empty_log_says_so() -> None:
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in [*ITEM_STATS.field_names, "item_id"]})
    empty[fs.TS] = pd.Series(dtype="datetime64[us, UTC]")
    stats = fs.view_stats(ITEM_STATS, empty)
    assert stats["reference_time"] is None and stats["entities_current"] == 0 and stats["note"]
    assert all(f["count"] == 0 and f["null_rate"] is None for f in stats["fields"])
    assert all(f["drift"]["level"] == "unknown" for f in stats["fields"])


def test_cell_map_sums_counts_over_categories_and_groups_cities() -> None:
    ny = [cell_of(40.75 + 0.01 * k, -73.98, 8) for k in range(3)]
    mumbai = cell_of(19.07, 72.88, 8)
    log = pd.DataFrame([
        {"cell": ny[0], "category": "spa", "view_count_24h": 1, fs.TS: T0},
        {"cell": ny[0], "category": "spa", "view_count_24h": 4, fs.TS: T0 + pd.Timedelta(minutes=5)},  # newer
        {"cell": ny[0], "category": "food", "view_count_24h": 2, fs.TS: T0},
        {"cell": ny[1], "category": "food", "view_count_24h": 1, fs.TS: T0},
        {"cell": ny[2], "category": "food", "view_count_24h": 1, fs.TS: T0},
        {"cell": mumbai, "category": "spa", "view_count_24h": 3, fs.TS: T0},
    ])
    values = fs.cell_values(log, "int", "view_count_24h", None)
    assert values == {ny[0]: 6.0, ny[1]: 1.0, ny[2]: 1.0, mumbai: 3.0}
    assert fs.cell_values(log, "int", "view_count_24h", "spa") == {ny[0]: 4.0, mumbai: 3.0}
    body = fs.cell_map(values)
    assert [a["cells"] for a in body["areas"]] == [3, 1]  # New York (total 8) before Mumbai (3)
    assert {c["cell"] for c in body["cells"]} == set(ny) and body["max_value"] == 6.0
    assert all(len(c["boundary"]) == 6 for c in body["cells"])
    south, north = body["bounds"]["south"], body["bounds"]["north"]
    assert all(south <= lat <= north for c in body["cells"] for lat, _ in c["boundary"])
    assert fs.cell_map(values, area=1)["cells"][0]["cell"] == mumbai
    with pytest.raises(IndexError):
        fs.cell_map(values, area=2)
    assert fs.cell_map({})["cells"] == []
