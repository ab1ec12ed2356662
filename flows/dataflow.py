"""The two flows over the event store: features, and learning.

* The **feature flow** (:func:`build_flow`): decode → keyed event-time features → Feast online
  store, offline log, catalog; bad documents → dead letters. It is the freshness-critical path, so
  nothing else runs in it.
* The **learning flow** (:func:`build_learning_flow`): the same source decoded again → attribution
  (impressions ⋈ feedback) → bandit, next intent and taste embeddings, market model. Each learner is
  one partition (one model learns from everyone), which caps a flow's speed: in the feature flow they
  held its throughput below 1,500 events/s and its freshness p99 at 13 s.

``kairos flow run`` runs the feature flow in process and the learning flow as a process of its own
(``KAIROS_LEARNERS=0``: features only). Under Bytewax's runner (settings from ``KAIROS_*``):
``python -m bytewax.run "flows.dataflow:flow_from_env()"`` and
``python -m bytewax.run "flows.dataflow:learning_flow_from_env()"``, each with its own recovery
directory.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.attribution import (
    AttributionParams,
    LearnerSink,
    attribution_key,
    attribution_step,
    is_attribution_event,
)
from flows.gc_tuning import tune_gc
from flows.keyed_state import keyed_fold
from flows.learners import MarketModelSink, UserLearnersSink, is_learner_event
from flows.sinks import CatalogSink, DeadLetterSink, FeatureRow, OfflineLogSink, OnlineFeatureSink
from flows.source import EventStoreSource, bytewax_recovery_dir, with_recorded_shards
from flows.steps import (
    CellDemandState,
    CellSupplyState,
    FeatureParams,
    ItemState,
    SupplyUpdate,
    UserActivityState,
    UserSignal,
    demand_key,
    demand_record,
    group_by_key,
    is_item_event,
    is_user_feature_event,
    supply_key,
    user_signal,
)
from kairos.config import Settings
from kairos.decoding import decode, load_mappings
from kairos.features import VIEWS
from kairos.replay import REPLAY_COLLECTION, unwrap
from kairos.schema import DeadLetter, Event
from kairos.stores.event_store import SourceRecord, open_event_store
from kairos.stores.online_features import OnlineFeatures


def _user_activity(params: FeatureParams, state: UserActivityState,
                   groups: list[list[UserSignal]]) -> list[FeatureRow]:
    for signals in groups:
        for signal in signals:
            state.add_signal(signal)
    return [("user_activity", state.row(groups[-1][-1][0], params))]


def _user_signal(params: FeatureParams, event: Event) -> tuple[str, UserSignal] | None:
    return (event.actor_id, user_signal(event, params)) if is_user_feature_event(event) else None


DemandSignal = tuple[str, tuple[float, str, str | None, str]]  # (cell|category key, demand record)


def _demand_signal(event: Event) -> tuple[str, DemandSignal] | None:
    key = demand_key(event)
    return (key, (key, demand_record(event))) if key else None


def _demand(state: CellDemandState, groups: list[list[DemandSignal]]) -> list[FeatureRow]:
    for signals in groups:
        for _, record in signals:
            state.add_record(record)
    return [("cell_demand", state.row(groups[-1][-1][0]))]


def _item_event(event: Event) -> tuple[str, Event] | None:
    return (event.item_id, event) if is_item_event(event) else None  # is_item_event: it has an item_id


def _item_update(state: ItemState, groups: list[list[Event]]) -> list[tuple[str, Any]]:
    return state.update_batch([event for events in groups for event in events])


def _supply(state: CellSupplyState, keyed: list[tuple[str, SupplyUpdate]]) -> list[FeatureRow]:
    for _, change in keyed:
        state.apply(change)
    return [("cell_supply", state.row(keyed[-1][0]))]


def decode_record(record: SourceRecord, mappings: dict[str, Any], h3_resolution: int) -> Event | DeadLetter:
    """Decode a record (unwrapping a dead-letter replay envelope first)."""
    return decode(unwrap(record), mappings, h3_resolution)


def row_key(view_row: tuple[str, dict[str, Any]]) -> str:
    view, row = view_row
    return "|".join([view, *(str(row[e]) for e in VIEWS[view].entities)])


def collections_to_read(settings: Settings, mappings: dict[str, Any]) -> list[str]:
    """Every mapped collection, the dead-letter replay collection, and any other the store holds
    (those dead-letter, never vanish)."""
    store = open_event_store(settings)
    try:
        return sorted(set(mappings) | set(store.collections()) | {REPLAY_COLLECTION})
    finally:
        store.close()


def decoded_events(flow: Dataflow, settings: Settings, follow: bool, record_dead_letters: bool = True) -> Any:
    """Source → decode; dead letters to their log; returns the stream of canonical events."""
    mappings = load_mappings(settings.collections_file or None)
    records = op.input("event_store", flow, EventStoreSource(settings, collections_to_read(settings, mappings),
                                                            follow=follow, batch_size=settings.source_batch_size,
                                                            shards=settings.source_shards))
    decoded = op.map("decode", records, partial(decode_record, mappings=mappings,
                                                h3_resolution=settings.h3_resolution))
    split = op.branch("valid_or_dead", decoded, lambda x: isinstance(x, Event))
    if record_dead_letters:
        op.output("deadletters", split.falses, DeadLetterSink(settings))
    return split.trues


def add_feature_steps(events: Any, settings: Settings) -> None:
    """Keyed event-time features → Feast online store, offline log and catalog."""
    params = FeatureParams.from_settings(settings)
    # Offline sinks: keyed to a part in this process (OfflineLogSink.key), so nothing crosses.
    offline_events = OfflineLogSink(settings, "events")
    op.output("offline_events", op.key_on("by_event_id", events, lambda e: offline_events.key(e.event_id)),
              offline_events)

    # The user and demand steps get only the slice of an event they fold in (built here, on the
    # worker that decoded it), not the event: with several processes every keyed step ships its
    # input to the key's owner, and a whole Event (attrs, text, datetimes) pickles ~10x slower.
    # Each keyed step gets, per key, one list of what a batch holds for it (a combiner, as in
    # MapReduce), not one item per event: with several processes, Bytewax pickles and ships every
    # item to its key's owner on its own, and a per-item cost is paid per key, not per event.
    users = op.flat_map_batch("user_events", events, partial(group_by_key, signal=partial(_user_signal, params)))
    user_rows = keyed_fold("user_activity", users, UserActivityState, partial(_user_activity, params))

    items = op.flat_map_batch("item_events", events, partial(group_by_key, signal=_item_event))
    item_out = op.key_rm("item_outputs_unkeyed", keyed_fold("item_state", items, ItemState, _item_update))
    by_tag = op.branch("item_stats_or_other", item_out, lambda tagged: tagged[0] == "item_stats")
    item_rows = by_tag.trues
    catalog_or_supply = op.branch("catalog_or_supply", by_tag.falses, lambda tagged: tagged[0] == "catalog")
    op.output("catalog", op.map("catalog_items", catalog_or_supply.trues, lambda t: t[1]), CatalogSink(settings))
    supply = op.key_on("by_supply_cell", op.map("supply_updates", catalog_or_supply.falses, lambda t: t[1]),
                       lambda kc: supply_key(*kc[0]))
    supply = op.map_value("supply_key_str", supply, lambda kc: (supply_key(*kc[0]), kc[1]))
    supply_rows = keyed_fold("cell_supply", supply, CellSupplyState, _supply)

    demand = op.flat_map_batch("demand_events", events, partial(group_by_key, signal=_demand_signal))
    demand_rows = keyed_fold("cell_demand", demand, CellDemandState, _demand)

    rows = op.merge("feature_rows", op.key_rm("u", user_rows), item_rows, op.key_rm("s", supply_rows),
                    op.key_rm("d", demand_rows))
    op.output("online_features", rows, OnlineFeatureSink(settings))
    offline_features = OfflineLogSink(settings, "features")
    op.output("offline_features", op.key_on("by_row_key", rows, lambda r: offline_features.key(row_key(r))),
              offline_features)


def add_attribution_steps(events: Any, settings: Settings) -> None:
    """Impressions joined with later feedback (event time) into labelled examples for the bandit."""
    attribution = AttributionParams.from_settings(settings)
    feedback = op.key_on("by_attribution_shard", op.filter("attribution_events", events, is_attribution_event),
                         partial(attribution_key, shards=attribution.shards))
    examples = op.flat_map_value("labelled_examples",
                                 op.stateful_map("attribution", feedback, partial(attribution_step, attribution)),
                                 lambda xs: xs)
    examples = op.key_rm("examples_unkeyed", examples)
    op.output("bandit_learner", op.key_on("to_learner", examples, lambda e: "bandit"),
              LearnerSink(settings, "bandit", publish_interval_s=settings.model_publish_interval_s))


def add_learner_steps(events: Any, settings: Settings) -> None:
    """Next intent and taste embeddings (every user event), and the market model (every event):
    one partition each, since each is one model learning from everyone."""
    learner_events = op.filter("learner_events", events, is_learner_event)
    op.output("user_learners", op.key_on("to_user_learners", learner_events, lambda e: "learners"),
              UserLearnersSink(settings))
    op.output("market_model", op.key_on("to_market_model", events, lambda e: "market"), MarketModelSink(settings))


def build_flow(settings: Settings, follow: bool = False, flow_id: str = "kairos_features") -> Dataflow:
    """The feature flow: decode, dead letters, keyed features and their sinks (no learners)."""
    OnlineFeatures(settings)  # register the feature views before any worker writes a row (idempotent)
    flow = Dataflow(flow_id)
    add_feature_steps(decoded_events(flow, settings, follow), settings)
    return flow


def build_learning_flow(settings: Settings, follow: bool = False) -> Dataflow:
    """The learning flow: attribution and the bandit, next intent, taste embeddings, the market
    model. It decodes the source itself (the feature flow records the dead letters) and keeps its
    own source positions and recovery snapshots, so it may lag without delaying any feature."""
    flow = Dataflow("kairos_learners")
    events = decoded_events(flow, settings, follow, record_dead_letters=False)
    add_attribution_steps(events, settings)
    add_learner_steps(events, settings)
    return flow


def _with_recovery_layout(settings: Settings) -> Settings:
    """Under ``python -m bytewax.run -r DIR``: the source shards DIR's snapshots were written with."""
    folder = bytewax_recovery_dir()
    return settings if folder is None else with_recorded_shards(settings, folder)


def flow_from_env(follow: bool = True) -> Dataflow:
    """Entry point for ``python -m bytewax.run "flows.dataflow:flow_from_env()"`` (settings from
    ``KAIROS_*``; ``flow_from_env(follow=False)`` stops when the log is caught up)."""
    settings = _with_recovery_layout(Settings.from_env())
    flow = build_flow(settings, follow=follow)
    tune_gc(settings)  # this process runs only the flow
    return flow


def learning_flow_from_env(follow: bool = True) -> Dataflow:
    """Entry point for ``python -m bytewax.run "flows.dataflow:learning_flow_from_env()"``."""
    settings = _with_recovery_layout(Settings.from_env())
    flow = build_learning_flow(settings, follow=follow)
    tune_gc(settings)
    return flow
