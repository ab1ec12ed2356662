"""The garbage collector of a process that runs a flow (``KAIROS_FLOW_GC_THRESHOLD``).

Python collects its youngest generation every 700 net allocations and, from time to time, walks
every tracked object. A flow process holds millions of long-lived objects from its imports (Feast,
torch, pandas) and allocates tuples and dicts at a high rate, so with the defaults about a fifth
of the feature flow's CPU went to collections (more with two processes: there it was the largest
cost after decoding). Here the objects alive when the flow starts are frozen out of every later
collection, and the youngest generation is collected every ``flow_gc_threshold`` allocations.
Collections still run, only less often; cyclic garbage is still reclaimed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from kairos.config import Settings


def tune_gc(settings: Settings) -> None:
    """For a process that runs only the flow from now on (``python -m bytewax.run``)."""
    if settings.flow_gc_threshold:
        gc.collect()
        gc.freeze()
        _, second, third = gc.get_threshold()
        gc.set_threshold(settings.flow_gc_threshold, second, third)


@contextmanager
def tuned_gc(settings: Settings) -> Iterator[None]:
    """:func:`tune_gc` while the block runs, then the collector as it was (for a flow run inside
    a process that goes on to do other work: ``kairos flow run``, the demo, tests)."""
    before = gc.get_threshold()
    tune_gc(settings)
    try:
        yield
    finally:
        if settings.flow_gc_threshold:
            gc.unfreeze()
            gc.set_threshold(*before)
