"""Attribution of feedback to impressions in event time: windows, watermarks, late and out-of-order data."""

from __future__ import annotations

import dataclasses
import pickle
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.attribution import (
    AttributionParams,
    AttributionState,
    LabelledExample,
    attribution_key,
    attribution_step,
    is_attribution_event,
)
from kairos.schema import Event

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
PARAMS = AttributionParams(window_s=1800, allowed_lateness_s=60, late_grace_s=3600, clock_skew_s=30)
FEATURES = {"interest": 0.8, "distance_km": 0.4, "bias": 1.0}


def imp(n: int, minutes: float, user: str = "u1", item: str = "i1", request: str | None = "r1",
        position: int = 0) -> Event:
    attrs = {"position": position, "features": FEATURES, "score_parts": {"interest": 0.8}, "ranker": "BanditRanker",
             "source": "suggestions"}
    if request is not None:
        attrs["request_id"] = request
    return Event(event_id=f"imp{n}", ts=T0 + timedelta(minutes=minutes), actor_type="user", actor_id=user,
                 kind="impression", item_id=item, attrs=attrs)


def fb(n: int, kind: str, minutes: float, user: str = "u1", item: str = "i1", request: str | None = None) -> Event:
    attrs = {"request_id": request} if request else {}
    return Event(event_id=f"fb{n}", ts=T0 + timedelta(minutes=minutes), actor_type="user", actor_id=user,
                 kind=kind, item_id=item, attrs=attrs)


def tick(n: int, minutes: float, user: str = "other") -> Event:
    """Any later impression in the shard: it moves the watermark."""
    return imp(10_000 + n, minutes, user=user, item=f"tick{n}", request=f"tick{n}")


def run(events: list[Event], params: AttributionParams = PARAMS, flush: bool = False) -> list[LabelledExample]:
    state = AttributionState()
    out = []
    for event in events:
        out += state.update(event, params)
    if flush:
        out += state.flush(params)
    return [e for e in out if not e.item_id.startswith("tick")]


def test_click_inside_the_window_is_a_positive_with_the_impression_features() -> None:
    (example,) = run([imp(1, 0), fb(1, "click", 5), tick(1, 32)])
    assert example.reward == 1 and example.outcome == "click" and not example.correction
    assert example.delay_s == pytest.approx(300.0)
    assert example.features == FEATURES and example.request_id == "r1" and example.position == 0
    assert (example.user_id, example.item_id, example.ranker, example.source) == (
        "u1", "i1", "BanditRanker", "suggestions")
    assert example.impression_ts == T0.timestamp()


def test_negative_waits_for_the_watermark_to_pass_the_window() -> None:
    state = AttributionState()
    assert state.update(imp(1, 0), PARAMS) == []
    # 30 min window + 1 min lateness: at 30.5 min of event time the window may still get feedback.
    assert state.update(tick(1, 30.5), PARAMS) == []
    assert state.pending == 2
    (example,) = [e for e in state.update(tick(2, 31), PARAMS) if e.item_id == "i1"]
    assert example.reward == 0 and example.outcome == "none" and example.delay_s is None


def test_feedback_after_the_window_does_not_count() -> None:
    (example,) = run([imp(1, 0), fb(1, "click", 31), tick(1, 40)])
    assert example.reward == 0


def test_strongest_outcome_is_kept_and_dismiss_is_an_explicit_negative() -> None:
    bought, dismissed = run([
        imp(1, 0), fb(1, "click", 1), fb(2, "purchase", 9), fb(3, "save", 4),
        imp(2, 0, item="i2", request="r1", position=1), fb(4, "dismiss", 2, item="i2"),
        tick(1, 40),
    ])
    assert (bought.item_id, bought.reward, bought.outcome, bought.delay_s) == ("i1", 1, "purchase", 60.0)
    assert (dismissed.item_id, dismissed.reward, dismissed.outcome) == ("i2", 0, "dismiss")


def test_click_after_a_dismiss_still_makes_a_positive() -> None:
    (example,) = run([imp(1, 0), fb(1, "dismiss", 1), fb(2, "click", 3), tick(1, 40)])
    assert example.reward == 1 and example.outcome == "click"


def test_feedback_arriving_before_its_impression_is_joined() -> None:
    # The click was appended before the impression (another collection, a faster client).
    (example,) = run([fb(1, "save", 3, request="r1"), imp(1, 0), tick(1, 40)])
    assert example.reward == 1 and example.outcome == "save"


def test_late_click_within_lateness_counts_normally() -> None:
    # Watermark = newest event time - 1 min: a click stamped 29 min arriving at 30.5 min is in time.
    state = AttributionState()
    state.update(imp(1, 0), PARAMS)
    state.update(tick(1, 30.5), PARAMS)
    assert state.update(fb(1, "click", 29), PARAMS) == []
    (example,) = [e for e in state.update(tick(2, 40), PARAMS) if e.item_id == "i1"]
    assert example.reward == 1 and not example.correction


def test_click_later_than_the_lateness_emits_a_correction() -> None:
    state = AttributionState()
    state.update(imp(1, 0), PARAMS)
    (negative,) = [e for e in state.update(tick(1, 45), PARAMS) if e.item_id == "i1"]
    assert negative.reward == 0
    (correction,) = state.update(fb(1, "click", 20), PARAMS)  # happened at 20 min, arrived at 45+
    assert correction.reward == 1 and correction.correction and correction.impression_id == negative.impression_id
    assert correction.delay_s == pytest.approx(1200.0)
    assert state.update(fb(2, "purchase", 21), PARAMS) == []  # one correction per impression
    assert state.stats["corrections"] == 1


def test_click_later_than_the_grace_is_dropped_and_counted() -> None:
    state = AttributionState()
    state.update(imp(1, 0), PARAMS)
    state.update(tick(1, 200), PARAMS)  # far beyond window + grace: the impression is forgotten
    assert state.update(fb(1, "click", 10), PARAMS) == []
    state.update(tick(2, 400), PARAMS)
    assert state.stats["unattributed_feedback"] == 1
    key = ("u1", "i1")
    assert key not in state.open and key not in state.closed and key not in state.orphans  # bounded state


def test_feedback_naming_a_request_goes_to_that_requests_impression() -> None:
    first, second = run([
        imp(1, 0, request="r1"), imp(2, 10, request="r2"),
        fb(1, "click", 12, request="r1"),  # clicked in the older response still on screen
        tick(1, 50),
    ])
    assert (first.request_id, first.reward) == ("r1", 1)
    assert (second.request_id, second.reward) == ("r2", 0)


def test_feedback_without_request_goes_to_the_last_touch() -> None:
    first, second = run([imp(1, 0, request="r1"), imp(2, 10, request="r2"), fb(1, "click", 12), tick(1, 50)])
    assert (first.reward, second.reward) == (0, 1)


def test_feedback_naming_a_request_whose_impression_is_late_waits_for_it() -> None:
    examples = run([imp(1, 0, request="r1"), fb(1, "click", 6, request="r2"), imp(2, 5, request="r2"),
                    tick(1, 50)])
    assert {(e.request_id, e.reward) for e in examples} == {("r1", 0), ("r2", 1)}


def test_duplicate_impressions_and_replayed_feedback_count_once() -> None:
    server, app = imp(1, 0.5, request="r1"), imp(2, 0, request="r1")  # both report the same sighting
    click = fb(1, "click", 3)
    state = AttributionState()
    out = []
    for event in (server, app, click, click, tick(1, 40)):
        out += state.update(event, PARAMS)
    (example,) = [e for e in out if e.item_id == "i1"]
    assert example.reward == 1 and example.impression_ts == T0.timestamp()  # the earliest sighting
    assert state.stats["duplicate_impressions"] == 1 and state.stats["duplicate_feedback"] == 1


def test_clock_skew_tolerance() -> None:
    ok, too_early = run([
        imp(1, 0, item="a"), fb(1, "click", -0.4, item="a"),  # phone clock 24 s behind the server
        imp(2, 0, item="b"), fb(2, "click", -5, item="b"),  # 5 min before it was shown: not this one
        tick(1, 40),
    ])
    assert (ok.item_id, ok.reward) == ("a", 1)
    assert (too_early.item_id, too_early.reward) == ("b", 0)


def test_flush_closes_everything_and_users_and_items_are_kept_apart() -> None:
    examples = run([imp(1, 0, user="u1"), imp(2, 0, user="u2"), fb(1, "click", 1, user="u2"),
                    fb(2, "click", 1, user="u1", item="other")], flush=True)
    assert {(e.user_id, e.reward) for e in examples} == {("u1", 0), ("u2", 1)}


def test_events_that_are_not_impressions_or_feedback_are_ignored() -> None:
    ping = Event(event_id="p", ts=T0 + timedelta(hours=5), actor_type="user", actor_id="u1", kind="location")
    view = Event(event_id="v", ts=T0 + timedelta(hours=5), actor_type="user", actor_id="u1", kind="view", item_id="i1")
    assert not is_attribution_event(ping) and not is_attribution_event(view)
    state = AttributionState()
    state.update(imp(1, 0), PARAMS)
    assert state.update(ping, PARAMS) == [] and state.update(view, PARAMS) == []
    assert state.pending == 1  # a ping's time must not move the watermark (collections race)


def test_attribution_key_is_stable_and_spreads_users() -> None:
    keys = {attribution_key(imp(i, 0, user=f"u{i}"), 8) for i in range(200)}
    assert keys == {f"shard{k}" for k in range(8)}
    assert attribution_key(imp(1, 0, user="u7"), 8) == attribution_key(fb(9, "click", 3, user="u7"), 8)
    assert attribution_key(imp(1, 0, user="u7"), 8) == "shard" + str(__import__("zlib").crc32(b"u7") % 8)


def test_state_pickles_mid_stream_and_resumes_identically() -> None:
    events = [imp(1, 0), imp(2, 1, item="i2", request="r2"), fb(1, "click", 2), tick(1, 20),
              fb(2, "save", 25, item="i3"), tick(2, 45), fb(3, "click", 10, item="i2")]
    state = AttributionState()
    straight = []
    for event in events:
        straight += state.update(event, PARAMS)
    state, resumed = AttributionState(), []
    for k, event in enumerate(events):
        if k == 3:
            state = pickle.loads(pickle.dumps(state))
        state, out = attribution_step(PARAMS, state, event)
        resumed += out
    assert resumed == straight
    assert [(e.item_id, e.reward, e.correction) for e in resumed] == [
        ("i1", 1, False), ("i2", 0, False), ("i2", 1, True)]


def test_labelled_example_row_is_flat() -> None:
    (example,) = run([imp(1, 0), fb(1, "click", 5), tick(1, 32)])
    row = example.to_row()
    assert isinstance(row["features"], str) and isinstance(row["score_parts"], str)
    assert row["reward"] == 1 and row["user_id"] == "u1"


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="window_s"):
        AttributionParams(window_s=0)
    with pytest.raises(ValueError, match="shards"):
        AttributionParams(shards=0)

    class FromEnv:
        attribution_window_s = 600.0
        attribution_shards = 4

    params = AttributionParams.from_settings(FromEnv())
    assert params.window_s == 600.0 and params.shards == 4 and params.allowed_lateness_s == 300.0


# -- property: streaming with disorder within the lateness equals the batch definition ---------------


@settings(max_examples=60, deadline=None)
@given(
    impressions=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(0, 240)), min_size=1,
                         max_size=25),
    feedback=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(-5, 300),
                                st.sampled_from(["click", "save", "purchase", "dismiss"])), max_size=30),
    seed=st.integers(0, 10_000),
)
def test_streaming_join_matches_the_batch_definition(impressions, feedback, seed) -> None:
    params = AttributionParams(window_s=1800, allowed_lateness_s=120, late_grace_s=3600, clock_skew_s=30)
    # One impression per (user, item) keeps the batch definition unambiguous (no last touch needed).
    seen, imps = set(), []
    for n, (u, i, minutes) in enumerate(impressions):
        if (u, i) not in seen:
            seen.add((u, i))
            imps.append(imp(n, minutes, user=f"u{u}", item=f"i{i}", request=f"r{n}"))
    fbs = [fb(n, kind, minutes, user=f"u{u}", item=f"i{i}") for n, (u, i, minutes, kind) in enumerate(feedback)]
    # Arrival order: event time plus a random delay of at most the allowed lateness.
    rng = random.Random(seed)
    events = sorted(imps + fbs, key=lambda e: e.ts.timestamp() + rng.uniform(0, params.allowed_lateness_s))
    state = AttributionState()
    out = []
    for event in events:
        out += state.update(event, params)
    out += state.flush(params)

    assert not any(e.correction for e in out)
    got = {(e.user_id, e.item_id): e.reward for e in out}
    expected = {}
    for i in imps:
        t = i.ts.timestamp()
        expected[(i.actor_id, i.item_id)] = int(any(
            f.actor_id == i.actor_id and f.item_id == i.item_id and f.kind != "dismiss"
            and t - params.clock_skew_s <= f.ts.timestamp() <= t + params.window_s for f in fbs))
    assert got == expected
    assert len(out) == len(imps)  # every impression labelled exactly once


# -- in a Bytewax flow: shards, the learner sink, publishing -------------------------------------------


def test_flow_labels_impressions_and_the_learner_sink_publishes_the_bandit(tmp_path) -> None:
    from functools import partial

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    from flows.attribution import LearnerSink
    from kairos.config import Settings
    from online.bandit import BanditRanker, feature_names
    from online.model_state import FileModelStateStore

    features = dict.fromkeys(feature_names()[:5], 0.5) | {"bias": 1.0}
    events = []
    for n in range(40):  # 40 users, one impression each; every third clicks
        user = f"user{n}"
        event = imp(n, n * 0.1, user=user, request=f"r{n}")
        events.append(Event(**{**{f: getattr(event, f) for f in Event.__dataclass_fields__},
                               "attrs": {**event.attrs, "features": features}}))
        if n % 3 == 0:
            events.append(fb(n, "click", n * 0.1 + 2, user=user))
    # Later traffic in every shard moves the watermarks past all the windows.
    events += [imp(500 + k, 120, user=f"late{k}", item="late", request=f"late{k}") for k in range(200)]

    params = AttributionParams(window_s=1800, allowed_lateness_s=60, shards=4)
    settings = Settings(home=tmp_path)
    collected: list = []
    flow = Dataflow("attribution_test")
    stream = op.input("events", flow, TestingSource(events))
    keyed = op.key_on("by_shard", op.filter("attributable", stream, is_attribution_event),
                      partial(attribution_key, shards=params.shards))
    examples = op.flat_map_value("examples", op.stateful_map("attribution", keyed, partial(attribution_step, params)),
                                 lambda xs: xs)
    examples = op.key_rm("unkeyed", examples)
    op.output("collect", examples, TestingSink(collected))
    op.output("learn", op.key_on("to_learner", examples, lambda e: "bandit"),
              LearnerSink(settings, publish_interval_s=0.05))
    run_main(flow)

    labelled = [e for e in collected if e.item_id == "i1"]
    assert len(labelled) == 40
    assert {e.user_id for e in labelled if e.reward} == {f"user{n}" for n in range(0, 40, 3)}
    version, model = FileModelStateStore(tmp_path / "models").load("bandit")
    assert isinstance(model, BanditRanker) and version >= 1
    assert model.n_seen == 40  # the later impressions are still inside their windows


def test_learner_publishes_within_its_interval_even_when_feedback_stops(tmp_path) -> None:
    import time

    from flows.attribution import LearnerPartition
    from online.bandit import BanditRanker
    from online.model_state import FileModelStateStore

    class Flaky(FileModelStateStore):
        down = True

        def publish(self, name, obj):
            if self.down:
                raise ConnectionError("store is down")
            return super().publish(name, obj)

    store = Flaky(tmp_path)
    partition = LearnerPartition(store, "bandit", BanditRanker(), publish_interval_s=0.05)
    try:
        examples = run([imp(1, 0), fb(1, "click", 1), imp(2, 0, item="i2"), tick(1, 40)])
        searched = [dataclasses.replace(e, source="search") for e in examples]
        partition.write_batch(examples + searched)  # then nothing more arrives
        time.sleep(0.2)
        assert store.latest_version("bandit") is None  # the store is down: retried, not lost
        store.down = False
        deadline = time.monotonic() + 2.0
        while store.latest_version("bandit") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        version, model = store.load("bandit")
        assert model.n_seen == 2 and time.monotonic() < deadline  # search impressions taught nothing
        resumed = pickle.loads(partition.snapshot())
        assert resumed.n_seen == 2 and resumed.model.weights == model.model.weights
    finally:
        partition.close()
    assert store.latest_version("bandit") == version  # nothing new to publish at close


def test_state_stays_bounded_on_a_long_stream() -> None:
    # Ten hours of traffic, an impression every 2 s from 500 users, a click on every 7th.
    state, emitted = AttributionState(), 0
    for n in range(18_000):
        minutes = n * 2 / 60
        user, item = f"u{n % 500}", f"i{n % 37}"
        emitted += len(state.update(imp(n, minutes, user=user, item=item, request=f"r{n}"), PARAMS))
        if n % 7 == 0:
            emitted += len(state.update(fb(n, "click", minutes + 0.5, user=user, item=item, request=f"r{n}"),
                                        PARAMS))
    # Only the last window (30 min + 1 min lateness = 930 impressions) is still open, and only the
    # last window + grace of closed impressions is kept for corrections.
    assert state.pending <= 31 * 30 + 1
    assert sum(len(v) for v in state.closed.values()) <= (30 + 60) * 30 + 1
    assert len(state.due) <= 2 * (state.pending + sum(len(v) for v in state.closed.values())) + 10
    assert emitted + state.pending == 18_000
    assert state.stats["positives"] > 0 and state.stats["negatives"] > 0
