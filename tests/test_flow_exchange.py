"""What the feature flow ships between processes: cheap and lossless.

Events pickle through :meth:`Event.__reduce__` (times as integer microseconds); the user and demand
steps get slim slices of events; the offline sinks are keyed to a part in the same process.
"""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest

from flows import sinks
from flows.sinks import OfflineLogSink
from flows.steps import (
    CellDemandState,
    FeatureParams,
    UserActivityState,
    demand_record,
    split_key,
    user_signal,
)
from kairos.config import Settings
from kairos.schema import Event

T0 = datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=timezone.utc)


def event(n: int, kind: str = "click", **kw: object) -> Event:
    base: dict[str, object] = dict(event_id=f"e{n}", ts=T0 + timedelta(minutes=n, microseconds=n), actor_type="user",
                                   actor_id="u1", kind=kind, collection="behaviours", item_id="i1",
                                   category="coffee", lat=19.1, lon=72.8, cell="88608b090bfffff", price=120.0,
                                   original_price=200.0, currency="INR", text="flat white", attrs={"a": [1, {"b": 2}]})
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("ev", [
    event(1),
    event(2, valid_from=T0, valid_to=T0 + timedelta(days=3, microseconds=999_999)),
    # Times before the epoch, and in other zones or naive, survive as they were.
    event(3, ts=datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=timezone.utc)),
    event(4, ts=datetime(2026, 3, 1, 17, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    event(5, ts=datetime(2026, 3, 1, 12, 0), item_id=None, category=None, lat=None, lon=None, cell=None,
          price=None, original_price=None, currency=None, text=None, attrs={}),
])
def test_event_pickles_losslessly(ev: Event) -> None:
    back = pickle.loads(pickle.dumps(ev, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == ev
    assert back.ts.tzinfo == ev.ts.tzinfo and back.ts.utcoffset() == ev.ts.utcoffset()
    assert (back.valid_to.tzinfo if back.valid_to else None) == (ev.valid_to.tzinfo if ev.valid_to else None)


def test_event_pickle_is_smaller_than_the_dataclass_default() -> None:
    ev = event(1, valid_from=T0, valid_to=T0)
    default = pickle.dumps((Event, tuple(getattr(ev, f) for f in Event.__dataclass_fields__)))
    assert len(pickle.dumps(ev)) < len(default)


def test_user_signal_folds_like_the_event() -> None:
    params = FeatureParams()
    events = [event(3, "location"), event(1, "purchase"), event(2, "view", lat=None, lon=None)]
    by_event, by_signal = UserActivityState(), UserActivityState()
    for ev in events:
        by_event.update(ev, params)
        by_signal.add_signal(pickle.loads(pickle.dumps(user_signal(ev, params))))
    assert by_signal == by_event
    assert by_signal.row("u1", params) == by_event.row("u1", params)
    assert by_signal.row("u1", params)["purchase_count_1h"] == 1


def test_demand_record_folds_like_the_event() -> None:
    by_event, by_record = CellDemandState(), CellDemandState()
    for ev in (event(2, "search"), event(1, "booking", actor_id="u2")):
        by_event.update("c|coffee", ev)
        by_record.add_record(demand_record(ev))
    assert by_record == by_event
    assert by_record.row("c|coffee")["distinct_users_1h"] == 2


def test_offline_sink_keys_to_parts_built_in_this_process(tmp_path: Path) -> None:
    sink = OfflineLogSink(Settings(home=tmp_path), "kzg_test_events")
    # Nothing built here yet: the fallback key, hashed to some part as Bytewax would.
    assert sink.key("e1") == "e1"
    assert 0 <= sink.part_fn("e1") % len(sink.PARTS) < len(sink.PARTS)
    parts = [sink.build_part("offline", p, None) for p in ("part2", "part0")]
    try:
        keys = {sink.key(f"e{n}") for n in range(200)}
        assert keys == {"part0", "part2"}  # only local parts, both used
        assert sink.key("e7") == sink.key("e7")
        # A part name routes to that part in Bytewax's sorted set of parts.
        assert [sink.part_fn(p) for p in sorted(sink.PARTS)] == list(range(len(sink.PARTS)))
    finally:
        for part in parts:
            part.close()
    assert sink.key("e1") == "e1"  # closed parts are forgotten
    assert not sinks._LOCAL_PARTS["kzg_test_events"]


def test_signals_are_grouped_per_key_and_batch_in_arrival_order() -> None:
    from flows.dataflow import _demand, _demand_signal, _item_event, _user_activity, _user_signal
    from flows.steps import ItemState, group_by_key

    params = FeatureParams()
    batch = [event(3, "location"), event(1, "purchase", actor_id="u2"), event(2, "view"),
             event(4, "offer", actor_type="business", actor_id="b1", item_id="i9", attrs={"op": "create"})]
    users = group_by_key(batch, partial(_user_signal, params))
    assert [key for key, _ in users] == ["u1", "u2"]  # one item per user, whatever its events
    assert [s[1][1] for s in users[0][1]] == ["e3", "e2"]  # in arrival order
    # Folding the groups (as they arrive in batches, pickled) gives what folding each event gives.
    for key, signals in users:
        grouped, one_by_one = UserActivityState(), UserActivityState()
        groups = [pickle.loads(pickle.dumps(signals[:1]))] + ([signals[1:]] if len(signals) > 1 else [])
        _user_activity(params, grouped, groups)
        for ev in batch:
            if ev.actor_id == key and ev.actor_type == "user":
                one_by_one.update(ev, params)
        assert grouped == one_by_one

    demand = dict(group_by_key(batch, _demand_signal))
    assert all(signal[0] == key for key, signals in demand.items() for signal in signals)
    key = next(iter(demand))
    [(view, row)] = _demand(CellDemandState(), [demand[key]])
    assert view == "cell_demand" and (row["cell"], row["category"]) == split_key(key)

    items = dict(group_by_key(batch, _item_event))
    assert set(items) == {"i1", "i9"} and [e.event_id for e in items["i1"]] == ["e1", "e2"]  # a location names no item
    assert [tag for tag, _ in ItemState().update_batch(items["i9"])] == ["item_stats", "catalog", "supply"]


def test_events_table_is_the_row_by_row_table() -> None:
    import pyarrow as pa

    from kairos.stores.offline_log import EVENT_SCHEMA, events_table

    events = [event(1), event(2, valid_from=T0, valid_to=T0 + timedelta(days=1)),
              event(5, item_id=None, category=None, lat=None, lon=None, cell=None, price=None, original_price=None,
                    currency=None, text=None, attrs={"z": 1, "a": T0})]
    assert events_table(events).equals(pa.Table.from_pylist([e.to_row() for e in events], schema=EVENT_SCHEMA))


def test_feature_rows_table_stamps_as_of_to_the_microsecond() -> None:
    from kairos.stores.offline_log import rows_table

    rows = [{"user_id": "u1", "as_of": 1_700_000_000.123456, "spend_7d": 3.5},
            {"user_id": "u2", "as_of": 1_700_000_001.000001, "top_category": "spa"}]
    table = rows_table("user_activity", rows).to_pylist()
    assert [r["event_timestamp"] for r in table] == [
        datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc),
        datetime(2023, 11, 14, 22, 13, 21, 1, tzinfo=timezone.utc)]
    assert table[0]["spend_7d"] == 3.5 and table[0]["top_category"] is None  # missing fields are null
    assert table[1]["top_category"] == "spa"


def test_flow_gc_tuning_freezes_and_restores() -> None:
    import gc

    from flows.gc_tuning import tuned_gc

    before = gc.get_threshold()
    with tuned_gc(Settings(flow_gc_threshold=12345)):
        assert gc.get_threshold()[0] == 12345
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    with tuned_gc(Settings(flow_gc_threshold=0)):  # 0: Python's collector, untouched
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
