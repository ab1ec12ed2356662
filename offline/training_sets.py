"""Point-in-time correct training sets from the offline log (DESIGN §5, periodic fine-tuning).

A training example is a *label* — a user engaging with an item at time ``t`` — with what was
known about the user and the item just before ``t``:

* labels come from the canonical events of the offline log: a ``click``, ``save``, ``purchase`` or
  ``booking`` of an item is a positive; ``impression`` events are joined with the feedback that
  follows them exactly as the online learner does (:class:`flows.attribution.AttributionState`:
  reward 1 when a positive comes within the attribution window, else 0);
* features come from Feast historical retrieval (``FeatureStore.get_historical_features``) over the
  feature rows of the offline log, with entity rows stamped one microsecond *before* the label.
  The row the labelled event itself produced carries ``as_of == t`` (a click raises the user's
  click count and category affinity), so stamping the entity row at ``t`` would leak the label;
* the user's context text (recent searches, recently engaged categories, hour) is read from events
  strictly before ``t``; an item's text is its newest lifecycle text strictly before ``t``.

Feast's file (dask) offline store drops entity rows that no feature row precedes; they are merged
back here with empty features, so the set has one row per label whatever the feature log holds.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kairos.schema import ITEM_KINDS, Event

log = logging.getLogger(__name__)

POSITIVE_KINDS = ("click", "save", "purchase", "booking")
#: Engagements that make a history for the next-category model (views say less, but say it often).
HISTORY_KINDS = ("view", "click", "save", "purchase", "booking")
QUERY_KINDS = ("search", "voice")
#: Features read point-in-time from Feast for each label.
USER_FEATURES = ("user_activity:top_category", "user_activity:category_affinity", "user_activity:travelling",
                 "user_activity:click_count_7d", "user_activity:as_of")
ITEM_FEATURES = ("item_stats:category", "item_stats:price", "item_stats:ctr_24h", "item_stats:as_of")
#: Entity rows are stamped this long before the label (Feast includes rows stamped at the entity time).
BEFORE = pd.Timedelta(microseconds=1)
RECENT_QUERIES = 3
RECENT_CATEGORIES = 5
CONTEXT_LOOKBACK_S = 7 * 86400.0


def prepare_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events with epoch seconds ``t``, sorted by (t, event_id)."""
    df = events.copy()
    df["t"] = pd.to_datetime(df["ts"], utc=True).map(lambda x: x.timestamp()).astype(float)
    return df.sort_values(["t", "event_id"], kind="stable").reset_index(drop=True)


def labels_from_events(events: pd.DataFrame, start: float = -math.inf, end: float = math.inf,
                       attribution: Any = None) -> pd.DataFrame:
    """Labels in ``[start, end)``: (user_id, item_id, t, reward, source) sorted by t.

    ``events`` is :func:`prepare_events` output. Engagements are positives (source
    ``engagement``); impressions get the attribution join's reward (source ``impression``).
    """
    users = events[(events["actor_type"] == "user") & events["item_id"].notna()]
    engaged = users[users["kind"].isin(POSITIVE_KINDS)]
    rows = [pd.DataFrame({"user_id": engaged["actor_id"], "item_id": engaged["item_id"], "t": engaged["t"],
                          "reward": 1, "source": "engagement", "kind": engaged["kind"]})]
    impressions = users[users["kind"].isin(("impression", *POSITIVE_KINDS, "dismiss"))]
    if (impressions["kind"] == "impression").any():
        rows.append(_attributed(impressions, attribution))
    labels = pd.concat(rows, ignore_index=True)
    labels = labels[(labels["t"] >= start) & (labels["t"] < end)]
    return labels.sort_values(["t", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def _attributed(events: pd.DataFrame, params: Any) -> pd.DataFrame:
    """Impressions labelled by the flow's own attribution join (one definition of a reward)."""
    from flows.attribution import AttributionParams, AttributionState

    params = params or AttributionParams()
    state = AttributionState()
    examples = []
    for row in events.to_dict("records"):
        event = Event.from_row({k: row[k] for k in Event.__dataclass_fields__ if k in row})
        examples.extend(state.update(event, params))
    examples.extend(state.flush(params))
    final: dict[str, Any] = {}
    for ex in examples:  # a correction replaces the negative it corrects
        final[ex.impression_id] = ex
    return pd.DataFrame({
        "user_id": [e.user_id for e in final.values()], "item_id": [e.item_id for e in final.values()],
        "t": [float(e.impression_ts) for e in final.values()], "reward": [int(e.reward) for e in final.values()],
        "source": "impression", "kind": "impression",
    })


def point_in_time_features(store: Any, labels: pd.DataFrame,
                           features: Sequence[str] = USER_FEATURES + ITEM_FEATURES) -> pd.DataFrame:
    """Feast historical features for each label, as known strictly before its time.

    Returns a frame aligned with ``labels`` (same index), columns ``<view>__<field>``.
    """
    if labels.empty:
        return pd.DataFrame(index=labels.index, columns=[f.replace(":", "__") for f in features])
    entity = pd.DataFrame({
        "user_id": labels["user_id"].astype(str).to_numpy(), "item_id": labels["item_id"].astype(str).to_numpy(),
        "event_timestamp": pd.to_datetime(labels["t"].to_numpy(), unit="s", utc=True) - BEFORE,
        "_row": np.arange(len(labels)),
    })
    import warnings

    columns = [f.replace(":", "__") for f in features]
    # Feast's file store fails on a view whose log folder holds no Parquet yet: leave those empty.
    present = [f for f in features if _has_rows(store, f.split(":")[0])]
    if present:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = store.get_historical_features(entity_df=entity, features=present,
                                                full_feature_names=True).to_df()
        got = got.drop_duplicates("_row").set_index("_row")
    else:
        got = pd.DataFrame(index=pd.Index([], name="_row"))
    # Rows Feast dropped (no feature row before the label) come back empty.
    aligned = got.reindex(index=np.arange(len(labels)), columns=columns)
    aligned.index = labels.index
    return aligned


def _has_rows(store: Any, view: str) -> bool:
    from pathlib import Path

    path = Path(store.get_feature_view(view).batch_source.path)
    return path.is_dir() and any(path.glob("part-*.parquet"))


class EventTimeline:
    """Per-user and per-item event arrays for "what was known before t" look-ups."""

    def __init__(self, events: pd.DataFrame) -> None:
        users = events[events["actor_type"] == "user"]
        queries = users[users["kind"].isin(QUERY_KINDS) & users["text"].notna()]
        self._queries = {u: (g["t"].to_numpy(), g["text"].astype(str).tolist()) for u, g in queries.groupby("actor_id")}
        history = users[users["kind"].isin(HISTORY_KINDS) & users["category"].notna()]
        self._history = {u: (g["t"].to_numpy(), g["category"].astype(str).tolist()) for u, g in
                         history.groupby("actor_id")}
        items = events[events["kind"].isin(ITEM_KINDS) & events["item_id"].notna()]
        self._items = {}
        for item_id, g in items.groupby("item_id"):
            ops = g["attrs"].map(lambda a: json.loads(a).get("op", "create") if a else "create").tolist()
            texts = [(c, x, op) for c, x, op in zip(g["category"].tolist(), g["text"].tolist(), ops, strict=True)]
            self._items[item_id] = (g["t"].to_numpy(), texts)

    def recent_queries(self, user_id: str, t: float, n: int = RECENT_QUERIES) -> list[str]:
        ts, texts = self._queries.get(user_id, (np.empty(0), []))
        end = int(np.searchsorted(ts, t, side="left"))  # strictly before t
        begin = int(np.searchsorted(ts, t - CONTEXT_LOOKBACK_S, side="left"))
        return texts[max(begin, end - n):end][::-1]

    def history(self, user_id: str, t: float) -> list[str]:
        """Categories the user engaged with strictly before ``t``, oldest first."""
        ts, cats = self._history.get(user_id, (np.empty(0), []))
        return cats[:int(np.searchsorted(ts, t, side="left"))]

    def users(self) -> list[str]:
        """Users with an engagement history."""
        return sorted(self._history)

    def history_at(self, user_id: str) -> tuple[np.ndarray, list[str]]:
        return self._history.get(user_id, (np.empty(0), []))

    def item_text(self, item_id: str, t: float) -> str | None:
        """The item's text as its newest lifecycle events strictly before ``t`` left it."""
        ts, rows = self._items.get(item_id, (np.empty(0), []))
        end = int(np.searchsorted(ts, t, side="left"))
        category = text = None
        for c, x, op in rows[:end]:
            if op == "delete":
                continue
            category = c if isinstance(c, str) else category
            text = x if isinstance(x, str) and x.strip() else text
        if text is None and category is None:
            return None
        return f"{category}: {text}" if category and text else (text or category)

    def first_seen(self) -> dict[str, float]:
        return {item_id: float(ts[0]) for item_id, (ts, _) in self._items.items() if len(ts)}

    def item_ids(self) -> list[str]:
        return sorted(self._items)


def daypart(t: float) -> str:
    hour = pd.Timestamp(t, unit="s", tz="UTC").hour
    return ("night" if hour < 6 else "morning" if hour < 11 else "midday" if hour < 14
            else "afternoon" if hour < 18 else "evening" if hour < 22 else "night")


def context_text(timeline: EventTimeline, user_id: str, t: float, top_category: Any = None) -> str:
    """What the user was up to just before ``t``, in words the bi-encoder reads."""
    parts = [daypart(t)]
    queries = timeline.recent_queries(user_id, t)
    if queries:
        parts.append("searched " + "; ".join(queries))
    recent = timeline.history(user_id, t)[-RECENT_CATEGORIES:]
    if recent:
        parts.append("recently " + ", ".join(reversed(recent)))
    if isinstance(top_category, str) and top_category:
        parts.append(f"likes {top_category}")
    return " | ".join(parts)


@dataclass
class TrainingSet:
    """Labels with point-in-time features and texts; ``window`` is [start, end) in epoch s."""

    rows: pd.DataFrame
    window: tuple[float, float]

    def positives(self) -> pd.DataFrame:
        return self.rows[(self.rows["reward"] == 1) & self.rows["item_text"].notna()]

    def pairs(self) -> list[tuple[str, str]]:
        """(user context text, engaged item text) for the bi-encoder."""
        pos = self.positives()
        return list(zip(pos["context_text"], pos["item_text"], strict=True))

    def describe(self) -> dict[str, Any]:
        return {"rows": len(self.rows), "positives": int((self.rows["reward"] == 1).sum()),
                "users": int(self.rows["user_id"].nunique()) if len(self.rows) else 0,
                "start": self.window[0], "end": self.window[1]}


def build_training_set(events: pd.DataFrame, store: Any | None, start: float, end: float,
                       timeline: EventTimeline | None = None, attribution: Any = None) -> TrainingSet:
    """Labels in ``[start, end)`` with point-in-time features (``store``: a Feast FeatureStore,
    None to skip features) and texts."""
    timeline = timeline or EventTimeline(events)
    labels = labels_from_events(events, start, end, attribution)
    if store is not None and len(labels):
        features = point_in_time_features(store, labels)
        labels = pd.concat([labels, features], axis=1)
    top = labels["user_activity__top_category"] if "user_activity__top_category" in labels else [None] * len(labels)
    labels["context_text"] = [context_text(timeline, u, t, c) for u, t, c in
                              zip(labels["user_id"], labels["t"], top, strict=True)]
    labels["item_text"] = [timeline.item_text(i, t) for i, t in zip(labels["item_id"], labels["t"], strict=True)]
    return TrainingSet(labels, (start, end))


def load_offline_events(settings: Any) -> pd.DataFrame:
    """The offline log's events, prepared (epoch ``t``, sorted)."""
    from kairos.stores.offline_log import OfflineLog

    return prepare_events(OfflineLog(settings.offline_dir).read_events())


def feature_store(settings: Any) -> Any:
    """The Feast store of these settings (views registered; the offline store is the Parquet log)."""
    from kairos.stores.online_features import OnlineFeatures

    return OnlineFeatures(settings).store


__all__ = [
    "EventTimeline",
    "TrainingSet",
    "build_training_set",
    "context_text",
    "feature_store",
    "labels_from_events",
    "load_offline_events",
    "point_in_time_features",
    "prepare_events",
]
