"""Unit tests of the pure flow steps: windows, late data, lifecycle merging, supply and demand."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest

from flows.sinks import latest_per_key
from flows.steps import (
    CellDemandState,
    CellSupplyState,
    FeatureParams,
    ItemState,
    SupplyUpdate,
    UserActivityState,
    demand_key,
    is_item_event,
    is_user_feature_event,
    merge_lifecycle,
)
from kairos import geo
from kairos.schema import Event

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
PARAMS = FeatureParams(home_resolution=6, travel_km=100.0)
NYC = (40.7306, -73.9866)
MUMBAI = (19.0760, 72.8777)


def ev(n: int, kind: str, minutes: float, actor: str = "u1", **kw) -> Event:
    lat_lon = kw.pop("at", None)
    if lat_lon:
        kw.update(lat=lat_lon[0], lon=lat_lon[1], cell=geo.cell_of(*lat_lon, 8))
    actor_type = kw.pop("actor_type", "user")
    return Event(event_id=f"e{n}", ts=T0 + timedelta(minutes=minutes), actor_type=actor_type, actor_id=actor,
                 kind=kind, **kw)


def test_user_windows_count_by_event_time_and_forget_old_events():
    state = UserActivityState()
    state.update(ev(1, "view", 0, category="spa"), PARAMS)
    state.update(ev(2, "view", 30, category="spa"), PARAMS)
    row = state.update(ev(3, "click", 120, category="coffee"), PARAMS)
    assert row["view_count_1h"] == 0 and row["view_count_24h"] == 2 and row["click_count_1h"] == 1
    row = state.update(ev(4, "search", 60 * 24 * 8, category="spa"), PARAMS)  # eight days later
    assert row["view_count_7d"] == 0 and row["search_count_7d"] == 1
    assert len(state.records) == 1  # nothing outside the widest window is kept


def test_late_event_lands_in_its_own_window_not_the_latest():
    state = UserActivityState()
    state.update(ev(1, "view", 180, category="spa"), PARAMS)
    row = state.update(ev(2, "view", 90, category="spa"), PARAMS)  # arrives late, 90 min old
    assert row["as_of"] == (T0 + timedelta(minutes=180)).timestamp()
    assert row["view_count_1h"] == 1 and row["view_count_24h"] == 2


def test_affinity_spend_discount_sensitivity():
    state = UserActivityState()
    state.update(ev(1, "view", 0, category="spa"), PARAMS)
    state.update(ev(2, "purchase", 1, category="coffee", price=4.0, original_price=8.0), PARAMS)
    row = state.update(ev(3, "booking", 2, category="spa", price=60.0, original_price=60.0), PARAMS)
    affinity = json.loads(row["category_affinity"])
    assert affinity == {"coffee": round(5 / 11, 6), "spa": round(6 / 11, 6)}
    assert row["top_category"] == "spa"
    assert row["purchase_count_1h"] == 2  # bookings count as purchases
    assert row["spend_7d"] == 64.0 and row["typical_price_paid"] == 32.0
    assert row["discount_sensitivity"] == 0.5


def test_home_and_travelling():
    state = UserActivityState()
    for i in range(5):
        state.update(ev(i, "location", i * 60, at=MUMBAI), PARAMS)
    row = state.update(ev(10, "location", 600, at=NYC), PARAMS)
    assert row["home_cell"] == geo.parent_cell(geo.cell_of(*MUMBAI, 8), 6)
    assert row["travelling"] is True and row["distance_from_home_km"] > 10000
    assert (row["last_lat"], row["last_lon"]) == NYC


def test_last_location_is_by_event_time_not_arrival():
    state = UserActivityState()
    state.update(ev(1, "location", 100, at=NYC), PARAMS)
    row = state.update(ev(2, "location", 50, at=MUMBAI), PARAMS)  # older, arrives later
    assert (row["last_lat"], row["last_lon"]) == NYC


def item_ev(n: int, minutes: float, op: str = "create", **kw) -> Event:
    return ev(n, kw.pop("kind", "offer"), minutes, actor="b1", actor_type="business", item_id="i1",
              attrs={"op": op}, **kw)


def test_item_lifecycle_stats_catalog_and_supply():
    state = ItemState()
    vf, vt = T0, T0 + timedelta(hours=5)
    out = state.update(item_ev(1, 0, category="spa", price=40.0, original_price=80.0, valid_from=vf,
                               valid_to=vt, at=NYC, text="Massage — 50 % off"))
    tags = [t for t, _ in out]
    assert tags == ["item_stats", "catalog", "supply"]
    stats = out[0][1]
    assert stats["active"] is True and stats["discount"] == 0.5 and stats["time_left_s"] == 5 * 3600
    assert out[1][1].title == "Massage"
    out = state.update(item_ev(2, 10, op="update", price=30.0))  # price-only update keeps the rest
    assert out[0][1]["price"] == 30.0 and out[0][1]["category"] == "spa" and out[1][1].lat == NYC[0]
    for i, kind in enumerate(["view", "view", "click", "purchase"]):
        out = state.update(ev(10 + i, kind, 20 + i, item_id="i1"))
    assert out[0][1]["ctr_24h"] == 0.5 and out[0][1]["conversion_24h"] == 0.5
    assert [t for t, _ in out] == ["item_stats"]  # engagements do not touch the catalog
    out = state.update(item_ev(20, 30, op="delete"))
    assert out[0][1]["active"] is False and out[1][1].deleted is True


def test_merge_lifecycle_delete_then_recreate():
    merged = merge_lifecycle([(1.0, "a", "create", {"price": 5.0}), (2.0, "b", "delete", {}),
                              (3.0, "c", "create", {"price": None})])
    assert merged["deleted"] is False and merged["price"] == 5.0


def test_item_moving_cell_leaves_old_supply_cell():
    state = ItemState()
    state.update(item_ev(1, 0, category="spa", price=10.0, at=NYC))
    out = state.update(item_ev(2, 5, op="update", at=(NYC[0] + 0.05, NYC[1])))
    supply = [payload for tag, payload in out if tag == "supply"]
    assert supply[0][1].removed is True and supply[0][0][0] == geo.cell_of(*NYC, 8)
    assert supply[1][1].removed is False


def test_cell_supply_median_quartile_and_expiry():
    state = CellSupplyState()
    base = T0.timestamp()
    for i, price in enumerate([10.0, 20.0, 30.0, 40.0]):
        state.update("c|spa", SupplyUpdate(f"i{i}", base + i, price, price * 2, base, base + 3600))
    row = state.update("c|spa", SupplyUpdate("late", base + 7200, 99.0, None, base, None))
    assert row["active_items"] == 1  # the first four expired an hour in
    state2 = CellSupplyState()
    for i, price in enumerate([10.0, 20.0, 30.0, 40.0]):
        row = state2.update("c|spa", SupplyUpdate(f"i{i}", base + i, price, price * 2, base, base + 3600))
    assert row["active_items"] == 4 and row["median_price"] == 25.0 and row["p25_price"] == 17.5
    assert row["mean_discount"] == 0.5


def test_cell_demand_counts_and_distinct_users():
    state = CellDemandState()
    key = "c|spa"
    state.update(key, ev(1, "search", 0, actor="u1"))
    state.update(key, ev(2, "view", 5, actor="u2"))
    row = state.update(key, ev(3, "booking", 70, actor="u1"))
    assert row["search_count_15m"] == 0 and row["search_count_24h"] == 1
    assert row["purchase_count_15m"] == 1 and row["distinct_users_15m"] == 1 and row["distinct_users_24h"] == 2


def test_routing_predicates():
    assert is_user_feature_event(ev(1, "view", 0))
    assert not is_user_feature_event(ev(1, "profile", 0))
    assert is_item_event(item_ev(1, 0))
    assert not is_item_event(ev(1, "search", 0))
    assert demand_key(ev(1, "search", 0, category="spa", at=NYC)) == f"{geo.cell_of(*NYC, 8)}|spa"
    assert demand_key(ev(1, "search", 0, at=NYC)) is None  # no category: not a demand signal


def test_states_pickle_for_recovery():
    state = UserActivityState()
    state.update(ev(1, "view", 0, category="spa"), PARAMS)
    assert pickle.loads(pickle.dumps(state)).records == state.records


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_latest_per_key_keeps_newest_row(order):
    rows = [("item_stats", {"item_id": "i1", "as_of": float(t)}) for t in (1, 3, 2)]
    kept = latest_per_key([rows[i] for i in order])
    assert kept["item_stats"] == [{"item_id": "i1", "as_of": 3.0}]
