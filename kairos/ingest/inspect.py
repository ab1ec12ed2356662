"""Look at a MongoDB database and propose the collection → decoder mapping for it.

"Take the Mongo URL and find the relevant data": :func:`inspect_database` samples every
collection, recognises by field names and value types what each one holds (ids of users and
businesses and items, timestamps, GeoJSON or lat/lon shapes, prices, titles, queries, kinds), and
proposes a :class:`~kairos.decoding.CollectionMapping` per collection in the format of
``kairos/collections.yaml``. Every proposal is then *tried*: the sampled documents are decoded
with it, and the share that decodes is the core of its confidence. :func:`render_yaml` writes
the proposal as a mapping file (with the reasons as comments) that ``KAIROS_COLLECTIONS_FILE``
can point at after a review.

>>> docs = [{"_id": f"p{i}", "user_id": f"u{i % 3}", "ts": 1714557600 + i,
...          "coords": [-73.98, 40.73]} for i in range(20)]
>>> proposal = propose_collection("pings", docs)
>>> proposal["mapping"]["kind"], proposal["mapping"]["actor_id"], proposal["mapping"]["location"]
('location', ['user_id'], ['coords'])
>>> proposal["decoded"], proposal["confidence"] >= 0.8
(20, True)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import yaml

from kairos.decoding import decode, parse_mappings, parse_timestamp
from kairos.schema import DeadLetter
from kairos.stores.event_store import SourceRecord
from kairos.stores.mongo_store import to_json_like

#: Share of the sampled documents a field must fill to be proposed as the main alias.
MAIN_SHARE = 0.5
#: Share of a field's present values that must have the expected type.
TYPE_SHARE = 0.8

# ---- vocabularies (names are compared folded: lower case, letters and digits only) ----

USER_ID_NAMES = ("userid", "uid", "user", "useruuid", "customerid", "customer", "memberid", "accountid",
                 "clientid", "buyerid", "visitorid", "profileid", "personid")
BUSINESS_ID_NAMES = ("businessid", "business", "merchantid", "merchant", "bizid", "biz", "ownerid", "shopid",
                     "storeid", "vendorid", "vendor", "sellerid", "venueid", "providerid", "partnerid", "companyid")
ITEM_ID_NAMES = ("itemid", "item", "offerid", "eventid", "serviceid", "productid", "listingid", "dealid", "sku",
                 "targetid", "slotid")
#: Event-time names, best first. Items prefer their last change; behaviour its own time.
EVENT_TIME_NAMES = ("ts", "timestamp", "time", "at", "occurredat", "happenedat", "recordedat", "eventtime",
                    "datetime", "date", "epoch", "sentat", "clientts", "paidat", "orderedat", "searchedat")
UPDATE_TIME_NAMES = ("updatedat", "updated", "modifiedat", "modified", "lastmodified", "changedat", "deletedat",
                     "editedat")
CREATE_TIME_NAMES = ("createdat", "created", "createdon", "insertedat", "publishedat", "postedat", "signup",
                     "signedupat", "registeredat", "joinedat")
VALID_FROM_NAMES = ("validfrom", "starts", "from", "availablefrom", "activefrom", "validstart", "window.start",
                    "valid.from", "validity.from")
VALID_TO_NAMES = ("validto", "ends", "until", "availableuntil", "expiresat", "expires", "expiry", "validuntil",
                  "activeuntil", "validend", "window.end", "valid.to", "validity.to")
STARTS_AT_NAMES = ("startsat", "eventstart", "when", "begins", "starttime", "slotstart", "startdate", "kickoff",
                   "eventdate", "start")
LOCATION_NAMES = ("location", "loc", "geo", "position", "coords", "coordinates", "point", "place", "gps", "home",
                  "latlng", "latlon", "where")
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "lng", "long", "longitude")
PRICE_NAMES = ("price", "amount", "cost", "saleprice", "reducedprice", "dealprice", "offerprice", "finalprice",
               "total", "paid", "priceseen", "fee", "fare")
ORIGINAL_PRICE_NAMES = ("originalprice", "was", "listprice", "regularprice", "compareatprice", "fullprice",
                        "originalamount", "oldprice", "msrp", "rrp", "strikeprice")
CURRENCY_NAMES = ("currency", "ccy", "cur", "currencycode")
TITLE_NAMES = ("title", "name", "headline", "label", "subject")
DESCRIPTION_NAMES = ("description", "details", "blurb", "summary", "body", "desc", "about")
QUERY_NAMES = ("query", "q", "keywords", "searchterm", "term", "search", "searchquery")
TRANSCRIPT_NAMES = ("transcript", "utterance", "speech", "spoken")
FREE_TEXT_NAMES = ("text", "message", "content")
CATEGORY_NAMES = ("category", "categories", "segment", "tags", "cat", "genre", "vertical")
KIND_FIELD_NAMES = ("action", "event", "type", "kind", "eventtype", "verb", "activity", "interaction",
                    "ordertype", "eventname")

#: Source verbs → canonical kinds (the packaged mapping's vocabulary and common synonyms).
KIND_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("view", "viewed", "open", "opened", "detail", "pageview", "page_view", "visit_item"), "view"),
    **dict.fromkeys(("click", "clicked", "tap", "tapped", "select"), "click"),
    **dict.fromkeys(("save", "saved", "bookmark", "favorite", "favourite", "like", "wishlist"), "save"),
    **dict.fromkeys(("dismiss", "dismissed", "hide", "not_interested", "skip"), "dismiss"),
    **dict.fromkeys(("impression", "shown", "impressed"), "impression"),
    **dict.fromkeys(("purchase", "buy", "bought", "order", "sale", "checkout", "paid"), "purchase"),
    **dict.fromkeys(("booking", "book", "booked", "reservation", "reserve", "appointment", "ticket"), "booking"),
    **dict.fromkeys(("search", "query"), "search"),
    **dict.fromkeys(("voice", "transcript"), "voice"),
    **dict.fromkeys(("location", "ping", "gps", "checkin", "check_in"), "location"),
    **dict.fromkeys(("report", "flag", "complaint"), "report"),
}

#: Collection-name words → what a collection holds. Checked in order; the first match wins.
USER_PROFILE_WORDS = ("users", "customers", "members", "accounts", "profiles", "people")
BUSINESS_PROFILE_WORDS = ("businesses", "merchants", "shops", "stores", "vendors", "venues", "partners",
                          "companies", "sellers")
BEHAVIOUR_NAME_KINDS = (
    (("ping", "location", "position", "gps", "geo", "checkin", "trajector"), "location"),
    (("search", "quer"), "search"),
    (("voice", "transcript", "utterance", "speech"), "voice"),
    (("booking", "reservation", "appointment", "ticket"), "booking"),
    (("order", "purchase", "transaction", "payment", "sale", "checkout"), "purchase"),
    (("report", "flag", "complaint"), "report"),
    (("impression",), "impression"),
    (("click",), "click"),
    (("save", "bookmark", "favorite", "favourite", "wishlist"), "save"),
    (("view", "visit"), "view"),
)
ITEM_NAME_KINDS = (
    (("offer", "deal", "discount", "promo", "coupon"), "offer"),
    (("event", "match", "concert", "show", "fixture", "gig", "festival"), "event"),
    (("service", "slot", "appointment", "treatment", "class"), "service"),
    (("product", "catalog", "inventory", "goods", "listing"), "product"),
    (("notice", "announcement", "info", "news", "community", "bulletin"), "informative"),
)
ENGAGEMENT_KINDS = ("view", "click", "save", "dismiss", "impression", "purchase", "booking")


def fold(name: str) -> str:
    """``createdAt`` and ``created_at`` alike: lower case, letters, digits and dots only."""
    return re.sub(r"[^a-z0-9.]", "", name.lower())


# --------------------------------------------------------------------------------------------
# Field statistics
# --------------------------------------------------------------------------------------------


@dataclass
class FieldStats:
    """Values of one field path across the sampled documents."""

    path: str
    values: list[Any] = field(default_factory=list)

    @property
    def folded(self) -> str:
        return fold(self.path)

    @property
    def leaf(self) -> str:
        return fold(self.path.rsplit(".", 1)[-1])

    def share(self, n_docs: int) -> float:
        return len(self.values) / n_docs if n_docs else 0.0

    def share_of(self, predicate: Any) -> float:
        """Share of the present values that satisfy ``predicate``."""
        if not self.values:
            return 0.0
        return sum(1 for v in self.values if predicate(v)) / len(self.values)


def field_stats(docs: list[dict[str, Any]], max_depth: int = 3) -> dict[str, FieldStats]:
    """Path → present (non-null, non-empty) values; objects are also walked into."""
    stats: dict[str, FieldStats] = {}

    def walk(value: Any, path: str, depth: int) -> None:
        if value is None or value == "" or value == [] or value == {}:
            return
        stats.setdefault(path, FieldStats(path)).values.append(value)
        if isinstance(value, dict) and depth < max_depth:
            for key, inner in value.items():
                walk(inner, f"{path}.{key}", depth + 1)

    for doc in docs:
        for key, value in doc.items():
            walk(value, str(key), 1)
    return stats


# ---- value shapes ----


def is_id(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value.strip()) <= 200) or (
        isinstance(value, int) and not isinstance(value, bool))


def is_timestamp(value: Any) -> bool:
    if isinstance(value, bool) or isinstance(value, (dict, list)) and not (
            isinstance(value, dict) and "$date" in value):
        return False
    try:
        parse_timestamp(value, "t")
    except (ValueError, TypeError, OverflowError):
        return False
    return True


_MONEY_TEXT = re.compile(r"^\s*(?:[$₹€£]|[A-Za-z]{3}\s)?\s*\d[\d,]*(?:\.\d+)?\s*(?:[A-Za-z]{3})?\s*$")


def is_amount(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value >= 0
    if isinstance(value, str):
        return bool(_MONEY_TEXT.match(value))
    if isinstance(value, dict):
        return any(is_amount(value.get(k)) for k in ("amount", "value"))
    return False


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and not is_timestamp(value)


def is_category(value: Any) -> bool:
    if isinstance(value, list):
        return any(isinstance(v, str) and v.strip() for v in value)
    return isinstance(value, str) and 0 < len(value.strip()) <= 80


def _lat_ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -90 <= value <= 90


def _lon_ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -180 <= value <= 180


def _number_text(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


SHAPE_WORDS = {"geojson": "GeoJSON points", "object": "{lat, lon} objects", "text": "'lat,lon' text",
               "list": "coordinate lists"}


def point_shape(value: Any) -> str | None:
    """Which supported location shape ``value`` has: ``geojson``, ``object`` ({lat, lon}-like),
    ``text`` ("lat,lon") or ``list`` (two numbers, order unknown); None for anything else."""
    if isinstance(value, dict):
        coords = value.get("coordinates")
        if value.get("type", "Point") == "Point" and isinstance(coords, list) and len(coords) in (2, 3) and (
                _lon_ok(coords[0]) and _lat_ok(coords[1])):
            return "geojson"
        lat = next((value[k] for k in ("lat", "latitude") if k in value), None)
        lon = next((value[k] for k in ("lon", "lng", "long", "longitude") if k in value), None)
        if _lat_ok(_number_text(lat)) and _lon_ok(_number_text(lon)):
            return "object"
        return None
    if isinstance(value, str):
        parts = value.split(",")
        if len(parts) == 2 and _lat_ok(_number_text(parts[0])) and _lon_ok(_number_text(parts[1])):
            return "text"
        return None
    if isinstance(value, list) and len(value) in (2, 3) and all(_lon_ok(v) for v in value[:2]):
        return "list"
    return None


# --------------------------------------------------------------------------------------------
# Proposing one collection's mapping
# --------------------------------------------------------------------------------------------


@dataclass
class _Finder:
    stats: dict[str, FieldStats]
    docs: list[dict[str, Any]]
    taken: set[str] = field(default_factory=set)

    @property
    def n_docs(self) -> int:
        return len(self.docs)

    def by_names(self, names: Iterable[str], predicate: Any, *, min_share: float = 0.0,
                 nested_ids: bool = False) -> list[FieldStats]:
        """Fields named like ``names`` (in that order of preference) whose values mostly pass
        ``predicate``, not yet used for another canonical field. ``nested_ids``: also an ``id``
        inside an object so named (``merchant.id``, ``user._id``)."""
        wanted = list(names)
        found: list[tuple[float, float, FieldStats]] = []
        for stat in self.stats.values():
            if stat.path in self.taken or stat.path == "_id":
                continue
            rank: float | None = None
            parent = fold(stat.path.rsplit(".", 1)[0]) if "." in stat.path else None
            if stat.folded in wanted:
                rank = wanted.index(stat.folded)
            elif nested_ids and parent in wanted and stat.leaf in ("id", "uid", "uuid") and "." not in parent:
                rank = wanted.index(parent) + 0.5  # merchant.id: a bit behind a top-level merchant_id
            if rank is None or stat.share(self.n_docs) < min_share:
                continue
            if stat.share_of(predicate) < TYPE_SHARE:
                continue
            found.append((rank, -stat.share(self.n_docs), stat))
        found.sort(key=lambda t: (t[0], t[1]))
        return [stat for _, _, stat in found]

    def take(self, stats: list[FieldStats]) -> list[str]:
        """Mark fields (and what is inside them) as used; returns their paths."""
        for stat in stats:
            self.taken.add(stat.path)
            self.taken.update(p for p in self.stats if p.startswith(stat.path + "."))
        return [stat.path for stat in stats]

    @staticmethod
    def coverage(paths: list[str], docs: list[dict[str, Any]]) -> float:
        """Share of documents with at least one of ``paths`` present."""
        if not docs or not paths:
            return 0.0
        hits = sum(1 for doc in docs if any(_get(doc, p) not in (None, "", [], {}) for p in paths))
        return hits / len(docs)


def _get(doc: Any, path: str) -> Any:
    current = doc
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def _pct(share: float) -> str:
    return f"{share:.0%}"


def _found(paths: list[str], docs: list[dict[str, Any]]) -> str:
    """``a, b (97% of documents)``: the aliases and the share of documents with one of them."""
    return f"{', '.join(paths)} ({_pct(_Finder.coverage(paths, docs))} of documents)"


def _name_kind(name: str, table: tuple[tuple[tuple[str, ...], str], ...]) -> str | None:
    folded = fold(name)
    for words, kind in table:
        if any(word in folded for word in words):
            return kind
    return None


def propose_collection(name: str, documents: list[dict[str, Any]], total: int | None = None) -> dict[str, Any]:
    """Propose a mapping for one collection from sampled documents (raw BSON or JSON-like).

    Returns ``{"mapping": {...} | None, "role": ..., "confidence": 0..1, "reasons": [...],
    "sampled": n, "decoded": k, "documents": total}``; ``mapping`` is None (with the reason) when
    the documents look like no event Kairos knows.
    """
    docs = [to_json_like(d) for d in documents if isinstance(d, Mapping)]
    result: dict[str, Any] = {"mapping": None, "role": None, "confidence": 0.0, "reasons": [],
                              "sampled": len(docs), "decoded": 0, "documents": total}
    reasons: list[str] = result["reasons"]
    if not docs:
        reasons.append("no documents to sample")
        return result
    n = len(docs)
    finder = _Finder(field_stats(docs), docs)
    penalty = 1.0
    mapping: dict[str, Any] = {}

    users = finder.by_names(USER_ID_NAMES, is_id, nested_ids=True)
    businesses = finder.by_names(BUSINESS_ID_NAMES, is_id, nested_ids=True)
    folded_name = fold(name)
    if any(word in folded_name for word in USER_PROFILE_WORDS) and not users:
        role = "user_profile"
    elif any(word in folded_name for word in BUSINESS_PROFILE_WORDS) and not businesses:
        role = "business_profile"
    elif users:
        role = "behaviour"
    elif businesses:
        role = "item"
    else:
        reasons.append("no user or business id field (looked for fields such as user_id, uid, customer_id, "
                       "business_id, merchant.id); not proposed")
        return result
    result["role"] = role

    # ---- actor ----
    if role in ("user_profile", "business_profile"):
        mapping["actor_type"] = "user" if role == "user_profile" else "business"
        mapping["actor_id"] = ["_id"]
        mapping["kind"] = "profile"
        reasons.append(f"{mapping['actor_type']} profiles: the collection name says so and each document is "
                       "one actor (its _id)")
    else:
        actors = users if role == "behaviour" else businesses
        mapping["actor_type"] = "user" if role == "behaviour" else "business"
        mapping["actor_id"] = finder.take(actors)
        reasons.append(f"{mapping['actor_type']} id in {_found(mapping['actor_id'], docs)}")
        if role == "behaviour" and businesses:
            reasons.append(f"{businesses[0].path} names a business too; kept in attrs")

    # ---- time ----
    is_item = role == "item"
    if is_item:
        time_names = UPDATE_TIME_NAMES + EVENT_TIME_NAMES + CREATE_TIME_NAMES
    elif role == "behaviour":
        time_names = EVENT_TIME_NAMES + CREATE_TIME_NAMES + UPDATE_TIME_NAMES
    else:
        time_names = UPDATE_TIME_NAMES + CREATE_TIME_NAMES + EVENT_TIME_NAMES
    validity_names = set(VALID_FROM_NAMES + VALID_TO_NAMES + STARTS_AT_NAMES)
    times = [s for s in finder.by_names(time_names, is_timestamp) if s.folded not in validity_names]
    if not times:
        # Any other field full of timestamps, whatever its name, is better than none.
        times = [s for s in finder.stats.values()
                 if s.path not in finder.taken and s.path != "_id" and s.folded not in validity_names
                 and s.share(n) >= MAIN_SHARE and s.share_of(is_timestamp) >= TYPE_SHARE]
        times.sort(key=lambda s: -s.share(n))
    if times:
        mapping["ts"] = finder.take(times)
        coverage = finder.coverage(mapping["ts"], docs)
        reasons.append(f"event time from {', '.join(mapping['ts'])} ({_pct(coverage)} of documents; "
                       f"{_time_format(times[0].values)})")
        if role in ("user_profile", "business_profile") or coverage < 0.95:
            mapping["ts_fallback"] = "appended"
            if coverage < 0.95 and role not in ("user_profile", "business_profile"):
                reasons.append("some documents carry no time: they take the time MongoDB recorded them")
    else:
        mapping["ts"] = ["created_at"] if role != "behaviour" else ["ts"]
        mapping["ts_fallback"] = "appended"
        penalty *= 0.8 if role in ("user_profile", "business_profile") else 0.6
        reasons.append("no timestamp field found: events take the time MongoDB recorded the change (in the "
                       "snapshot, the ObjectId's creation time)")

    # ---- kind ----
    if role == "behaviour":
        penalty *= _behaviour_kind(name, finder, mapping, reasons)
        if "kind" not in mapping and "kind_field" not in mapping:
            reasons.append("cannot tell what kind of behaviour this is (no action/type field, no telling name); "
                           "not proposed")
            return result
    elif is_item:
        kind = _name_kind(name, ITEM_NAME_KINDS)
        if kind is None:
            has_start = bool(finder.by_names(STARTS_AT_NAMES, is_timestamp))
            has_original = bool(finder.by_names(ORIGINAL_PRICE_NAMES, is_amount))
            kind = "event" if has_start else "offer"
            penalty *= 0.85
            reasons.append(f"items of kind '{kind}' (guessed from the fields: "
                           f"{'a start time' if has_start else 'an original price' if has_original else 'no start time'}"
                           "; the name says nothing)")
        else:
            reasons.append(f"items of kind '{kind}' (the collection name)")
        mapping["kind"] = kind

    # ---- item, text, category ----
    if is_item:
        mapping["item_id"] = ["_id"]
    elif role == "behaviour":
        items = finder.by_names(ITEM_ID_NAMES, is_id, nested_ids=True)
        if items:
            mapping["item_id"] = finder.take(items)
            reasons.append(f"item id in {_found(mapping['item_id'], docs)}")
    if is_item:
        titles = finder.by_names(TITLE_NAMES, is_text)
        descriptions = finder.by_names(DESCRIPTION_NAMES, is_text)
        if titles:
            mapping["title"] = finder.take(titles)
        if descriptions:
            mapping["description"] = finder.take(descriptions)
        if titles or descriptions:
            reasons.append(f"item text from {', '.join(mapping.get('title', []) + mapping.get('description', []))}")
    elif role == "behaviour":
        texts = finder.by_names(QUERY_NAMES + TRANSCRIPT_NAMES + FREE_TEXT_NAMES, is_text)
        if texts:
            mapping["text"] = finder.take(texts)
            reasons.append(f"text from {texts[0].path}")
    categories = finder.by_names(CATEGORY_NAMES, is_category)
    if categories:
        mapping["category"] = finder.take(categories)
        reasons.append(f"category from {_found(mapping['category'], docs)}")
    if mapping.get("kind") in ("search", "voice") and "text" in mapping:
        mapping["category_from_text"] = True

    # ---- place ----
    penalty *= _location(finder, mapping, reasons, docs)

    # ---- price ----
    if role in ("behaviour", "item"):
        prices = finder.by_names(PRICE_NAMES, is_amount)
        if prices:
            mapping["price"] = finder.take(prices)
            reasons.append(f"price from {_found(mapping['price'], docs)}")
        originals = finder.by_names(ORIGINAL_PRICE_NAMES, is_amount)
        if originals:
            mapping["original_price"] = finder.take(originals)
    currencies = finder.by_names(CURRENCY_NAMES, lambda v: isinstance(v, str) and 1 <= len(v.strip()) <= 4)
    if currencies and ("price" in mapping or role == "business_profile"):
        mapping["currency"] = finder.take(currencies)

    # ---- validity ----
    if is_item:
        for key, names in (("valid_from", VALID_FROM_NAMES), ("valid_to", VALID_TO_NAMES),
                           ("starts_at", STARTS_AT_NAMES)):
            found = finder.by_names(names, is_timestamp)
            if found:
                mapping[key] = finder.take(found)
        windows = [mapping[k][0] for k in ("valid_from", "valid_to", "starts_at") if k in mapping]
        if windows:
            reasons.append(f"validity and start times from {', '.join(windows)}")

    mapping["required"] = _required(mapping, finder, docs)
    if not mapping["required"]:
        del mapping["required"]

    # ---- try it ----
    decoded, dead = try_mapping(name, mapping, docs)
    result["decoded"] = decoded
    rate = decoded / n
    if dead:
        top = "; ".join(f"{count}× {reason}" for reason, count in dead.most_common(3))
        reasons.append(f"decoded {decoded} of {n} sampled documents; the others would be dead letters: {top}")
    else:
        reasons.append(f"decoded all {n} sampled documents")
    result["mapping"] = _ordered(mapping)
    result["confidence"] = round(rate * penalty, 2)
    return result


def _time_format(values: list[Any]) -> str:
    sample = values[0]
    if isinstance(sample, datetime):
        return "BSON dates"
    if isinstance(sample, dict):
        return "extended JSON dates"
    if isinstance(sample, (int, float)) or (isinstance(sample, str) and _number_text(sample) is not None):
        number = abs(float(sample))
        unit = "ns" if number >= 1e17 else "µs" if number >= 1e14 else "ms" if number >= 1e11 else "s"
        return f"epoch {unit}"
    return "ISO-8601 text" if isinstance(sample, str) and "T" in sample else "date text"


def _behaviour_kind(name: str, finder: _Finder, mapping: dict[str, Any], reasons: list[str]) -> float:
    """Set ``kind`` or ``kind_field``/``kind_map`` of a behaviour collection; returns a penalty."""
    # Several clients may name the verb differently (app: action, web: event): every field whose
    # values are known verbs joins kind_field, and their vocabularies join one kind_map.
    candidates = finder.by_names(KIND_FIELD_NAMES, lambda v: isinstance(v, str) and len(v) <= 40, min_share=0.05)
    fields: list[FieldStats] = []
    values: Counter[str] = Counter()
    for stat in candidates:
        seen = Counter(str(v).strip().lower() for v in stat.values)
        if len(seen) <= 30 and any(v in KIND_SYNONYMS for v in seen):
            fields.append(stat)
            values.update(seen)
    if fields:
        known = {v: KIND_SYNONYMS[v] for v in values if v in KIND_SYNONYMS}
        mapping["kind_field"] = finder.take(fields)
        mapping["kind_map"] = dict(sorted(known.items()))
        unknown = sorted(v for v in values if v not in known)
        covered = sum(c for v, c in values.items() if v in known) / sum(values.values())
        reasons.append(f"kind from {', '.join(mapping['kind_field'])}: "
                       f"{', '.join(f'{k}→{v}' for k, v in sorted(known.items()))}")
        if unknown:
            reasons.append(f"values with no kind (dead letters until mapped): {', '.join(unknown[:8])}")
        default = _name_kind(name, BEHAVIOUR_NAME_KINDS)
        if default is not None and finder.coverage(mapping["kind_field"], finder.docs) < 0.999:
            mapping["kind_default"] = default
            reasons.append(f"documents without a kind field are '{default}' (the collection name)")
        return max(0.5, covered)
    kind = _name_kind(name, BEHAVIOUR_NAME_KINDS)
    if kind is not None:
        mapping["kind"] = kind
        reasons.append(f"every document is a '{kind}' (the collection name)")
        return 1.0
    # The name says nothing: judge by what the documents carry.
    has = {key: bool(finder.by_names(names, check)) for key, names, check in (
        ("transcript", TRANSCRIPT_NAMES, is_text), ("query", QUERY_NAMES, is_text),
        ("price", PRICE_NAMES, is_amount), ("item", ITEM_ID_NAMES, is_id))}
    guess = ("voice" if has["transcript"] else "search" if has["query"] else
             "purchase" if has["price"] and has["item"] else "view" if has["item"] else None)
    if guess is None and any(point_shape(v) for s in finder.stats.values() for v in s.values[:5]):
        guess = "location"
    if guess is None:
        return 1.0
    mapping["kind"] = guess
    reasons.append(f"every document guessed a '{guess}' from its fields (the name says nothing)")
    return 0.75


def _location(finder: _Finder, mapping: dict[str, Any], reasons: list[str], docs: list[dict[str, Any]]) -> float:
    n = finder.n_docs
    whole = [s for s in finder.stats.values()
             if s.path not in finder.taken and s.path != "_id" and s.share_of(point_shape) >= TYPE_SHARE
             and s.share(n) >= 0.05]
    # Prefer known names, then coverage; a GeoJSON object's own "coordinates" list is not a field of its own.
    whole = [s for s in whole if not any(s.path.startswith(o.path + ".") for o in whole)]
    named = {name: i for i, name in enumerate(LOCATION_NAMES)}
    whole.sort(key=lambda s: (named.get(s.leaf, len(named)), -s.share(n)))
    penalty = 1.0
    if whole:
        mapping["location"] = finder.take(whole)
        shapes = Counter(shape for s in whole for v in s.values if (shape := point_shape(v)))
        described = ", ".join(SHAPE_WORDS[shape] for shape, _ in shapes.most_common())
        reasons.append(f"location from {', '.join(mapping['location'])} ({described}; "
                       f"{_pct(finder.coverage(mapping['location'], docs))} of documents)")
        lists = [v for s in whole for v in s.values if point_shape(v) == "list"]
        if lists:
            # Only a longitude exceeds 90; a few stray values (bad data) are not evidence.
            first_big = sum(abs(v[0]) > 90 for v in lists) >= len(lists) / 2
            second_big = sum(abs(v[1]) > 90 for v in lists) >= len(lists) / 2
            if second_big and not first_big:
                mapping["list_order"] = "latlng"
                reasons.append("coordinate lists are [lat, lng] (the second number exceeds 90)")
            else:
                mapping["list_order"] = "lnglat"
                if first_big:
                    reasons.append("coordinate lists are [lng, lat] (the first number exceeds 90)")
                else:
                    penalty = 0.85
                    reasons.append("coordinate lists assumed [lng, lat], MongoDB's and GeoJSON's order: no value "
                                   "tells them apart; check list_order")
    lats = finder.by_names(LAT_NAMES, lambda v: _lat_ok(_number_text(v)))
    lons = finder.by_names(LON_NAMES, lambda v: _lon_ok(_number_text(v)))
    if lats and lons:
        mapping["lat"] = finder.take(lats)
        mapping["lon"] = finder.take(lons)
        reasons.append(f"latitude / longitude in {lats[0].path} / {lons[0].path}")
    return penalty


def _required(mapping: dict[str, Any], finder: _Finder, docs: list[dict[str, Any]]) -> list[str]:
    """Fields every document of the collection should have: what makes its events useful."""
    kind = mapping.get("kind")
    location_paths = mapping.get("location", []) + mapping.get("lat", [])
    has_location = bool(location_paths) and finder.coverage(location_paths, docs) >= 0.9
    required: list[str] = []
    # A ping or an item without a place is useless; other behaviour is still worth counting.
    if has_location and kind in ("location", "offer", "event", "service", "product"):
        required.append("location")
    if kind in ("offer", "service", "product") and mapping.get("price") and finder.coverage(
            mapping["price"], docs) >= 0.9:
        required.append("price")
    if kind in ("search", "voice") and mapping.get("text"):
        required.append("text")
    engagement = kind in ENGAGEMENT_KINDS or "kind_field" in mapping
    if engagement and mapping.get("item_id") and finder.coverage(mapping["item_id"], docs) >= 0.9:
        required.append("item_id")
    return required


_FIELD_ORDER = ("actor_type", "actor_id", "kind", "kind_field", "kind_map", "kind_default", "item_id", "category",
                "category_from_text", "title", "description", "text", "ts", "ts_fallback", "location", "lat", "lon",
                "list_order", "price", "original_price", "currency", "valid_from", "valid_to", "starts_at",
                "required")


def _ordered(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: mapping[key] for key in _FIELD_ORDER if key in mapping}


def try_mapping(name: str, mapping: dict[str, Any], docs: list[dict[str, Any]]) -> tuple[int, Counter[str]]:
    """Decode ``docs`` with ``mapping``: (how many decode, dead-letter reasons with counts)."""
    mappings = parse_mappings(_render_collections({name: _ordered(mapping)}), f"proposal for {name}")
    now = datetime.now(timezone.utc)
    decoded, dead = 0, Counter()
    for i, doc in enumerate(docs):
        outcome = decode(SourceRecord(name, str(i), "insert", doc, now), mappings)
        if isinstance(outcome, DeadLetter):
            # "offers: price '12,5' is not a number" → the part after the collection name
            dead[re.sub(r"'[^']*'|\"[^\"]*\"", "…", outcome.reason.split(": ", 1)[-1])] += 1
        else:
            decoded += 1
    return decoded, dead


# --------------------------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------------------------


def sample_documents(collection: Any, sample: int) -> list[dict[str, Any]]:
    """Up to ``sample`` documents: a random sample where the server offers one, else the first."""
    try:
        return list(collection.aggregate([{"$sample": {"size": sample}}]))
    except Exception:  # noqa: BLE001 - $sample unsupported (old servers, views): read the first ones
        return list(collection.find().limit(sample))


def inspect_database(db: Any, sample: int = 200, collections: Iterable[str] | None = None) -> dict[str, Any]:
    """Propose a mapping for each collection of ``db`` (a pymongo ``Database``).

    Returns ``{"database", "sample", "collections": {name: proposal}, "skipped": {name: reason}}``
    where each proposal is :func:`propose_collection`'s result; :func:`render_yaml` turns it into a
    mapping file.
    """
    if sample < 1:
        raise ValueError("sample must be at least 1")
    names = sorted(collections) if collections is not None else sorted(
        n for n in db.list_collection_names() if not n.startswith("system."))
    proposal: dict[str, Any] = {"database": db.name, "sample": sample, "collections": {}, "skipped": {}}
    for name in names:
        collection = db[name]
        docs = sample_documents(collection, sample)
        if not docs:
            proposal["skipped"][name] = "empty collection"
            continue
        try:
            total = int(collection.estimated_document_count())
        except Exception:  # noqa: BLE001 - a count is a courtesy
            total = None
        result = propose_collection(name, docs, total)
        if result["mapping"] is None:
            proposal["skipped"][name] = result["reasons"][-1]
        else:
            proposal["collections"][name] = result
    return proposal


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    """One YAML flow value, quoted where YAML would misread it (``yes``, ``on``, ``1e3``, ``a: b``)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1_000_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text


def _comment(text: str) -> str:
    return " ".join(str(text).split())


def _render_collections(collections: dict[str, dict[str, Any]], notes: dict[str, list[str]] | None = None) -> str:
    lines = ["version: 1", "", "collections:"]
    for name, mapping in collections.items():
        for note in (notes or {}).get(name, []):
            lines.append(f"  # {_comment(note)}")
        lines.append(f"  {_scalar(name)}:")
        for key, value in mapping.items():
            if isinstance(value, dict):
                lines.append(f"    {key}:")
                lines += [f"      {_scalar(k)}: {_scalar(v)}" for k, v in value.items()]
            else:
                lines.append(f"    {key}: {_scalar(value)}")
        lines.append("")
    return "\n".join(lines)


def render_yaml(proposal: dict[str, Any]) -> str:
    """The proposal as a collections file (``kairos/collections.yaml`` format), reasons as comments."""
    proposed = proposal.get("collections", {})
    header = [
        f"# Collection mappings proposed by `kairos ingest inspect` for database '{proposal.get('database')}'",
        f"# (up to {proposal.get('sample')} documents sampled per collection). Review before use: field names",
        "# and value shapes are evidence, not certainty. Point KAIROS_COLLECTIONS_FILE at this file to decode",
        "# with it; kairos/collections.yaml explains every field.",
    ]
    notes: dict[str, list[str]] = {}
    for name, result in proposed.items():
        sampled, total = result.get("sampled"), result.get("documents")
        of = f" of {total:,}" if isinstance(total, int) else ""
        notes[name] = [f"{name}: {result.get('role', '').replace('_', ' ')} — confidence {result['confidence']:.2f} "
                       f"({result.get('decoded')} of {sampled} sampled{of} documents decode)"]
        notes[name] += [f"  - {reason}" for reason in result.get("reasons", [])]
    body = _render_collections({name: result["mapping"] for name, result in proposed.items()}, notes)
    if not proposed:
        body = "version: 1\n\ncollections: {}\n"
    skipped = proposal.get("skipped", {})
    footer = ["# Not proposed:"] + [f"#   {_comment(name)}: {_comment(reason)}" for name, reason in skipped.items()]
    return "\n".join(header) + "\n\n" + body.rstrip("\n") + "\n" + ("\n" + "\n".join(footer) + "\n" if skipped else "")


__all__ = [
    "KIND_SYNONYMS",
    "field_stats",
    "inspect_database",
    "point_shape",
    "propose_collection",
    "render_yaml",
    "sample_documents",
    "try_mapping",
]
