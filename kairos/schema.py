"""The canonical event (DESIGN §3) and the dead-letter record.

Every source document, whatever its shape, becomes one :class:`Event` or one :class:`DeadLetter`.
Both are plain frozen dataclasses so they pickle cheaply between Bytewax workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

#: Kinds a user does (behaviour) and kinds a business publishes (items).
USER_KINDS = (
    "location", "search", "voice", "view", "click", "save", "purchase", "booking",
    "impression", "dismiss", "report",
)
ITEM_KINDS = ("offer", "event", "service", "product", "informative")
#: Item lifecycle operations carried in ``attrs["op"]`` of item events.
ITEM_OPS = ("create", "update", "delete")
#: Engagement kinds that count towards item and user statistics.
ENGAGEMENT_KINDS = ("view", "click", "save", "purchase", "booking")

CATEGORIES = (
    "food", "coffee", "spa", "fitness", "sport", "culture", "retail", "services",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One canonical event. ``ts`` and ``valid_*`` are timezone-aware UTC datetimes."""

    event_id: str
    ts: datetime
    actor_type: str
    actor_id: str
    kind: str
    collection: str = ""
    item_id: str | None = None
    category: str | None = None
    lat: float | None = None
    lon: float | None = None
    cell: str | None = None
    price: float | None = None
    original_price: float | None = None
    currency: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    text: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Events cross between Bytewax processes at every keyed step. The default pickling of an
        # aware datetime costs ~4 µs each way (its tzinfo goes through copyreg); as integer
        # microseconds it is nearly free, which roughly halves an Event's pickling cost.
        return _event_from_values, ((
            self.event_id, _pack_time(self.ts), self.actor_type, self.actor_id, self.kind, self.collection,
            self.item_id, self.category, self.lat, self.lon, self.cell, self.price, self.original_price,
            self.currency, _pack_time(self.valid_from), _pack_time(self.valid_to), self.text, self.attrs),)

    @property
    def is_item(self) -> bool:
        return self.actor_type == "business" and self.kind in ITEM_KINDS

    @property
    def op(self) -> str:
        """Lifecycle operation of an item event (``create``/``update``/``delete``)."""
        return str(self.attrs.get("op", "create"))

    @property
    def discount(self) -> float | None:
        if self.price is None or not self.original_price or self.original_price <= 0:
            return None
        return max(0.0, 1.0 - self.price / self.original_price)

    def to_row(self) -> dict[str, Any]:
        """Flat row for the Parquet offline log (``attrs`` as JSON text)."""
        # Field by field, not dataclasses.asdict: asdict deep-copies attrs, which dominated the
        # offline sink's cost.
        row = {name: getattr(self, name) for name in self.__dataclass_fields__}
        row["attrs"] = json.dumps(self.attrs, default=str, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Event:
        values = dict(row)
        attrs = values.get("attrs")
        values["attrs"] = json.loads(attrs) if isinstance(attrs, str) and attrs else {}
        for key in ("ts", "valid_from", "valid_to"):
            values[key] = to_utc(values.get(key))
        for key in ("lat", "lon", "price", "original_price"):
            if values.get(key) is not None and values[key] != values[key]:  # NaN from pandas
                values[key] = None
        for key in ("item_id", "category", "cell", "currency", "text"):
            if values.get(key) is not None and not isinstance(values[key], str):
                values[key] = None
        return cls(**{k: values.get(k) for k in cls.__dataclass_fields__})


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _pack_time(value: datetime | None) -> datetime | int | None:
    """UTC datetimes as exact integer microseconds since the epoch; anything else as it is."""
    if value is not None and value.tzinfo is timezone.utc:
        return (value - _EPOCH) // _MICROSECOND
    return value


def _unpack_time(value: datetime | int | None) -> datetime | None:
    return _EPOCH + timedelta(microseconds=value) if type(value) is int else value  # type: ignore[return-value]


def _event_from_values(values: tuple[Any, ...]) -> Event:
    """Inverse of :meth:`Event.__reduce__` (field order as declared)."""
    (event_id, ts, actor_type, actor_id, kind, collection, item_id, category, lat, lon, cell, price,
     original_price, currency, valid_from, valid_to, text, attrs) = values
    return Event(event_id, _unpack_time(ts), actor_type, actor_id, kind, collection,  # type: ignore[arg-type]
                 item_id, category, lat, lon, cell, price, original_price, currency,
                 _unpack_time(valid_from), _unpack_time(valid_to), text, attrs)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A document that could not be decoded, kept whole with the reason."""

    collection: str
    position: str
    reason: str
    document: str  # JSON text of the source document, as received
    source_id: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    op: str = "insert"  # the store operation, so a replay re-enters as what it was


def to_utc(value: Any) -> datetime | None:
    """Coerce pandas/NumPy/naive timestamps read back from storage to aware UTC datetimes."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        if value != value:  # NaT
            return None
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    raise TypeError(f"not a timestamp: {value!r}")
