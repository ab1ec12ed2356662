"""Decode source documents of any shape into canonical events (DESIGN §3).

Source documents are not standardised: every business and every client shapes them its own way.
Decoding is therefore driven by a per-collection :class:`CollectionMapping` (loaded from
``kairos/collections.yaml`` or a file of the operator's own) that lists, for each canonical field,
the source fields that may carry it. The first alias present wins; aliases may be dotted paths
(``merchant.id``, ``valid.from``, ``tags.0``).

:func:`decode` is total: whatever it is given it returns an :class:`~kairos.schema.Event` or a
:class:`~kairos.schema.DeadLetter` whose reason says, in words, what was wrong. The flow never
stops for bad data and never drops it silently.

>>> from datetime import datetime, timezone
>>> from kairos.stores.event_store import SourceRecord
>>> mappings = load_mappings()
>>> doc = {"_id": "p1", "user_id": "u1", "ts": 1714557600, "coords": [-73.98, 40.73]}
>>> event = decode(SourceRecord("pings", "1", "insert", doc, datetime.now(timezone.utc)), mappings)
>>> event.kind, event.actor_id, event.lat, event.ts.isoformat()
('location', 'u1', 40.73, '2024-05-01T10:00:00+00:00')
"""

from __future__ import annotations

import email.utils
import json
import math
import re
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kairos import geo
from kairos.schema import ITEM_KINDS, USER_KINDS, DeadLetter, Event
from kairos.stores.event_store import SourceRecord
from kairos.text_categories import category_from_text, normalise_category

#: Kind of the ``users`` and ``businesses`` profile documents.
PROFILE_KIND = "profile"
#: Every kind a mapping may produce.
KINDS: tuple[str, ...] = USER_KINDS + ITEM_KINDS + (PROFILE_KIND,)
ACTOR_TYPES = ("user", "business")
#: Event-store op -> item lifecycle op carried in ``attrs["op"]``.
LIFECYCLE_OPS = {"insert": "create", "update": "update", "replace": "update", "delete": "delete"}
TS_FALLBACKS = ("none", "appended")
#: How a bare two-number list is read: GeoJSON order ``[lng, lat]`` or ``[lat, lng]``.
LIST_ORDERS = ("lnglat", "latlng")
REQUIRABLE = ("location", "item_id", "text", "price", "category")
#: Timestamps outside this range are data errors (epoch confusion, placeholder dates).
MIN_TS = datetime(1990, 1, 1, tzinfo=timezone.utc)
MAX_TS = datetime(2100, 1, 1, tzinfo=timezone.utc)

_PACKAGED = "kairos/collections.yaml"
_MISSING = object()


@dataclass(frozen=True)
class CollectionMapping:
    """How the documents of one collection map onto the canonical event.

    Every ``tuple[str, ...]`` field is a list of aliases (dotted paths allowed); the first one
    present in a document (not missing, not null, not empty text) wins.
    """

    name: str
    #: ``user`` or ``business``.
    actor_type: str
    actor_id: tuple[str, ...]
    #: Fixed kind of every document, or ``None`` when it comes from ``kind_field``.
    kind: str | None = None
    kind_field: tuple[str, ...] = ()
    #: Source value (lower-cased) -> canonical kind, for ``kind_field``.
    kind_map: dict[str, str] = field(default_factory=dict, hash=False)
    #: Kind when ``kind_field`` is absent; ``None`` makes a missing kind a dead letter.
    kind_default: str | None = None
    item_id: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    #: Derive the category from ``text`` when the document has none (searches, voice).
    category_from_text: bool = False
    #: Item text is ``title — description``; behaviour text (query, transcript) is ``text``.
    title: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    ts: tuple[str, ...] = ()
    #: ``appended``: a document without a timestamp takes the store's receive time. Item deletes
    #: always may, because a delete often carries nothing but the ``_id``.
    ts_fallback: str = "none"
    #: Fields holding a whole point (GeoJSON, ``{lat, lon}``, ``"lat,lon"``, a list).
    location: tuple[str, ...] = ()
    #: Separate latitude / longitude fields, used when no ``location`` alias is present.
    lat: tuple[str, ...] = ()
    lon: tuple[str, ...] = ()
    #: Order of a bare list of two numbers; ``None`` rejects lists as ambiguous.
    list_order: str | None = None
    price: tuple[str, ...] = ()
    original_price: tuple[str, ...] = ()
    currency: tuple[str, ...] = ()
    valid_from: tuple[str, ...] = ()
    valid_to: tuple[str, ...] = ()
    #: Start time of an event or a service slot, kept as ISO text in ``attrs["starts_at"]``.
    starts_at: tuple[str, ...] = ()
    #: Canonical fields a document must carry, among :data:`REQUIRABLE`.
    required: tuple[str, ...] = ()

    @property
    def is_item(self) -> bool:
        """Whether documents are catalogue items (offers, events, services) with a lifecycle."""
        return self.actor_type == "business" and self.kind in ITEM_KINDS


# --------------------------------------------------------------------------------------------
# Loading the mapping file
# --------------------------------------------------------------------------------------------

_ALIAS_FIELDS = tuple(
    f.name for f in fields(CollectionMapping) if f.type in ("tuple[str, ...]",) and f.name != "required"
)


def load_mappings(path: str | Path | None = None) -> dict[str, CollectionMapping]:
    """Collection name -> mapping, from ``path`` or (None / "") the packaged ``collections.yaml``.

    Raises ``ValueError`` naming the file, the collection and the field for any bad config, and
    for a file that cannot be read.
    """
    if path is None or str(path) == "":
        return dict(_packaged_mappings())
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{source}: cannot read collections file: {exc.strerror or exc}") from exc
    return parse_mappings(text, source)


@lru_cache(maxsize=1)
def _packaged_mappings() -> dict[str, CollectionMapping]:
    text = resources.files("kairos").joinpath("collections.yaml").read_text(encoding="utf-8")
    return parse_mappings(text, _PACKAGED)


def parse_mappings(text: str, source: str = "<string>") -> dict[str, CollectionMapping]:
    """Parse and validate mapping YAML; ``source`` names the file in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("collections"), dict):
        raise ValueError(f"{source}: expected a top-level 'collections:' mapping of collection -> config")
    # ``x-...`` keys hold YAML anchors shared between collections.
    unknown_top = {k for k in data if k not in ("collections", "version") and not str(k).startswith("x-")}
    if unknown_top:
        raise ValueError(f"{source}: unknown top-level key(s) {sorted(map(str, unknown_top))}")
    mappings = {}
    for name, config in data["collections"].items():
        mappings[str(name)] = _mapping_from_config(str(name), config, source)
    if not mappings:
        raise ValueError(f"{source}: 'collections' is empty")
    return mappings


def _mapping_from_config(name: str, config: Any, source: str) -> CollectionMapping:
    def bad(key: str, problem: str) -> ValueError:
        return ValueError(f"{source}: collection '{name}', field '{key}': {problem}")

    if not isinstance(config, dict):
        raise ValueError(f"{source}: collection '{name}': expected a mapping of fields, got {_show(config)}")
    known = {f.name for f in fields(CollectionMapping)} - {"name"}
    for key in config:
        if key not in known:
            raise bad(str(key), f"unknown field (known: {', '.join(sorted(known))})")

    values: dict[str, Any] = {"name": name}
    for key in _ALIAS_FIELDS + ("required",):
        if key not in config or config[key] is None:
            continue
        raw = config[key]
        aliases = [raw] if isinstance(raw, str) else raw
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise bad(key, f"expected a field name or a list of field names, got {_show(raw)}")
        values[key] = tuple(a.strip() for a in aliases)

    actor_type = config.get("actor_type")
    if actor_type not in ACTOR_TYPES:
        raise bad("actor_type", f"must be one of {list(ACTOR_TYPES)}, got {_show(actor_type)}")
    values["actor_type"] = actor_type
    if not values.get("actor_id"):
        raise bad("actor_id", "required: the field(s) naming the user or business")
    if not values.get("ts"):
        raise bad("ts", "required: the field(s) holding the event time")

    kind = config.get("kind")
    if kind is not None:
        if kind not in KINDS:
            raise bad("kind", f"unknown kind {_show(kind)} (known: {', '.join(KINDS)})")
        if "kind_field" in values:
            raise bad("kind_field", "give either a fixed 'kind' or a 'kind_field', not both")
        values["kind"] = kind
    else:
        if not values.get("kind_field"):
            raise bad("kind", "required: a fixed kind, or 'kind_field' with a 'kind_map'")
        kind_map = config.get("kind_map")
        if not isinstance(kind_map, dict) or not kind_map:
            raise bad("kind_map", "required with 'kind_field': a mapping of source value -> kind")
        for raw_value, mapped in kind_map.items():
            if mapped not in KINDS:
                raise bad("kind_map", f"value {_show(raw_value)} maps to unknown kind {_show(mapped)}")
        values["kind_map"] = {str(k).strip().lower(): v for k, v in kind_map.items()}
        default = config.get("kind_default")
        if default is not None and default not in KINDS:
            raise bad("kind_default", f"unknown kind {_show(default)}")
        values["kind_default"] = default
    if kind is not None and ("kind_map" in config or "kind_default" in config):
        raise bad("kind_map", "only meaningful with 'kind_field'")

    for flag in ("category_from_text",):
        if flag in config:
            if not isinstance(config[flag], bool):
                raise bad(flag, f"expected true or false, got {_show(config[flag])}")
            values[flag] = config[flag]
    ts_fallback = config.get("ts_fallback", "none")
    if ts_fallback not in TS_FALLBACKS:
        raise bad("ts_fallback", f"must be one of {list(TS_FALLBACKS)}, got {_show(ts_fallback)}")
    values["ts_fallback"] = ts_fallback
    list_order = config.get("list_order")
    if list_order is not None and list_order not in LIST_ORDERS:
        raise bad("list_order", f"must be one of {list(LIST_ORDERS)}, got {_show(list_order)}")
    values["list_order"] = list_order
    for needed in values.get("required", ()):
        if needed not in REQUIRABLE:
            raise bad("required", f"{_show(needed)} cannot be required (choose from {list(REQUIRABLE)})")
        if needed == "text":
            present = values.get("text") or values.get("title") or values.get("description")
        elif needed == "location":
            present = values.get("location") or (values.get("lat") and values.get("lon"))
        else:
            present = values.get(needed)
        if not present:
            raise bad("required", f"'{needed}' is required but no alias for it is configured")
    if bool(values.get("lat")) != bool(values.get("lon")):
        raise bad("lat" if not values.get("lat") else "lon", "'lat' and 'lon' must be configured together")
    mapping = CollectionMapping(**values)
    if mapping.is_item and not mapping.item_id:
        mapping = CollectionMapping(**{**values, "item_id": ("_id",)})
    return mapping


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _Reject(ValueError):
    """A document (or one of its fields) cannot be decoded; the message is the reason."""


def decode(
    record: SourceRecord, mappings: dict[str, CollectionMapping], h3_resolution: int = 8
) -> Event | DeadLetter:
    """The canonical event of one source record, or a dead letter saying why there is none.

    Never raises, whatever the document holds.
    """
    collection = str(getattr(record, "collection", ""))
    try:
        return _decode(record, mappings, h3_resolution)
    except _Reject as reject:
        return _dead_letter(record, f"{collection}: {reject}")
    except Exception as exc:  # noqa: BLE001 - one odd document must never stop the flow
        return _dead_letter(record, f"{collection}: unexpected decoding error: {type(exc).__name__}: {exc}")


def _dead_letter(record: SourceRecord, reason: str) -> DeadLetter:
    document = getattr(record, "document", None)
    source_id = None
    try:
        if isinstance(document, dict) and document.get("_id") is not None:
            source_id = _id_text(document["_id"])
    except Exception:  # noqa: BLE001 - the id is a courtesy; the reason and document matter
        source_id = None
    return DeadLetter(
        collection=str(getattr(record, "collection", "")),
        position=str(getattr(record, "position", "")),
        reason=reason or "undecodable document",
        document=_document_text(document),
        source_id=source_id,
        op=str(getattr(record, "op", "insert") or "insert"),
    )


def _document_text(document: Any) -> str:
    try:
        # Most documents are plain JSON already: the C encoder alone is the cheap path, which
        # matters when a flood of bad documents arrives.
        return json.dumps(document, ensure_ascii=False, allow_nan=False)
    except Exception:  # noqa: BLE001 - dates, NaN, odd types: made safe below
        pass
    try:
        return json.dumps(_json_safe(document), ensure_ascii=False, allow_nan=False)
    except Exception:  # noqa: BLE001
        try:
            return json.dumps(document, default=str)
        except Exception:  # noqa: BLE001
            try:
                return repr(document)[:100_000]
            except Exception:  # noqa: BLE001
                return "<unprintable document>"


class _Doc:
    """A document plus the set of alias paths consumed into canonical fields."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.consumed: list[str] = []

    def first(self, aliases: tuple[str, ...]) -> tuple[str, Any] | None:
        """(alias, value) of the first alias present; None, "" and [] count as absent."""
        data = self.data
        for alias in aliases:
            # Most aliases are plain top-level keys: a dict lookup, not a path walk (hot path).
            value = data.get(alias, _MISSING) if alias in data or "." not in alias else _get(data, alias)
            if value is _MISSING or value is None:
                continue
            if isinstance(value, str) and not value.strip():
                continue
            if isinstance(value, (list, dict)) and not value:
                continue
            return alias, value
        return None

    def take(self, aliases: tuple[str, ...]) -> tuple[str, Any] | None:
        """Like :meth:`first`, and mark the alias consumed so it leaves ``attrs``."""
        found = self.first(aliases)
        if found is not None:
            self.consumed.append(found[0])
        return found


def _decode(record: SourceRecord, mappings: dict[str, CollectionMapping], h3_resolution: int) -> Event:
    collection = record.collection
    mapping = mappings.get(collection) if isinstance(collection, str) else None
    if mapping is None:
        raise _Reject(f"no mapping for collection '{collection}'")
    if not isinstance(record.document, dict):
        raise _Reject(f"document is not an object but {type(record.document).__name__}")
    lifecycle = LIFECYCLE_OPS.get(record.op)
    if lifecycle is None:
        raise _Reject(f"unknown change op {_show(record.op)}")
    doc = _Doc(record.document)
    # A delete of an item often carries only its _id; everything beyond id and time is optional
    # and a bad optional field must not keep the item alive in the catalogue.
    lenient = lifecycle == "delete" and mapping.is_item

    def optional(parse: Any, *args: Any) -> Any:
        if not lenient:
            return parse(*args)
        try:
            return parse(*args)
        except _Reject:
            return None

    source_id = _id_text(record.document["_id"]) if record.document.get("_id") is not None else None

    # Actor.
    found = doc.take(mapping.actor_id)
    actor_id = optional(_id_value, found[1], found[0]) if found is not None else None
    if actor_id is None:
        if not lenient:
            raise _Reject(f"no {mapping.actor_type} id in any of [{', '.join(mapping.actor_id)}]")
        actor_id = "unknown"

    # Time.
    ts = optional(_ts_field, doc, mapping.ts)
    if ts is None:
        if mapping.ts_fallback == "appended" or lenient:
            ts = _as_utc(record.appended_at)
        else:
            raise _Reject(f"no timestamp in any of [{', '.join(mapping.ts)}]")

    kind = _kind(doc, mapping)

    # Item.
    item_id = None
    found = doc.take(mapping.item_id)
    if found is not None:
        item_id = _id_value(found[1], found[0])
    if item_id is None and (mapping.is_item or "item_id" in mapping.required):
        raise _Reject(f"no item id in any of [{', '.join(mapping.item_id)}]")

    # Text.
    title = optional(_text_field, doc, mapping.title)
    description = optional(_text_field, doc, mapping.description)
    if title and description:
        text: str | None = f"{title} — {description}"
    else:
        text = title or description or optional(_text_field, doc, mapping.text)
    if text is None and "text" in mapping.required and not lenient:
        aliases = mapping.title + mapping.description + mapping.text
        raise _Reject(f"no text in any of [{', '.join(aliases)}]")

    # Category.
    category = optional(_category_field, doc, mapping.category)
    if category is None and mapping.category_from_text and text:
        category = category_from_text(text)
    if category is None and "category" in mapping.required and not lenient:
        raise _Reject(f"no category in any of [{', '.join(mapping.category)}]")

    # Place.
    point = optional(_point_field, doc, mapping)
    if point is None and "location" in mapping.required and not lenient:
        aliases = mapping.location + mapping.lat + mapping.lon
        raise _Reject(f"no location in any of [{', '.join(aliases)}]")
    lat = lon = cell = None
    if point is not None:
        lat, lon = point
        cell = geo.cell_of(lat, lon, h3_resolution)

    # Price.
    price, price_currency = optional(_amount_field, doc, mapping.price, "price") or (None, None)
    original, original_currency = (
        optional(_amount_field, doc, mapping.original_price, "original price") or (None, None)
    )
    if price is None and "price" in mapping.required and not lenient:
        raise _Reject(f"no price in any of [{', '.join(mapping.price)}]")
    if price is not None and original is not None and price > original + 1e-9:
        if not lenient:
            raise _Reject(f"reduced price {price:g} above original price {original:g}")
        original = None
    currency = optional(_currency_field, doc, mapping.currency) or price_currency or original_currency

    # Validity.
    valid_from = optional(_ts_field, doc, mapping.valid_from)
    valid_to = optional(_ts_field, doc, mapping.valid_to)
    if valid_from is not None and valid_to is not None and valid_to < valid_from:
        if not lenient:
            raise _Reject(f"valid_to {valid_to.isoformat()} before valid_from {valid_from.isoformat()}")
        valid_from = valid_to = None
    starts_at = optional(_ts_field, doc, mapping.starts_at)

    attrs = _json_safe(record.document)
    for path in doc.consumed:
        _remove(attrs, path)
    if starts_at is not None:
        attrs["starts_at"] = starts_at.isoformat()
    if mapping.is_item:
        attrs["op"] = lifecycle
        attrs["business_id"] = actor_id

    return Event(
        event_id=f"{collection}/{source_id if source_id is not None else '-'}/{record.op}/{record.position}",
        ts=ts,
        actor_type=mapping.actor_type,
        actor_id=actor_id,
        kind=kind,
        collection=collection,
        item_id=item_id,
        category=category,
        lat=lat,
        lon=lon,
        cell=cell,
        price=price,
        original_price=original,
        currency=currency,
        valid_from=valid_from,
        valid_to=valid_to,
        text=text,
        attrs=attrs,
    )


def _kind(doc: _Doc, mapping: CollectionMapping) -> str:
    if mapping.kind is not None:
        return mapping.kind
    found = doc.take(mapping.kind_field)
    if found is None:
        if mapping.kind_default is not None:
            return mapping.kind_default
        raise _Reject(f"no kind in any of [{', '.join(mapping.kind_field)}]")
    alias, value = found
    if isinstance(value, str) and value.strip().lower() in mapping.kind_map:
        return mapping.kind_map[value.strip().lower()]
    raise _Reject(f"unknown {alias} {_show(value)} (expected one of {', '.join(sorted(mapping.kind_map))})")


# --------------------------------------------------------------------------------------------
# Field readers: each returns a clean value or raises _Reject with the reason
# --------------------------------------------------------------------------------------------


def _get(data: Any, path: str) -> Any:
    """Value at a dotted path (``merchant.id``, ``tags.0``); a literal key with dots wins."""
    if isinstance(data, dict) and path in data:
        return data[path]
    current = data
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def _remove(attrs: dict[str, Any], path: str) -> None:
    """Drop a consumed field from ``attrs``; empty parents go too. List elements stay."""
    if path in attrs:
        del attrs[path]
        return
    parts = path.split(".")
    chain: list[tuple[dict[str, Any], str]] = []
    current: Any = attrs
    for part in parts[:-1]:
        if not isinstance(current, dict) or not isinstance(current.get(part), dict):
            return
        chain.append((current, part))
        current = current[part]
    if isinstance(current, dict) and parts[-1] in current:
        del current[parts[-1]]
        for parent, key in reversed(chain):
            if parent[key]:
                break
            del parent[key]


def _show(value: Any, limit: int = 60) -> str:
    """Short repr of a value for a reason text."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _id_text(value: Any) -> str:
    """A source ``_id`` as text: strings, integers, Mongo ``{"$oid": ...}``; else its JSON."""
    if isinstance(value, dict) and isinstance(value.get("$oid"), str):
        return value["$oid"]
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _document_text(value)


def _id_value(value: Any, alias: str) -> str:
    """An actor or item id: text, an integer or ``{"$oid": ...}``; anything else is an error."""
    if isinstance(value, bool):
        raise _Reject(f"{alias} {_show(value)} is not an id")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict) and isinstance(value.get("$oid"), str):
        return value["$oid"]
    raise _Reject(f"{alias} {_show(value)} is not an id")


def _text_field(doc: _Doc, aliases: tuple[str, ...]) -> str | None:
    found = doc.take(aliases)
    if found is None:
        return None
    alias, value = found
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
    ):
        joined = " ".join(str(v).strip() for v in value).strip()
        return joined or None
    raise _Reject(f"{alias} {_show(value)} is not text")


def _category_field(doc: _Doc, aliases: tuple[str, ...]) -> str | None:
    found = doc.take(aliases)
    if found is None:
        return None
    alias, value = found
    if isinstance(value, list):  # tag lists: the first text tag is the main category
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if not isinstance(value, str):
        raise _Reject(f"{alias} {_show(found[1])} is not a category name")
    return normalise_category(value)


def _currency_field(doc: _Doc, aliases: tuple[str, ...]) -> str | None:
    found = doc.take(aliases)
    if found is None:
        return None
    return _currency_code(found[1])


_CURRENCY_SYMBOLS = {"$": "USD", "₹": "INR", "€": "EUR", "£": "GBP", "rs": "INR", "rs.": "INR"}


def _currency_code(value: Any) -> str | None:
    """ISO code for a currency code or symbol; unreadable currencies stay only in attrs."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.lower() in _CURRENCY_SYMBOLS:
        return _CURRENCY_SYMBOLS[text.lower()]
    if len(text) == 3 and text.isascii() and text.isalpha():
        return text.upper()
    return None


# ---- timestamps ----


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _ts_field(doc: _Doc, aliases: tuple[str, ...]) -> datetime | None:
    found = doc.take(aliases)
    if found is None:
        return None
    return parse_timestamp(found[1], found[0])


_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_timestamp(value: Any, field_name: str = "timestamp") -> datetime:
    """Aware UTC datetime from ISO-8601 text, epoch s/ms/µs/ns, datetimes or ``{"$date": ...}``.

    Naive values are UTC. Raises ``ValueError`` with the reason for anything unreadable and for
    times outside 1990-2100.
    """
    try:
        result = _timestamp(value, field_name)
    except (OverflowError, OSError, ValueError) as exc:
        if isinstance(exc, _Reject):
            raise
        raise _Reject(f"{field_name} {_show(value)} is not a readable time ({exc})") from None
    if not MIN_TS <= result < MAX_TS:
        raise _Reject(f"{field_name} {result.isoformat()} is outside 1990-2100")
    return result


def _timestamp(value: Any, field_name: str) -> datetime:
    if isinstance(value, dict):
        if "$date" not in value:
            raise _Reject(f"{field_name} {_show(value)} is not a timestamp")
        inner = value["$date"]
        if isinstance(inner, dict) and "$numberLong" in inner:
            inner = inner["$numberLong"]
            return _from_epoch(_number(inner, field_name) / 1000.0, field_name)
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            # Extended JSON dates given as numbers are always milliseconds.
            return _from_epoch(float(inner) / 1000.0, field_name)
        return _timestamp(inner, field_name)
    if isinstance(value, bool):
        raise _Reject(f"{field_name} {_show(value)} is not a timestamp")
    if isinstance(value, datetime):
        return _as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return _from_epoch(_epoch_seconds(float(value), field_name), field_name)
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC.match(text):
            return _from_epoch(_epoch_seconds(float(text), field_name), field_name)
        try:
            return _as_utc(datetime.fromisoformat(text))
        except ValueError:
            pass
        try:
            return _as_utc(email.utils.parsedate_to_datetime(text))  # RFC 2822, as mail and HTTP write
        except (TypeError, ValueError, IndexError):
            pass
        raise _Reject(f"{field_name} {_show(value)} is not a readable time")
    raise _Reject(f"{field_name} {_show(value)} is not a timestamp")


def _epoch_seconds(value: float, field_name: str) -> float:
    """Seconds from an epoch number in s, ms, µs or ns, told apart by magnitude.

    Any date after 1973 in milliseconds exceeds 1e11, while 1e11 seconds is the year 5138.
    """
    if not math.isfinite(value):
        raise _Reject(f"{field_name} {value} is not finite")
    magnitude = abs(value)
    if magnitude >= 1e17:
        return value / 1e9
    if magnitude >= 1e14:
        return value / 1e6
    if magnitude >= 1e11:
        return value / 1e3
    return value


def _from_epoch(seconds: float, field_name: str) -> datetime:
    if not math.isfinite(seconds):
        raise _Reject(f"{field_name} {seconds} is not finite")
    return datetime.fromtimestamp(seconds, timezone.utc)


# ---- numbers and places ----


def _number(value: Any, what: str) -> float:
    """A finite float from a number or numeric text; bools and everything else are rejected."""
    if isinstance(value, bool):
        raise _Reject(f"{what} {_show(value)} is not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Reject(f"{what} {_show(value)} is not a number") from None
    else:
        raise _Reject(f"{what} {_show(value)} is not a number")
    if not math.isfinite(number):
        raise _Reject(f"{what} {_show(value)} is not finite")
    return number


_MONEY = re.compile(
    r"^(?P<pre>[$₹€£]|[A-Za-z]{3}\s)?\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"\s*(?P<post>[A-Za-z]{3})?$"
)
_DECIMAL_KEYS = ("$numberDecimal", "$numberDouble", "$numberInt", "$numberLong")


def _amount_field(doc: _Doc, aliases: tuple[str, ...], what: str) -> tuple[float, str | None] | None:
    found = doc.take(aliases)
    if found is None:
        return None
    amount, currency = _amount(found[1], what)
    if amount < 0:
        raise _Reject(f"{what} {amount:g} is negative")
    return amount, currency


def _amount(value: Any, what: str) -> tuple[float, str | None]:
    """(amount, currency or None) from a number, money text ("$12.50", "1,200 INR"), Mongo
    decimals, or ``{"amount": ..., "currency": ...}``."""
    if isinstance(value, dict):
        for key in _DECIMAL_KEYS:
            if key in value:
                return _number(value[key], what), None
        for key in ("amount", "value"):
            if key in value:
                amount, currency = _amount(value[key], what)
                return amount, _currency_code(value.get("currency")) or currency
        raise _Reject(f"{what} {_show(value)} is not a number")
    if isinstance(value, str):
        text = value.strip()
        try:
            return _number(text, what), None
        except _Reject:
            match = _MONEY.match(text)
            if match is None:
                raise
        code = (match.group("pre") or match.group("post") or "").strip()
        return _number(match.group("num").replace(",", ""), what), _currency_code(code) if code else None
    return _number(value, what), None


def _coordinate(value: Any, what: str) -> float:
    number = _number(value, what)
    limit = 90.0 if what == "latitude" else 180.0
    if not -limit <= number <= limit:
        raise _Reject(f"{what} {number:g} out of range")
    return number


_LAT_KEYS = ("lat", "latitude")
_LON_KEYS = ("lon", "lng", "long", "longitude")


def _point_field(doc: _Doc, mapping: CollectionMapping) -> tuple[float, float] | None:
    found = doc.take(mapping.location)
    if found is not None:
        return _point(found[1], found[0], mapping.list_order)
    lat_found = doc.first(mapping.lat)
    lon_found = doc.first(mapping.lon)
    if lat_found is None and lon_found is None:
        return None
    if lat_found is None or lon_found is None:
        have, missing = ("latitude", "longitude") if lon_found is None else ("longitude", "latitude")
        raise _Reject(f"{have} without {missing}")
    doc.consumed += [lat_found[0], lon_found[0]]
    return _checked(_coordinate(lat_found[1], "latitude"), _coordinate(lon_found[1], "longitude"))


def _checked(lat: float, lon: float) -> tuple[float, float]:
    if not geo.valid_point(lat, lon):  # belt and braces: the same rule the rest of Kairos applies
        raise _Reject(f"invalid point ({lat}, {lon})")
    return lat, lon


def _point(value: Any, alias: str, list_order: str | None) -> tuple[float, float]:
    """(lat, lon) from one location value in any supported shape."""
    if isinstance(value, dict):
        if "coordinates" in value:
            shape = value.get("type", "Point")
            if shape != "Point":
                raise _Reject(f"{alias} GeoJSON type {_show(shape)} is not a Point")
            coords = value["coordinates"]
            if not isinstance(coords, (list, tuple)) or len(coords) not in (2, 3):
                raise _Reject(f"{alias} GeoJSON coordinates {_show(coords)} are not [lng, lat]")
            return _checked(_coordinate(coords[1], "latitude"), _coordinate(coords[0], "longitude"))
        lat_key = next((k for k in _LAT_KEYS if k in value), None)
        lon_key = next((k for k in _LON_KEYS if k in value), None)
        if lat_key and lon_key:
            return _checked(_coordinate(value[lat_key], "latitude"), _coordinate(value[lon_key], "longitude"))
        raise _Reject(
            f"{alias} {_show(value)} has no coordinates "
            "(expected GeoJSON Point, {lat, lon}, {lat, lng} or {latitude, longitude})"
        )
    if isinstance(value, str):
        parts = value.split(",")
        if len(parts) != 2:
            raise _Reject(f"{alias} {_show(value)} is not 'lat,lon' text")
        return _checked(_coordinate(parts[0], "latitude"), _coordinate(parts[1], "longitude"))
    if isinstance(value, (list, tuple)):
        if list_order is None:
            raise _Reject(f"{alias} list {_show(value)} is ambiguous: the mapping declares no list_order")
        if len(value) not in (2, 3):
            raise _Reject(f"{alias} list {_show(value)} is not a point")
        first, second = value[0], value[1]
        if list_order == "lnglat":
            return _checked(_coordinate(second, "latitude"), _coordinate(first, "longitude"))
        return _checked(_coordinate(first, "latitude"), _coordinate(second, "longitude"))
    raise _Reject(f"{alias} {_show(value)} is not a location")


# ---- attrs ----


def _json_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-serialisable deep copy: text keys, finite floats, ISO datetimes, str for the rest."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 64:  # pathological nesting: keep it, flattened to text
        return _show(value, 10_000)
    if isinstance(value, datetime):
        return _as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            # Leaves inline (most values are text and numbers): no call per value on the hot path.
            kind = type(v)
            if kind is str or kind is int or v is None or kind is bool:
                out[k if type(k) is str else str(k)] = v
            elif kind is float:
                out[k if type(k) is str else str(k)] = v if math.isfinite(v) else None
            else:
                out[k if type(k) is str else str(k)] = _json_safe(v, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v, depth + 1) for v in value]
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        try:
            return _json_safe(value.item(), depth + 1)
        except Exception:  # noqa: BLE001
            pass
    return str(value)


__all__ = [
    "CollectionMapping",
    "KINDS",
    "PROFILE_KIND",
    "category_from_text",
    "decode",
    "load_mappings",
    "normalise_category",
    "parse_mappings",
    "parse_timestamp",
]
