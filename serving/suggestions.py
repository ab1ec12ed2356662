"""Build a suggestions response: candidates from the catalog, features from Feast, transparent ranking.

This is the service behind ``GET /v1/users/{id}/suggestions`` and ``POST /v1/users/{id}/location``;
routes only parse and validate. It reads:

* the catalog: items open at ``at`` within the radius, and events starting in the next 6 hours;
* ``user_activity`` (interest, discount sensitivity, home) for the user;
* ``item_stats`` (24 h views and clicks) and ``cell_supply`` (area median price) for candidates.

``item_stats`` and ``cell_supply`` only refine the ranking: when they cannot be read the response
is still served from the catalog alone and says ``degraded: true``, because an app that shows
slightly less personal suggestions beats one that shows an error.

The hot path (issue #4): the catalog, ``item_stats`` and ``cell_supply`` reads are shared by every
request around the same H3 cell through :mod:`serving.candidate_cache` (``KAIROS_SUGGEST_CACHE_TTL_S``,
refreshed in the background); a request then only reads its user's row and taste embedding, filters
the cell's candidates with numpy, ranks them (reasons only for the items returned), and hands its
impressions to the background writer of :mod:`serving.impressions`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import h3

from kairos.geo import cell_of, haversine_km
from kairos.stores.catalog import CatalogItem
from kairos.stores.last_known import StoreUnavailable
from online.transparent_ranker import Candidate, RankContext, ScoredItem, parse_affinity
from serving.deps import Services
from serving.request_log import new_request_id
from serving.schemas import GeoPoint, SuggestionItem, SuggestionsResponse

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Events that have not started yet are suggested when they start within this horizon.
UPCOMING_HORIZON = timedelta(hours=6)
#: The item_stats fields ranking uses (popularity); reading all twenty would cost a few times more.
ITEM_STATS_FIELDS = ("view_count_24h", "click_count_24h", "ctr_24h")
#: A default radius may grow to this multiple to reach the user's favourite category.
WIDEN_FACTOR = 4.0
#: A category is a "favourite" worth widening for when it holds this share of the user's affinity.
FAVOURITE_MIN_SHARE = 0.25


def with_fallback(read: Callable[[], T], default: T, what: str) -> tuple[T, bool]:
    """``(value, degraded)``: the store's answer, else the last known values it had, else
    ``default`` — a store outage degrades answers, it never fails them."""
    try:
        return read(), False
    except StoreUnavailable as exc:
        return (default if exc.fallback is None else exc.fallback), True
    except Exception:
        log.warning("%s unreadable; serving without it", what, exc_info=True)
        return default, True


def read_user(services: Services, user_id: str) -> dict[str, Any] | None:
    """The user's ``user_activity`` row, or ``None`` when the flow has seen no event of theirs."""
    return services.features.read_one("user_activity", {"user_id": user_id})


def build_suggestions(
    services: Services,
    user_id: str,
    lat: float,
    lon: float,
    at: datetime,
    radius_km: float,
    limit: int,
    user: Mapping[str, Any] | None,
    widen: bool = False,
    prefer: str | None = None,
) -> SuggestionsResponse:
    """Rank what is open (or about to start) near ``(lat, lon)`` at ``at`` for the user.

    ``widen`` (the client left the radius to us): when nothing of the user's favourite category is
    open within the radius, double it (up to :data:`WIDEN_FACTOR` times, never past
    ``KAIROS_MAX_RADIUS_KM``) until something is — a spa lover just off a plane wants the best spa
    deal in reach, not only the café next door. Distance still counts in the score.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    at = at.astimezone(UTC)
    settings = services.settings
    items, candidates, area_median, degraded = gather_candidates(services, lat, lon, radius_km, at)
    # The predicted intent (on a location change) outranks the long-run favourite: pre-fetch it.
    favourite = prefer or favourite_category(user)
    widened_for = None
    if widen and favourite is not None and not _has_open(items, favourite, at):
        cap = min(settings.max_radius_km, radius_km * WIDEN_FACTOR)
        wider = radius_km
        while wider < cap:
            wider = min(cap, wider * 2)
            found = gather_candidates(services, lat, lon, wider, at)
            degraded |= found[3]
            if _has_open(found[0], favourite, at):
                # Widen only when it reaches the favourite: far items of other kinds help nobody.
                (items, candidates, area_median, _), radius_km, widened_for = found, wider, favourite
                break

    taste: dict[str, float] = {}
    if user is not None and candidates:  # a user the flow has never seen has no taste either
        from serving.taste import suggestion_taste

        taste, failed = suggestion_taste(services, user_id, [c.item_id for c in candidates])
        degraded |= failed

    context = RankContext.build(
        lat, lon, at, candidates, radius_km=radius_km, user=user, area_median_price=area_median, taste=taste
    )
    ranked = services.ranker.rank(context, candidates, limit=limit)
    return SuggestionsResponse(
        request_id=new_request_id(),  # the response's X-Request-ID when the server made it up
        user_id=user_id,
        at=at,
        location=GeoPoint(lat=lat, lon=lon, cell=cell_of(lat, lon, settings.h3_resolution)),
        radius_km=radius_km,
        widened_for=widened_for,
        travelling=is_travelling(user, lat, lon, settings.travel_km),
        cold_start=not context.category_affinity,
        degraded=degraded,
        items=[to_item(s) for s in ranked],
    )


def gather_candidates(
    services: Services, lat: float, lon: float, radius_km: float, at: datetime
) -> tuple[list[CatalogItem], list[Candidate], dict[tuple[str, str], float], bool]:
    """``(items, candidates, area median prices, degraded)`` of what is open at ``at`` (or starts
    within :data:`UPCOMING_HORIZON`) within the radius: from the per-cell cache when it is on,
    else read from the stores for this request alone."""
    if services.settings.suggest_cache_ttl_s > 0:
        entry = candidate_cache(services).get(lat, lon, radius_km, at)
        hidden_items, suspended = moderation_filter(services).current()
        chosen = entry.select(lat, lon, radius_km, at.timestamp(), UPCOMING_HORIZON.total_seconds(),
                              hidden_items, suspended)
        return ([entry.items[i] for i in chosen], [entry.candidates[i] for i in chosen], entry.area_median,
                entry.degraded)
    items, degraded = with_fallback(lambda: candidate_items(services, lat, lon, radius_km, at), [], "catalog")
    candidates, area_median, failed = ranking_candidates(services, items, ITEM_STATS_FIELDS)
    return items, candidates, area_median, degraded or failed


def candidate_cache(services: Services) -> Any:
    """The process's per-cell candidate cache (:mod:`serving.candidate_cache`)."""
    from serving.candidate_cache import CandidateCache, read_candidates

    def build(s: Services) -> CandidateCache:
        memo = candidate_rows(s)
        return CandidateCache(
            lambda lat, lon, reach, start, end: read_candidates(s, lat, lon, reach, start, end, ITEM_STATS_FIELDS,
                                                                memo),
            ttl_s=s.settings.suggest_cache_ttl_s, resolution=s.settings.suggest_cache_resolution,
            horizon=UPCOMING_HORIZON, sources=lambda: (s.catalog, s.features),
        )

    return cached_extra(services, "candidate_cache", build)


def candidate_rows(services: Services) -> Any:
    """The feature rows the candidate cache's rebuilds share, each kept half a TTL
    (:class:`serving.row_memo.RowMemo`)."""
    from serving.row_memo import RowMemo

    return cached_extra(services, "candidate_rows",
                        lambda s: RowMemo(s.features, max_age_s=s.settings.suggest_cache_ttl_s / 2))


def _has_open(items: list[CatalogItem], category: str, at: datetime) -> bool:
    return any(i.category == category and i.active_at(at.timestamp()) for i in items)


def favourite_category(user: Mapping[str, Any] | None) -> str | None:
    """The user's top category when it holds at least :data:`FAVOURITE_MIN_SHARE` of their affinity."""
    if not user or not user.get("top_category"):
        return None
    share = parse_affinity(user.get("category_affinity")).get(user["top_category"], 0.0)
    return user["top_category"] if share >= FAVOURITE_MIN_SHARE else None


def candidate_items(
    services: Services, lat: float, lon: float, radius_km: float, at: datetime
) -> list[CatalogItem]:
    """Items within the radius that are open at ``at`` or start within :data:`UPCOMING_HORIZON`."""
    start = at.timestamp()
    found = [
        item
        for item in services.catalog.near(lat, lon, radius_km, at=at, until=at + UPCOMING_HORIZON)
        if item.active_at(start) or (item.valid_from is not None and item.valid_from > start)
    ]
    hidden_items, suspended = moderation_filter(services).current()
    # ``near`` pre-filters by bounding box; the circle is the promise made to the user.
    return [
        item
        for item in found
        if item.lat is not None
        and item.lon is not None
        and haversine_km(lat, lon, item.lat, item.lon) <= radius_km
        and item.item_id not in hidden_items
        and item.business_id not in suspended
    ]


class ModerationFilter:
    """Items under review or removed, and suspended businesses, refreshed every ``ttl_s`` seconds:
    suggestions must honour moderation quickly, but not pay a query per request."""

    def __init__(self, store: Any, ttl_s: float = 2.0) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._at = -math.inf
        self._value: tuple[set[str], set[str]] = (set(), set())
        self._lock = threading.Lock()

    def current(self) -> tuple[set[str], set[str]]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                try:
                    self._value = (self.store.suppressed_item_ids(), self.store.suspended_business_ids())
                except Exception:  # keep the last known sets; moderation must not break suggestions
                    log.warning("moderation store unreadable; using the last known decisions", exc_info=True)
                self._at = time.monotonic()
            return self._value

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def moderation_filter(services: Services) -> ModerationFilter:
    from kairos.stores.moderation_store import open_moderation_store

    return cached_extra(services, "moderation_filter", lambda s: ModerationFilter(open_moderation_store(s.settings)))


def cached_extra(services: Services, name: str, factory: Callable[[Services], T]) -> T:
    """``services.extra(name, factory)`` without its lock once the component exists: that lock is
    held while any component is created (loading MiniLM takes seconds), and requests that only
    need a component created long ago must not wait behind it."""
    found = services.extras.get(name)
    return found if found is not None else services.extra(name, factory)


def ranking_candidates(
    services: Services, items: Sequence[CatalogItem], fields: tuple[str, ...] | None = None,
    features: Any = None,
) -> tuple[list[Candidate], dict[tuple[str, str], float], bool]:
    """``(candidates, area median prices, degraded)`` for these catalog items: each item with its
    ``item_stats`` row (only ``fields`` of it; None: all), its H3 cell filled in when the catalog
    has none, and the ``(cell, category)`` median prices of their cells. A store outage degrades
    (items without stats, prices compared among candidates only), it never fails. ``features``:
    what to read the rows from (default ``services.features``; the candidate cache passes its
    :class:`serving.row_memo.RowMemo`)."""
    store = services.features if features is None else features
    keys = [{"item_id": i.item_id} for i in items]
    if fields is None:
        def read() -> list[dict[str, Any] | None]:
            return store.read("item_stats", keys)
    else:
        def read() -> list[dict[str, Any] | None]:
            return store.read("item_stats", keys, fields)
    rows, degraded = with_fallback(read, [None] * len(keys), "item_stats")
    stats: dict[str, Mapping[str, Any]] = {row["item_id"]: row for row in rows if row is not None}
    resolution = services.settings.h3_resolution
    candidates = []
    for item in items:
        candidate = Candidate.from_catalog(item, stats.get(item.item_id))
        if candidate.cell is None:
            candidate = replace(candidate, cell=cell_of(candidate.lat, candidate.lon, resolution))
        candidates.append(candidate)
    area_median, failed = area_median_prices(services, candidates, store)
    return candidates, area_median, degraded or failed


def area_median_prices(
    services: Services, candidates: list[Candidate], features: Any = None
) -> tuple[dict[tuple[str, str], float], bool]:
    """``(cell, category) -> median_price`` from ``cell_supply`` for the candidates' cells, and
    whether the store was unavailable (prices are then compared among candidates only)."""
    keys = sorted({(c.cell, c.category) for c in candidates if c.cell and c.category})
    if not keys:
        return {}, False
    entity_rows = [{"cell": cell, "category": cat} for cell, cat in keys]
    store = services.features if features is None else features
    rows, degraded = with_fallback(lambda: store.read("cell_supply", entity_rows, ("median_price",)),
                                   [None] * len(keys), "cell_supply")
    out: dict[tuple[str, str], float] = {}
    for (cell, category), row in zip(keys, rows, strict=True):
        median = row.get("median_price") if row else None
        if median is not None and median > 0:
            out[(cell, category)] = float(median)
    return out, degraded


def last_location(user: Mapping[str, Any] | None, user_id: str | None) -> tuple[float, float]:
    """The user's last known point from their ``user_activity`` row, or a 422 saying what to pass."""
    from serving.errors import ApiError

    lat, lon = (user or {}).get("last_lat"), (user or {}).get("last_lon")
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        who = f" for user {user_id!r}" if user_id else ""
        hint = f" or POST /v1/users/{user_id}/location first" if user_id else ""
        raise ApiError(422, f"lat, lon: no location known{who}; pass lat and lon{hint}",
                       [{"field": "lat", "message": "is required", "type": "missing"},
                        {"field": "lon", "message": "is required", "type": "missing"}])
    return float(lat), float(lon)


def is_travelling(user: Mapping[str, Any] | None, lat: float, lon: float, travel_km: float) -> bool:
    """Far from home at this point: computed from ``home_cell`` when known, else the stored flag.

    Computing beats the flag because the point may be newer than the row (a POSTed location the
    flow has not processed yet).
    """
    if not user:
        return False
    home = user.get("home_cell")
    if home:
        try:
            home_lat, home_lon = h3.cell_to_latlng(str(home))
        except ValueError:
            log.warning("user_activity has an invalid home_cell %r", home)
        else:
            return haversine_km(lat, lon, home_lat, home_lon) > travel_km
    return bool(user.get("travelling"))


def to_item(scored: ScoredItem) -> SuggestionItem:
    item = scored.item
    return SuggestionItem(
        item_id=item.item_id,
        title=item.title,
        kind=item.kind,
        category=item.category,
        business_id=item.business_id,
        price=item.price,
        original_price=item.original_price,
        discount=round(item.discount, 4) if item.price is not None and item.original_price else None,
        currency=item.currency,
        lat=item.lat,
        lon=item.lon,
        distance_km=round(scored.distance_km, 3),
        travel_minutes=round(scored.travel_minutes, 1),
        valid_from=_utc(item.valid_from),
        valid_to=_utc(item.valid_to),
        score=round(scored.score, 4),
        score_parts={k: round(v, 4) for k, v in scored.parts.items()},
        score_contributions={k: round(v, 4) for k, v in scored.contributions.items()},
        reason=scored.reason,
    )


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
