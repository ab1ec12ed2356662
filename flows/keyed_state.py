"""A keyed stateful step whose recovery snapshot is the pickled state.

Bytewax's ``stateful_map`` snapshots with ``copy.deepcopy`` at the end of every epoch; for states
holding windows of events that copy was a large share of the flow's time. Pickled bytes are an
immutable snapshot too, are several times cheaper to make, and are what recovery stores anyway.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")


class _PickledStateLogic(StatefulBatchLogic[V, W, bytes], Generic[S, V, W]):
    def __init__(self, state: S, update: Callable[[S, list[V]], Iterable[W]]) -> None:
        self.state = state
        self.update = update

    def on_batch(self, values: list[V]) -> tuple[Iterable[W], bool]:
        # All values of this key in the batch at once: a state emits one row for the batch, not
        # one per value (the online store would keep only the last one anyway).
        return self.update(self.state, values), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def keyed_fold(step_id: str, up: Any, new_state: Callable[[], S],
               update: Callable[[S, list[V]], Iterable[W]]) -> Stream[Any]:
    """For each key: ``state = new_state()`` on first sight (or unpickled on resume), then emit
    everything ``update(state, values)`` returns for each batch of that key's values, in arrival
    order (``update`` mutates ``state``)."""

    def builder(resume: bytes | None) -> _PickledStateLogic[S, V, W]:
        return _PickledStateLogic(pickle.loads(resume) if resume is not None else new_state(), update)

    return op.stateful_batch(step_id, up, builder)
