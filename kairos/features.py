"""Feature view specifications (DESIGN §4): one source of truth for names, keys, types and windows.

The Feast definitions in ``feature_repo/``, the streaming steps in ``flows/`` and the batch
recomputation in ``offline/`` all read these specs, so a field cannot exist in one and not the
others. Windows are event-time windows ``(as_of - w, as_of]``; ``as_of`` is the event time of the
newest event seen for the entity and is stored with every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

WINDOWS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}

#: Behaviour kinds counted per user; ``booking`` counts as ``purchase`` everywhere.
USER_COUNT_KINDS = ("location", "search", "voice", "view", "click", "save", "purchase")
USER_WINDOWS = ("1h", "24h", "7d")
ITEM_COUNT_KINDS = ("view", "click", "save", "purchase")
ITEM_WINDOWS = ("15m", "1h", "24h")
DEMAND_COUNT_KINDS = ("search", "view", "purchase")
DEMAND_WINDOWS = ("15m", "1h", "24h")

#: How much each engagement says about interest in a category (category affinity weights).
AFFINITY_WEIGHTS = {"search": 1.0, "voice": 1.0, "view": 1.0, "click": 2.0, "save": 3.0, "purchase": 5.0}
#: A discount at least this deep counts as "discounted" for discount sensitivity.
DISCOUNT_THRESHOLD = 0.10


def count_kind(kind: str) -> str:
    """The counting bucket of an event kind (bookings are purchases)."""
    return "purchase" if kind == "booking" else kind


@dataclass(frozen=True)
class FieldSpec:
    name: str
    dtype: str  # "int", "float", "str", "bool"
    description: str = ""


@dataclass(frozen=True)
class ViewSpec:
    name: str
    entities: tuple[str, ...]  # join keys
    fields: tuple[FieldSpec, ...]
    description: str
    freshness_s: int  # freshness objective: how old a row may be before analysts should worry

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


def _counts(kinds: tuple[str, ...], windows: tuple[str, ...], what: str) -> list[FieldSpec]:
    return [FieldSpec(f"{k}_count_{w}", "int", f"{k} {what} in the last {w}") for k in kinds for w in windows]


AS_OF = FieldSpec("as_of", "float", "event time (epoch s) the row is computed as of")

USER_ACTIVITY = ViewSpec(
    name="user_activity",
    entities=("user_id",),
    description="What a user did recently, where they are and what they like.",
    freshness_s=60,
    fields=(
        *_counts(USER_COUNT_KINDS, USER_WINDOWS, "events"),
        FieldSpec("category_affinity", "str", "JSON {category: share} of weighted engagement, 7d"),
        FieldSpec("top_category", "str", "category with the highest affinity, 7d"),
        FieldSpec("spend_7d", "float", "sum of prices paid, 7d"),
        FieldSpec("typical_price_paid", "float", "median price paid, 7d"),
        FieldSpec("discount_sensitivity", "float", "share of clicks/saves/purchases on discounted items, 7d"),
        FieldSpec("last_lat", "float", "latest known latitude"),
        FieldSpec("last_lon", "float", "latest known longitude"),
        FieldSpec("last_cell", "str", "H3 cell of the latest location"),
        FieldSpec("home_cell", "str", "most frequent coarse cell of location pings, 7d"),
        FieldSpec("distance_from_home_km", "float", "distance from the latest location to home"),
        FieldSpec("travelling", "bool", "latest location is far from home"),
        AS_OF,
    ),
)

ITEM_STATS = ViewSpec(
    name="item_stats",
    entities=("item_id",),
    description="Engagement and current state of an offer, event or service.",
    freshness_s=60,
    fields=(
        *_counts(ITEM_COUNT_KINDS, ITEM_WINDOWS, "events"),
        FieldSpec("ctr_24h", "float", "clicks / views, 24h"),
        FieldSpec("conversion_24h", "float", "purchases / views, 24h"),
        FieldSpec("price", "float", "current price"),
        FieldSpec("original_price", "float", "price before discount"),
        FieldSpec("discount", "float", "1 - price / original_price"),
        FieldSpec("active", "bool", "valid at as_of and not deleted"),
        FieldSpec("time_left_s", "float", "seconds until valid_to at as_of"),
        FieldSpec("category", "str", "normalised category"),
        FieldSpec("business_id", "str", "owner"),
        FieldSpec("cell", "str", "H3 cell of the item"),
        AS_OF,
    ),
)

CELL_DEMAND = ViewSpec(
    name="cell_demand",
    entities=("cell", "category"),
    description="Demand signals (searches, views, purchases, distinct users) in a cell for a category.",
    freshness_s=120,
    fields=(
        *_counts(DEMAND_COUNT_KINDS, DEMAND_WINDOWS, "events"),
        *[FieldSpec(f"distinct_users_{w}", "int", f"distinct users with demand in the last {w}") for w in DEMAND_WINDOWS],
        AS_OF,
    ),
)

CELL_SUPPLY = ViewSpec(
    name="cell_supply",
    entities=("cell", "category"),
    description="Active items of a category in a cell and their prices.",
    freshness_s=300,
    fields=(
        FieldSpec("active_items", "int", "items valid at as_of"),
        FieldSpec("median_price", "float", "median price of active items"),
        FieldSpec("p25_price", "float", "lower-quartile price of active items"),
        FieldSpec("mean_discount", "float", "mean discount of active items"),
        AS_OF,
    ),
)

VIEWS: dict[str, ViewSpec] = {v.name: v for v in (USER_ACTIVITY, ITEM_STATS, CELL_DEMAND, CELL_SUPPLY)}
