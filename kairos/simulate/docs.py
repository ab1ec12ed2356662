"""Plumbing shared by the simulator's writers: the emitted-document record, time formats, ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kairos.simulate.model import CITIES


@dataclass(slots=True)
class Emitted:
    """One document to append: event time (epoch s), collection, store op, the document."""

    ts: float
    collection: str
    op: str
    doc: dict[str, Any]


class ObjectIds:
    """Deterministic Mongo-style ObjectIds: 4 bytes of time, 5 of run salt, 3 of counter.

    They look and sort like the real thing, yet two runs with the same seed produce the same ids.
    """

    def __init__(self, seed: int) -> None:
        self._salt = (seed * 2_654_435_761 + 97) % (1 << 40)
        self._counter = 0

    def __call__(self, ts: float) -> str:
        self._counter = (self._counter + 1) % (1 << 24)
        return f"{int(ts) & 0xFFFFFFFF:08x}{self._salt:010x}{self._counter:06x}"


def iso_z(ts: float) -> str:
    """ISO-8601 in UTC with a ``Z``: ``2024-05-01T10:00:00Z``."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_z_ms(ts: float) -> str:
    """ISO-8601 in UTC with milliseconds, as Mongo extended JSON writes ``$date``."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_local(ts: float, city_name: str) -> str:
    """ISO-8601 in the city's local time with its UTC offset: ``2024-05-01T06:00:00-04:00``."""
    local = datetime.fromtimestamp(ts, timezone.utc).astimezone(CITIES[city_name].zone)
    return local.isoformat(timespec="seconds")


def epoch_ms(ts: float) -> int:
    return int(round(ts * 1000))


def epoch_s(ts: float) -> int:
    return int(round(ts))
