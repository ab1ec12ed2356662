"""Batch recomputation of every feature view from the offline event log (pandas).

This is written independently of the streaming steps in :mod:`flows.steps` on purpose: it is the
reference the consistency test holds the stream to ("recomputing any feature from the offline log
at time t gives the value the online store held at t", DESIGN §4). It shares only the *definitions*
(windows, weights, thresholds) from :mod:`kairos.features`.
"""

from __future__ import annotations

import json
from typing import Any

import h3
import numpy as np
import pandas as pd

from kairos import geo
from kairos.features import (
    AFFINITY_WEIGHTS,
    DEMAND_COUNT_KINDS,
    DEMAND_WINDOWS,
    DISCOUNT_THRESHOLD,
    ITEM_COUNT_KINDS,
    ITEM_WINDOWS,
    USER_COUNT_KINDS,
    USER_WINDOWS,
    WINDOWS,
)

ITEM_KINDS = ("offer", "event", "service", "product", "informative")
ENGAGEMENTS = ("view", "click", "save", "purchase", "booking")
DEMAND_KINDS = {"search": "search", "voice": "search", "view": "view", "click": None, "save": None,
                "purchase": "purchase", "booking": "purchase"}


def prepare(events: pd.DataFrame) -> pd.DataFrame:
    """Add epoch seconds, the counting bucket and the lifecycle op; sort by (ts, event_id)."""
    df = events.copy()
    df["t"] = df["ts"].map(lambda x: x.timestamp())
    df["bucket"] = df["kind"].replace({"booking": "purchase"})
    df["op"] = df["attrs"].map(lambda a: json.loads(a).get("op", "create") if a else "create")
    df["vf"] = df["valid_from"].map(lambda x: None if pd.isna(x) else x.timestamp())
    df["vt"] = df["valid_to"].map(lambda x: None if pd.isna(x) else x.timestamp())
    return df.sort_values(["t", "event_id"], kind="stable").reset_index(drop=True)


def _window(df: pd.DataFrame, as_of: float, w: str) -> pd.DataFrame:
    return df[(df["t"] > as_of - WINDOWS[w].total_seconds()) & (df["t"] <= as_of)]


def _none(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else x


def _discount(price: Any, original: Any) -> float | None:
    if _none(price) is None or _none(original) is None or original <= 0:
        return None
    return max(0.0, 1.0 - price / original)


# ------------------------------------------------------------------------------------------- views
def user_events(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["actor_type"] == "user") & df["kind"].isin([*USER_COUNT_KINDS, "booking"])]


def user_activity(user_df: pd.DataFrame, user_id: str, as_of: float, home_resolution: int,
                  travel_km: float) -> dict[str, Any]:
    past = user_df[user_df["t"] <= as_of]
    row: dict[str, Any] = {"user_id": user_id, "as_of": float(past["t"].max())}
    for w in USER_WINDOWS:
        counts = _window(past, as_of, w)["bucket"].value_counts()
        for kind in USER_COUNT_KINDS:
            row[f"{kind}_count_{w}"] = int(counts.get(kind, 0))
    week = _window(past, as_of, "7d")
    scored = week[week["category"].notna() & week["bucket"].isin(list(AFFINITY_WEIGHTS))]
    weights = scored.assign(w=scored["bucket"].map(AFFINITY_WEIGHTS)).groupby("category")["w"].sum()
    total = float(weights.sum())
    row["category_affinity"] = (json.dumps({c: round(float(v) / total, 6) for c, v in sorted(weights.items())})
                                if total else None)
    row["top_category"] = (sorted(weights.items(), key=lambda cv: (-cv[1], cv[0]))[0][0] if total else None)
    paid = week.loc[(week["bucket"] == "purchase") & week["price"].notna(), "price"]
    row["spend_7d"] = float(paid.sum())
    row["typical_price_paid"] = float(paid.median()) if len(paid) else None
    engaged = week[week["bucket"].isin(["click", "save", "purchase"])]
    flags = [(_discount(p, o) or 0.0) >= DISCOUNT_THRESHOLD for p, o in zip(engaged["price"], engaged["original_price"],
                                                                             strict=True)]
    row["discount_sensitivity"] = sum(flags) / len(flags) if flags else None
    pings = week[(week["bucket"] == "location") & week["cell"].notna()]
    homes = pings["cell"].map(lambda c: h3.cell_to_parent(c, home_resolution)).value_counts()
    home = sorted(homes.items(), key=lambda cv: (-cv[1], cv[0]))[0][0] if len(homes) else None
    row["home_cell"] = home
    located = past[past["lat"].notna() & past["lon"].notna()]
    if len(located):
        last = located.iloc[-1]  # sorted by (t, event_id)
        row["last_lat"], row["last_lon"], row["last_cell"] = float(last["lat"]), float(last["lon"]), _none(last["cell"])
    else:
        row["last_lat"] = row["last_lon"] = row["last_cell"] = None
    distance = None
    if row["last_lat"] is not None and home is not None:
        distance = geo.haversine_km(row["last_lat"], row["last_lon"], *h3.cell_to_latlng(home))
    row["distance_from_home_km"] = distance
    row["travelling"] = bool(distance is not None and distance > travel_km)
    return row


def item_events(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["item_id"].notna() & df["kind"].isin([*ITEM_KINDS, *ENGAGEMENTS])]


def item_state(lifecycle: pd.DataFrame) -> dict[str, Any]:
    """Merged attributes: last non-null value of each field over non-delete events; deleted when the
    last create-or-delete is a delete."""
    kept = lifecycle[lifecycle["op"] != "delete"]
    business = kept["actor_id"].where(~kept["actor_id"].isin(["", "unknown"]))
    state: dict[str, Any] = {"business_id": _last(business)}
    for col in ("category", "cell", "price", "original_price", "vf", "vt"):
        state[col] = _last(kept[col])
    toggles = lifecycle[lifecycle["op"].isin(["create", "delete"])]
    state["deleted"] = bool(len(toggles)) and toggles.iloc[-1]["op"] == "delete"
    return state


def _last(series: pd.Series) -> Any:
    present = series.dropna()
    return _none(present.iloc[-1]) if len(present) else None


def _active(state: dict[str, Any], at: float) -> bool:
    if state["deleted"]:
        return False
    if state["vf"] is not None and at < state["vf"]:
        return False
    return not (state["vt"] is not None and at >= state["vt"])


def item_stats(item_df: pd.DataFrame, item_id: str, as_of: float) -> dict[str, Any]:
    past = item_df[item_df["t"] <= as_of]
    lifecycle = past[past["kind"].isin(ITEM_KINDS)]
    engaged = past[past["kind"].isin(ENGAGEMENTS)]
    row: dict[str, Any] = {"item_id": item_id, "as_of": float(past["t"].max())}
    for w in ITEM_WINDOWS:
        counts = _window(engaged, as_of, w)["bucket"].value_counts()
        for kind in ITEM_COUNT_KINDS:
            row[f"{kind}_count_{w}"] = int(counts.get(kind, 0))
    views = row["view_count_24h"]
    row["ctr_24h"] = row["click_count_24h"] / views if views else None
    row["conversion_24h"] = row["purchase_count_24h"] / views if views else None
    state = item_state(lifecycle) if len(lifecycle) else None
    if state is None:
        row.update(price=None, original_price=None, discount=None, active=False, time_left_s=None,
                   category=None, business_id=None, cell=None)
        return row
    row["price"], row["original_price"] = state["price"], state["original_price"]
    row["discount"] = _discount(state["price"], state["original_price"])
    row["active"] = _active(state, as_of)
    row["time_left_s"] = max(0.0, state["vt"] - as_of) if state["vt"] is not None else None
    row["category"], row["business_id"], row["cell"] = state["category"], state["business_id"], state["cell"]
    return row


def item_states_at(items_df: pd.DataFrame, as_of: float) -> pd.DataFrame:
    """Merged state of every item from its lifecycle events up to ``as_of``."""
    lifecycle = items_df[items_df["kind"].isin(ITEM_KINDS) & (items_df["t"] <= as_of)]
    states = []
    for item_id, group in lifecycle.groupby("item_id", sort=False):
        state = item_state(group)
        state["item_id"], state["updated"] = item_id, float(group["t"].max())
        states.append(state)
    return pd.DataFrame(states)


def cell_supply(items_df: pd.DataFrame, cell: str, category: str, as_of: float) -> dict[str, Any]:
    states = item_states_at(items_df, as_of)
    here = states[(states["cell"] == cell) & (states["category"] == category)] if len(states) else states
    active = [s for s in here.to_dict("records") if _active(s, as_of)]
    prices = [s["price"] for s in active if _none(s["price"]) is not None]
    discounts = [d for s in active if (d := _discount(s["price"], s["original_price"])) is not None]
    return {
        "cell": cell, "category": category,
        "as_of": float(here["updated"].max()) if len(here) else None,
        "active_items": len(active),
        "median_price": float(np.median(prices)) if prices else None,
        "p25_price": float(np.quantile(prices, 0.25)) if prices else None,
        "mean_discount": float(np.mean(discounts)) if discounts else None,
    }


def demand_events(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["actor_type"] == "user") & df["kind"].isin(list(DEMAND_KINDS))
              & df["cell"].notna() & df["category"].notna()]


def cell_demand(key_df: pd.DataFrame, cell: str, category: str, as_of: float) -> dict[str, Any]:
    past = key_df[key_df["t"] <= as_of]
    row: dict[str, Any] = {"cell": cell, "category": category, "as_of": float(past["t"].max())}
    buckets = past["kind"].map(DEMAND_KINDS)
    for w in DEMAND_WINDOWS:
        inside = (past["t"] > as_of - WINDOWS[w].total_seconds())
        counts = buckets[inside].value_counts()
        for kind in DEMAND_COUNT_KINDS:
            row[f"{kind}_count_{w}"] = int(counts.get(kind, 0))
        row[f"distinct_users_{w}"] = int(past.loc[inside, "actor_id"].nunique())
    return row
