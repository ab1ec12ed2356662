"""Search: ``GET /v1/search?q=…`` and ``POST /v1/search/voice`` (DESIGN §6).

A query is read by :func:`online.query_parser.parse_query` ("spa under 50 tonight within 2 km":
category, price bounds, time window, radius, free text). Retrieval is the item index
(:mod:`online.item_index`): MiniLM similarity between the free text and the items' text, only over
items within the radius that are live in the window, in the category and inside the price bounds.
The candidates are then ranked like suggestions (:class:`online.transparent_ranker.TransparentRanker`
parts: interest, distance, timing, discount, price versus the area, popularity) plus two parts of
search's own: ``query_match`` (cosine of query and item, relative to the best match) and
``taste_match`` (cosine of the user's embedding, :mod:`online.user_embeddings`, and the item's).
When the query names no category, candidates much less similar than the best match are dropped
(:data:`RELEVANCE_CUTOFF`): a search for ramen lists ramen, not the pizza next door. The response says what was understood,
so the app can show it and the user can correct it.

Voice transcripts take the same path: ``POST /v1/search/voice`` with the transcript. With a
``user_id`` both routes record the query as a behaviour event (collection ``searches`` or
``voice``), which the flow turns into demand features and the user's embedding learns from;
recording is best effort and never fails the search (``recorded`` says whether it happened).

The index is built from the catalog on first use (``services.extra("item_index", …)``) and then
follows catalog changes incrementally, re-embedding only the items that changed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from kairos.config import Settings
from kairos.geo import cell_of
from kairos.stores.catalog import CatalogItem
from online.item_index import CatalogIndexer, ItemIndex
from online.query_parser import ParsedQuery, approximate_timezone, parse_query
from online.transparent_ranker import Candidate, RankContext, ScoredItem, TransparentRanker
from serving.deps import Services, ServicesDep
from serving.errors import ApiError
from serving.impressions import log_impressions
from serving.request_log import new_request_id
from serving.schemas import (
    ERROR_RESPONSES,
    USER_ID_PATTERN,
    FiniteFloat,
    GeoPoint,
    IsoTime,
    Latitude,
    Longitude,
    SuggestionItem,
)
from serving.suggestions import (
    UPCOMING_HORIZON,
    area_median_prices,
    last_location,
    read_user,
    to_item,
    with_fallback,
)
from serving.taste import taste_matches, user_embedding_store, user_taste

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/search", tags=["search"], responses=ERROR_RESPONSES)

MAX_QUERY_CHARS = 300
#: Weights of search's own score parts, beside the ranker's (its interest weight is 3): what the
#: user typed is the most explicit signal there is.
QUERY_MATCH_WEIGHT = 5.0
TASTE_MATCH_WEIGHT = 1.5
#: When the query names no category, candidates less similar than this share of the best match
#: (or than :data:`MIN_SIMILARITY`) are not results: "tonkotsu noodle soup" must not list pizza.
RELEVANCE_CUTOFF = 0.5
MIN_SIMILARITY = 0.1
#: Candidates retrieved per requested result before ranking.
CANDIDATES_PER_RESULT = 5
MIN_CANDIDATES = 50
#: A radius nobody asked for grows (doubling, up to this factor) until something matches.
WIDEN_FACTOR = 4.0
#: Items of the kind around that a result's price is compared with, at most.
MARKET_SIZE = 500
#: "cheap", "deals": the price parts weigh this much more.
CHEAP_PRICE_BOOST = 2.0
SEARCHES_COLLECTION = "searches"
VOICE_COLLECTION = "voice"


# -- edge models ---------------------------------------------------------------------------------


class TimeWindowOut(BaseModel):
    label: str
    start: datetime
    end: datetime


class SearchItem(SuggestionItem):
    query_match: float | None = Field(
        description="cosine similarity of the query's free text and the item (the score part "
        "query_match is this relative to the best match of the query)"
    )
    taste_match: float | None = Field(description="cosine similarity of the user's taste embedding and the item")


class SearchResponse(BaseModel):
    request_id: str = Field(description="ties feedback (POST /v1/feedback) to this response")
    query: str
    source: str = Field(description="text or voice")
    understood: dict[str, Any] = Field(
        description="what was read from the query: category, max_price/min_price/currency, time, radius_km, "
        "near_me, cheap, free_text and the phrases read as constraints",
        examples=[{"category": "spa", "max_price": 50.0, "time": {"label": "tonight"}, "radius_km": 2.0,
                   "free_text": "spa", "phrases": ["under 50", "tonight", "within 2 km"]}],
    )
    user_id: str | None
    at: datetime
    location: GeoPoint
    radius_km: float = Field(description="the radius searched")
    widened: bool = Field(description="the default radius was widened because nothing matched within it")
    time_window: TimeWindowOut = Field(description="items live at some moment of this window were searched")
    personalised: bool = Field(description="the user's features or taste embedding were used")
    degraded: bool = Field(description="some optional store could not be read; ranking used defaults")
    recorded: bool | None = Field(None, description="the query was recorded as a behaviour event (with a user_id)")
    items: list[SearchItem]


class VoiceIn(BaseModel):
    """A voice query as the assistant transcribed it."""

    transcript: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, examples=["um a massage under fifty dollars"])
    lat: Latitude | None = Field(None, description="where the user is; default: their last known location")
    lon: Longitude | None = None
    user_id: str | None = Field(None, pattern=USER_ID_PATTERN)
    ts: IsoTime | None = Field(None, description="when it was said (ISO-8601); default: now")
    tz: str | None = Field(None, description="the user's IANA time zone, e.g. America/New_York")
    radius_km: FiniteFloat | None = Field(None, gt=0)
    limit: int = Field(10, ge=1, le=50)


# -- routes --------------------------------------------------------------------------------------


@router.get("", response_model=SearchResponse, summary="Search with constraints read from the text")
def search(
    services: ServicesDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="what the user typed",
                            examples=["spa under 50 tonight within 2 km"])],
    lat: Annotated[Latitude | None, Query(description="default: the user's last known latitude")] = None,
    lon: Annotated[Longitude | None, Query(description="default: the user's last known longitude")] = None,
    radius_km: Annotated[FiniteFloat | None, Query(gt=0, description="overrides a radius said in the query")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN, description="personalises and records")] = None,
    at: Annotated[IsoTime | None, Query(description="ISO-8601 time of the search; default now")] = None,
    tz: Annotated[str | None, Query(description="IANA zone for 'tonight'; default: from the longitude")] = None,
) -> SearchResponse:
    return run_search(services, q, lat, lon, radius_km, limit, user_id, at, tz, source="text")


@router.post("/voice", response_model=SearchResponse, summary="Search by a voice transcript (same path as text)")
def search_voice(body: VoiceIn, services: ServicesDep) -> SearchResponse:
    return run_search(services, body.transcript, body.lat, body.lon, body.radius_km, body.limit, body.user_id,
                      body.ts, body.tz, source="voice")


# -- the search itself -----------------------------------------------------------------------------


def run_search(
    services: Services,
    text: str,
    lat: float | None,
    lon: float | None,
    radius_km: float | None,
    limit: int,
    user_id: str | None,
    at: datetime | None,
    tz_name: str | None,
    source: str,
) -> SearchResponse:
    settings = services.settings
    if not text.strip():
        field = "q" if source == "text" else "transcript"
        raise ApiError(422, f"{field}: must not be blank", [{"field": field, "message": "must not be blank",
                                                            "type": "value_error"}])
    if (lat is None) != (lon is None):
        missing = "lon" if lon is None else "lat"
        other = "lat" if missing == "lon" else "lon"
        raise ApiError(422, f"{missing}: is required when {other} is given",
                       [{"field": missing, "message": f"{other} and {missing} go together", "type": "missing"}])
    if radius_km is not None and radius_km > settings.max_radius_km:
        message = f"must be greater than 0 and at most {settings.max_radius_km:g}"
        raise ApiError(422, f"radius_km: {message}",
                       [{"field": "radius_km", "message": message, "type": "less_than_equal"}])
    at = (at or datetime.now(UTC)).astimezone(UTC)

    degraded = False
    user: Mapping[str, Any] | None = None
    if user_id is not None:
        user, failed = with_fallback(lambda: read_user(services, user_id), None, "user_activity")
        degraded |= failed
    if lat is None or lon is None:
        lat, lon = last_location(user, user_id)
    tz = _zone(tz_name, lon)

    parsed = parse_query(text, at, tz)
    default_radius = radius_km is None and parsed.radius_km is None
    radius = radius_km or min(parsed.radius_km or settings.suggest_radius_km, settings.max_radius_km)
    if parsed.window is not None:
        start, end, label = parsed.window.start, parsed.window.end, parsed.window.label
    else:
        start, end, label = at, at + UPCOMING_HORIZON, "now or within 6 h"

    indexer = item_indexer(services)
    refreshed_ok = True
    try:
        indexer.maybe_refresh()
    except Exception:  # a catalog outage: search what the index already holds
        log.warning("item index refresh failed; searching the index as it is", exc_info=True)
        refreshed_ok = False
    degraded |= not refreshed_ok
    query_text = parsed.free_text or (parsed.category or "")
    query_vector = indexer.encode([query_text])[0] if query_text else None
    if query_vector is not None and not np.any(query_vector):
        query_vector = None

    def retrieve(r: float) -> list[Any]:
        return indexer.index.search(
            query_vector, lat, lon, r, k=max(MIN_CANDIDATES, limit * CANDIDATES_PER_RESULT),
            at=start.timestamp(), until=end.timestamp(), category=parsed.category,
            max_price=parsed.max_price, min_price=parsed.min_price, currency=parsed.currency,
        )

    hits = retrieve(radius)
    widened = False
    if not hits and default_radius:
        cap = min(settings.max_radius_km, radius * WIDEN_FACTOR)
        wider = radius
        while not hits and wider < cap:
            wider = min(cap, wider * 2)
            hits = retrieve(wider)
        if hits:
            radius, widened = wider, True

    similarity = {h.item_id: h.similarity for h in hits}
    relevance = relative_relevance(similarity)
    if parsed.category is None and relevance:
        kept = [h for h in hits if relevance[h.item_id] >= RELEVANCE_CUTOFF
                and (similarity[h.item_id] or 0.0) >= MIN_SIMILARITY]
        hits = kept or hits[:1]
    items = _catalog_items(indexer, [h.item_id for h in hits], start.timestamp(), end.timestamp())

    taste = None
    if user_id is not None:
        taste, failed = user_taste(services, user_id)
        degraded |= failed

    # Prices are compared with every item of the kind on offer around, not only the ones that
    # passed the query's bounds: "cheapest of 3 spas" must count the dear spa the bound left out.
    market_hits = indexer.index.search(None, lat, lon, radius, k=MARKET_SIZE, at=start.timestamp(),
                                       until=end.timestamp(), category=parsed.category)
    market = _catalog_items(indexer, [h.item_id for h in market_hits], start.timestamp(), end.timestamp())
    ranked, failed = _rank(services, items, market, lat, lon, max(at, start), radius, user, parsed)
    degraded |= failed
    matches = taste_matches(indexer, taste, [s.item.item_id for s in ranked])
    results = []
    for scored in ranked:
        item_id = scored.item.item_id
        taste_match = matches.get(item_id) if taste is not None else None
        results.append(_search_item(scored, similarity.get(item_id), relevance.get(item_id), taste_match, parsed))
    results.sort(key=lambda i: (-i.score, i.distance_km, i.item_id))

    recorded = None
    if user_id is not None:
        recorded = _record(services, source, user_id, text, lat, lon, at)
    response = SearchResponse(
        request_id=new_request_id(),  # the response's X-Request-ID when the server made it up
        query=text,
        source=source,
        understood=parsed.understood(),
        user_id=user_id,
        at=at,
        location=GeoPoint(lat=lat, lon=lon, cell=cell_of(lat, lon, settings.h3_resolution)),
        radius_km=radius,
        widened=widened,
        time_window=TimeWindowOut(label=label, start=start, end=end),
        personalised=bool(user) or taste is not None,
        degraded=degraded,
        recorded=recorded,
        items=results[:limit],
    )
    if user_id is not None:
        log_impressions(services, response, user, user_id=user_id, source="search")
    return response


def _zone(tz_name: str | None, lon: float) -> Any:
    if tz_name is None:
        return approximate_timezone(lon)
    try:
        return ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        message = f"unknown time zone {tz_name[:60]!r}; use an IANA name such as America/New_York"
        raise ApiError(422, f"tz: {message}", [{"field": "tz", "message": message, "type": "value_error"}]) from None


def item_indexer(services: Services) -> CatalogIndexer:
    """The process's item index over the catalog, built on first use."""

    def build(s: Services) -> CatalogIndexer:
        from online.embeddings import shared_encoder

        settings: Settings = s.settings
        encoder = shared_encoder(settings)  # its registry (hot swap) lives under this home
        index = ItemIndex(dim=encoder.dim, bucket_resolution=int(getattr(settings, "search_bucket_resolution", 7)))
        return CatalogIndexer(s.catalog, index, encoder.encode,
                              refresh_interval_s=float(getattr(settings, "search_refresh_s", 1.0)))

    return services.extra("item_index", build)


def _catalog_items(indexer: CatalogIndexer, item_ids: list[str], start: float, end: float) -> list[CatalogItem]:
    """The catalog states of the hits, as of the index's last refresh (at most a refresh interval
    old, and still there while the catalog is down), re-checked against the window."""
    out = []
    for item_id in item_ids:
        item = indexer.item(item_id)
        if item is None or item.deleted or item.lat is None or item.lon is None:
            continue
        if item.valid_from is not None and item.valid_from > end:
            continue
        if item.valid_to is not None and item.valid_to <= start:
            continue
        out.append(item)
    return out


def _rank(
    services: Services, items: list[CatalogItem], market: list[CatalogItem], lat: float, lon: float,
    at: datetime, radius_km: float, user: Mapping[str, Any] | None, parsed: ParsedQuery,
) -> tuple[list[ScoredItem], bool]:
    """Rank ``items`` against the ``market`` (every item of the kind around, for price comparisons)."""
    settings = services.settings
    keys = [{"item_id": i.item_id} for i in items]
    rows, degraded = with_fallback(lambda: services.features.read("item_stats", keys), [None] * len(keys),
                                   "item_stats")
    stats = {row["item_id"]: row for row in rows if row is not None}

    def candidate(item: CatalogItem) -> Candidate:
        found = Candidate.from_catalog(item, stats.get(item.item_id))
        if found.cell is None:
            found = replace(found, cell=cell_of(found.lat, found.lon, settings.h3_resolution))
        return found

    candidates = [candidate(item) for item in items]
    chosen = {c.item_id for c in candidates}
    peers = candidates + [candidate(item) for item in market if item.item_id not in chosen]
    area_median, failed = area_median_prices(services, candidates)
    degraded |= failed
    context = RankContext.build(lat, lon, at, peers, radius_km=radius_km, user=user,
                                area_median_price=area_median)
    ranker = services.ranker
    if parsed.cheap:
        weights = TransparentRanker.DEFAULT_WEIGHTS
        ranker = TransparentRanker(weights={"discount": weights["discount"] * CHEAP_PRICE_BOOST,
                                            "price_vs_area": weights["price_vs_area"] * CHEAP_PRICE_BOOST})
    return ranker.rank(context, candidates), degraded


def relative_relevance(similarity: Mapping[str, float | None]) -> dict[str, float]:
    """Cosine similarity relative to the best candidate's (best = 1, clipped at 0); empty when the
    query had no text to compare. Relative because MiniLM cosines of a good match range from 0.3
    to 0.7 with the wording of the query, while the best match of a query is what the user meant."""
    values = [v for v in similarity.values() if v is not None]
    best = max(values, default=0.0)
    if best <= 1e-6:
        return {}
    return {item_id: max(0.0, (v or 0.0) / best) for item_id, v in similarity.items()}


def _search_item(scored: ScoredItem, query_match: float | None, relevance: float | None,
                 taste_match: float | None, parsed: ParsedQuery) -> SearchItem:
    base = to_item(scored).model_dump()
    parts = dict(base["score_parts"])
    contributions = dict(base["score_contributions"])
    for name, value, weight in (("query_match", relevance, QUERY_MATCH_WEIGHT),
                                ("taste_match", taste_match, TASTE_MATCH_WEIGHT)):
        if value is None:
            continue
        clipped = min(1.0, max(0.0, value))  # an unrelated item is not penalised below "no match"
        parts[name] = round(clipped, 4)
        contributions[name] = round(weight * clipped, 4)
    reason = base["reason"]
    if relevance is not None and parsed.free_text and (query_match or 0.0) >= MIN_SIMILARITY:
        if relevance >= 0.95:
            reason = f'{reason}; best match for "{parsed.free_text}"'
        elif relevance >= 0.75:
            reason = f'{reason}; matches "{parsed.free_text}"'
    if taste_match is not None and taste_match >= 0.5:
        reason = f"{reason}; like what you usually choose"
    base.update(
        score=round(sum(contributions.values()), 4),
        score_parts=parts,
        score_contributions=contributions,
        reason=reason,
        query_match=None if query_match is None else round(query_match, 4),
        taste_match=None if taste_match is None else round(taste_match, 4),
    )
    return SearchItem(**base)


def _record(services: Services, source: str, user_id: str, text: str, lat: float, lon: float, at: datetime) -> bool:
    """Append the query as a behaviour document (the flow's ``searches`` / ``voice`` decoders)."""
    document: dict[str, Any] = {"_id": f"api-{uuid.uuid4().hex}", "user_id": user_id, "ts": at.isoformat(),
                                "lat": lat, "lon": lon, "source": "api"}
    if source == "voice":
        collection, document["transcript"] = VOICE_COLLECTION, text
    else:
        collection, document["query"] = SEARCHES_COLLECTION, text
    try:
        services.event_store.append(collection, [document])
    except Exception:
        log.warning("recording a %s query for %s failed", source, user_id, exc_info=True)
        return False
    return True


__all__ = ["SearchItem", "SearchResponse", "VoiceIn", "item_indexer", "router", "run_search", "user_embedding_store"]
