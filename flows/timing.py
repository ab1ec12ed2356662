"""Wall-clock marks for benchmarks: when a flow read its first record and when its sinks closed.

Off unless ``KAIROS_TIMING_FILE`` names a file; then every process of a (possibly multi-process)
flow appends ``start <epoch>`` / ``end <epoch>`` lines to it, and ``kairos bench flow`` measures
from the earliest start to the latest end — interpreter start-up and imports excluded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def mark(what: str) -> None:
    path = os.environ.get("KAIROS_TIMING_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{what} {time.time():.6f}\n")


def span(path: Path | str) -> tuple[float, float]:
    """(earliest start, latest end) recorded in a timing file."""
    starts, ends = [], []
    for line in Path(path).read_text().splitlines():
        what, _, at = line.partition(" ")
        (starts if what == "start" else ends).append(float(at))
    if not starts or not ends:
        raise RuntimeError(f"{path} has no start or no end mark: did the flow run?")
    return min(starts), max(ends)
