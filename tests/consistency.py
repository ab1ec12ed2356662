"""Shared check: every online feature row equals its batch recomputation from the offline log."""

from __future__ import annotations

import json
import math
from typing import Any

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.stores.offline_log import OfflineLog
from kairos.stores.online_features import OnlineFeatures
from offline import batch_features as batch


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        # Sums of the same floats in another order may differ in the last bits, nothing more.
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def diff(view: str, online: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    problems = []
    for name in VIEWS[view].field_names:
        a, b = online.get(name), expected.get(name)
        if name == "category_affinity" and a is not None and b is not None:
            ja, jb = json.loads(a), json.loads(b)
            if ja.keys() == jb.keys() and all(same(ja[k], jb[k]) for k in ja):
                continue
        if not same(a, b):
            problems.append(f"{name}: online={a!r} batch={b!r}")
    return problems


def check_consistency(settings: Settings, features: OnlineFeatures) -> dict[str, int]:
    """Compare every entity of every view; raise AssertionError listing mismatches. Returns key counts."""
    events = batch.prepare(OfflineLog(settings.offline_dir).read_events())
    problems: list[str] = []
    checked: dict[str, int] = {}

    def compare(view: str, keys: list[dict[str, str]], expected_of) -> None:
        rows = features.read(view, keys)
        checked[view] = len(keys)
        for key, online in zip(keys, rows, strict=True):
            if online is None:
                problems.append(f"{view} {key}: missing online")
                continue
            expected = expected_of(key, online["as_of"])
            if not same(online["as_of"], expected["as_of"]):
                problems.append(f"{view} {key}: as_of online={online['as_of']} batch={expected['as_of']}")
            problems.extend(f"{view} {key}: {p}" for p in diff(view, online, expected))

    users = dict(tuple(batch.user_events(events).groupby("actor_id")))
    compare("user_activity", [{"user_id": u} for u in users],
            lambda k, t: batch.user_activity(users[k["user_id"]], k["user_id"], t, settings.home_resolution,
                                             settings.travel_km))
    items_df = batch.item_events(events)
    items = dict(tuple(items_df.groupby("item_id")))
    compare("item_stats", [{"item_id": i} for i in items],
            lambda k, t: batch.item_stats(items[k["item_id"]], k["item_id"], t))
    demand = dict(tuple(batch.demand_events(events).groupby(["cell", "category"])))
    compare("cell_demand", [{"cell": c, "category": g} for c, g in demand],
            lambda k, t: batch.cell_demand(demand[(k["cell"], k["category"])], k["cell"], k["category"], t))
    final = batch.item_states_at(items_df, float("inf"))
    supply_keys = final[final["cell"].notna() & final["category"].notna()][["cell", "category"]].drop_duplicates()
    compare("cell_supply", supply_keys.to_dict("records"),
            lambda k, t: batch.cell_supply(items_df, k["cell"], k["category"], t))
    assert not problems, f"{len(problems)} mismatches, first ones:\n" + "\n".join(problems[:20])
    return checked


def event_count(settings: Settings) -> int:
    return len(OfflineLog(settings.offline_dir).read_events())


__all__ = ["check_consistency", "event_count", "same"]
