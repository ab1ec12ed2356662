"""The offline log: canonical events and feature rows as Parquet part files.

Layout under ``<home>/offline``: ``events/part-*.parquet`` and ``features/<view>/part-*.parquet``
(the Feast batch sources of the views). Part files are written whole to a temporary name and
renamed, so a reader never sees half a file.

Writes are at-least-once (a flow resumed after a crash replays the epoch it was in), so the log is
a set: readers drop repeated events by ``event_id`` and repeated identical feature rows. Writing a
batch twice therefore changes nothing a reader sees.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kairos.features import VIEWS
from kairos.schema import Event

_TS = pa.timestamp("us", tz="UTC")
EVENT_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("ts", _TS), ("actor_type", pa.string()), ("actor_id", pa.string()),
    ("kind", pa.string()), ("collection", pa.string()), ("item_id", pa.string()), ("category", pa.string()),
    ("lat", pa.float64()), ("lon", pa.float64()), ("cell", pa.string()), ("price", pa.float64()),
    ("original_price", pa.float64()), ("currency", pa.string()), ("valid_from", _TS), ("valid_to", _TS),
    ("text", pa.string()), ("attrs", pa.string()),
])
_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}


def feature_schema(view: str) -> pa.Schema:
    spec = VIEWS[view]
    return pa.schema(
        [(e, pa.string()) for e in spec.entities]
        + [(f.name, _ARROW_TYPES[f.dtype]) for f in spec.fields]
        + [("event_timestamp", _TS)]
    )


def events_table(events: list[Event]) -> pa.Table:
    """The events as an Arrow table of :data:`EVENT_SCHEMA` (``attrs`` as JSON text).

    Built column by column: a row dict per event (``Event.to_row`` then ``from_pylist``) cost twice
    as much, and the offline writer's thread holds the GIL the flow's worker needs.
    """
    columns: dict[str, list[Any]] = {
        name: [getattr(e, name) for e in events] for name in EVENT_SCHEMA.names if name != "attrs"}
    columns["attrs"] = [json.dumps(e.attrs, default=str, sort_keys=True) for e in events]
    return pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)


def rows_table(view: str, rows: list[dict[str, Any]]) -> pa.Table:
    """A view's feature rows as an Arrow table of :func:`feature_schema`, ``event_timestamp``
    taken from ``as_of`` (epoch seconds, to the microsecond).

    Column by column, the timestamps in one vectorised cast: a ``pd.Timestamp`` per row was the
    offline writer's largest cost.
    """
    schema = feature_schema(view)
    columns: dict[str, Any] = {name: [r.get(name) for r in rows] for name in schema.names if name != "event_timestamp"}
    seconds = np.fromiter((r["as_of"] for r in rows), dtype=np.float64, count=len(rows))
    columns["event_timestamp"] = pa.array(np.round(seconds * 1e6).astype(np.int64)).cast(_TS)
    return pa.Table.from_pydict(columns, schema=schema)


class OfflineLog:
    """Append-only Parquet log of events and feature rows."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    def features_dir(self, view: str) -> Path:
        return self.root / "features" / view

    def write_events(self, events: list[Event], writer: str = "w0") -> Path | None:
        if not events:
            return None
        return self._write(self.events_dir, events_table(events), writer)

    def write_rows(self, view: str, rows: list[dict[str, Any]], writer: str = "w0") -> Path | None:
        if not rows:
            return None
        return self._write(self.features_dir(view), rows_table(view, rows), writer)

    def _write(self, folder: Path, table: pa.Table, writer: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{writer}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
        return folder / name

    def read_events(self) -> pd.DataFrame:
        events = self._read(self.events_dir, EVENT_SCHEMA)
        return events.drop_duplicates("event_id", keep="first").reset_index(drop=True)

    def read_rows(self, view: str) -> pd.DataFrame:
        rows = self._read(self.features_dir(view), feature_schema(view))
        return rows.drop_duplicates(keep="first").reset_index(drop=True)

    @staticmethod
    def _read(folder: Path, schema: pa.Schema) -> pd.DataFrame:
        files = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
        if not files:
            return schema.empty_table().to_pandas()
        return pa.concat_tables([pq.read_table(f, schema=schema) for f in files]).to_pandas()

    def read_rows_where(self, view: str, equals: dict[str, str] | None = None,
                        since: pd.Timestamp | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Feature rows of one view, filtered while reading (entity values, ``event_timestamp >=
        since``; only ``columns`` if given), in write order as far as the files tell it (part files
        by modification time, rows in file order), so that of two rows with the same event time the
        later one is last. Read-only helper for the analysts' feature views (history, statistics)."""
        schema = feature_schema(view)
        if columns is not None:
            # A filtered column must be read to be filtered on.
            wanted = [*dict.fromkeys([*columns, *(equals or {}), *(["event_timestamp"] if since is not None else [])])]
            schema = pa.schema([schema.field(c) for c in wanted])
        folder = self.features_dir(view)
        files = list(folder.glob("part-*.parquet")) if folder.exists() else []
        files.sort(key=lambda f: (f.stat().st_mtime_ns, f.name))
        filters: list[tuple[str, str, Any]] = [(k, "=", v) for k, v in (equals or {}).items()]
        if since is not None:
            filters.append(("event_timestamp", ">=", since))
        tables = [pq.read_table(f, schema=schema, filters=filters or None) for f in files]
        if not tables:
            return schema.empty_table().to_pandas()
        rows = pa.concat_tables(tables).to_pandas()
        return rows.drop_duplicates(keep="last").reset_index(drop=True)
