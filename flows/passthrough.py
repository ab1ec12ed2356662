"""The ceiling for ``kairos bench flow``: the same source over the same data, doing nothing else."""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows import timing
from flows.dataflow import collections_to_read
from flows.source import EventStoreSource
from kairos.config import Settings
from kairos.decoding import load_mappings


class _Discard(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass

    def close(self) -> None:
        timing.mark("end")


class DiscardSink(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()


def build_passthrough(settings: Settings) -> Dataflow:
    flow = Dataflow("kairos_passthrough")
    collections = collections_to_read(settings, load_mappings(settings.collections_file or None))
    records = op.input("event_store", flow, EventStoreSource(settings, collections, follow=False,
                                                             batch_size=settings.source_batch_size,
                                                             shards=settings.source_shards))
    op.output("discard", records, DiscardSink())
    return flow


def passthrough_from_env() -> Dataflow:
    return build_passthrough(Settings.from_env())
