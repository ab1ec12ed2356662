"""Log what a response showed: one ``impression`` document per returned item.

Impressions are half of every label the bandit learns from: :mod:`flows.attribution` joins each one
with the clicks, saves, purchases and dismissals that follow (``POST /v1/feedback``) and labels it
1 or 0. So an impression carries what is needed to learn from it later without recomputing
anything: the request id (the key feedback names), user, item, position, the score, the score
parts and the ranker's feature vector exactly as the request had them (no training/serving skew).

Impressions go to the same collection as feedback (``feedback``), so the flow reads them in the
order they happened. Logging must never cost the user their suggestions: a failing event store
is logged and the response is served anyway (the labels of that one request are lost).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from online.bandit import context_features

log = logging.getLogger(__name__)

#: The collection impressions and feedback share (decoded by the ``feedback`` mapping).
FEEDBACK_COLLECTION = "feedback"


def _as_dict(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected a response model or a mapping, not {type(value).__name__}")


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return _when(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def impression_documents(
    response: Any,
    user: Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
    ts: datetime | None = None,
    ranker: str | None = None,
    source: str = "suggestions",
    lon: float | None = None,
) -> list[dict[str, Any]]:
    """The impression documents of a response (pure: nothing is written).

    ``response`` is a :class:`serving.schemas.SuggestionsResponse` or any model or mapping with
    ``request_id`` and ``items`` (``item_id``, ``score``, ``score_parts``, ``distance_km``,
    ``category``), and optionally ``user_id``, ``at`` and ``location`` (search responses too).
    ``user`` is the ``user_activity`` row the ranking used: its discount sensitivity is part of
    the features. ``ts`` is when the items were shown (default now); the features use the time the
    ranking was for (``at``) since that is what the ranker saw. ``lon`` (the request's longitude,
    for the local hour) is needed for the features when the response has no ``location``.
    """
    body = _as_dict(response)
    request_id = body.get("request_id")
    uid = user_id or body.get("user_id")
    if not request_id or not uid:
        raise ValueError("a response needs a request_id and a user_id to log impressions")
    shown = (ts or datetime.now(UTC)).astimezone(UTC)
    at = _when(body.get("at")) or shown
    location = body.get("location") or {}
    if lon is None and isinstance(location, Mapping):
        lon = location.get("lon")
    sensitivity = (user or {}).get("discount_sensitivity")
    documents = []
    for position, item in enumerate(body.get("items") or []):
        item = _as_dict(item)
        parts = {k: float(v) for k, v in (item.get("score_parts") or {}).items()}
        document: dict[str, Any] = {
            "_id": f"imp-{request_id}-{position}",
            "kind": "impression",
            "request_id": request_id,
            "user_id": uid,
            "item_id": item["item_id"],
            "ts": shown.isoformat(),
            "position": position,
            "category": item.get("category"),
            "score": item.get("score"),
            "score_parts": parts,
            "source": source,
        }
        if ranker:
            document["ranker"] = ranker
        if parts and item.get("distance_km") is not None and lon is not None:
            document["features"] = context_features(
                parts, float(item["distance_km"]), item.get("category"), at, float(lon),
                None if sensitivity is None else float(sensitivity),
            )
        documents.append(document)
    return documents


def log_impressions(
    services: Any,
    response: Any,
    user: Mapping[str, Any] | None = None,
    *,
    user_id: str | None = None,
    ts: datetime | None = None,
    source: str = "suggestions",
    lon: float | None = None,
) -> list[str]:
    """Append one impression per returned item to the event store; returns their positions.

    Never raises for a store failure (logged; returns ``[]``): the user gets their suggestions
    whether or not the impressions could be recorded.
    """
    serving = getattr(services, "ranker", None)
    active = getattr(serving, "active", None)
    if callable(active):  # a LiveRanker: name the ranker serving now (the bandit or its fallback)
        serving = active()
    ranker = type(serving).__name__ if serving is not None else None
    documents = impression_documents(response, user, user_id=user_id, ts=ts, ranker=ranker, source=source,
                                     lon=lon)
    if not documents:
        return []
    try:
        positions: Sequence[str] = services.event_store.append(FEEDBACK_COLLECTION, documents)
    except Exception:
        log.warning("could not log %d impressions of request %s", len(documents),
                    documents[0]["request_id"], exc_info=True)
        return []
    return list(positions)


__all__ = ["FEEDBACK_COLLECTION", "impression_documents", "log_impressions"]
