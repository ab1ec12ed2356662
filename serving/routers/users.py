"""Consumer-app routes of a user: record a location, get suggestions (DESIGN §6)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from kairos.config import Settings
from kairos.geo import cell_of
from online.next_intent import INTENT_MODEL, intent_hint, top_k
from online.sequence_intent import SequenceIntent, pool
from serving.deps import Services, ServicesDep
from serving.errors import ApiError
from serving.impressions import enqueue_impressions
from serving.schemas import (
    ERROR_RESPONSES,
    USER_ID_PATTERN,
    FiniteFloat,
    IntentOut,
    IsoTime,
    Latitude,
    LocationIn,
    LocationSuggestionsResponse,
    Longitude,
    SuggestionsResponse,
)
from serving.suggestions import build_suggestions, is_travelling, last_location, read_user, with_fallback

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/users", tags=["users"], responses=ERROR_RESPONSES)

#: The collection the flow decodes API pings from (its decoder maps these fields to a location event).
PINGS_COLLECTION = "pings"

UserId = Annotated[
    str,
    Path(pattern=USER_ID_PATTERN, description="letters, digits and _ . : - (1 to 64 characters)"),
]
RadiusKm = Annotated[
    FiniteFloat | None,
    Query(
        gt=0,
        description="search radius in km; default KAIROS_SUGGEST_RADIUS_KM, at most KAIROS_MAX_RADIUS_KM",
    ),
]
Limit = Annotated[int, Query(ge=1, le=50, description="how many items to return")]


class LocationResponse(LocationSuggestionsResponse):
    """``POST /v1/users/{id}/location``: suggestions, the predicted next intent and its source."""

    intent_model: str | None = Field(
        None,
        description='which model produced `intent`: "river" (the online next-intent model), '
        '"gru:v0003" (the promoted next-category GRU), "gru:v0003+river" (their linear pool), '
        "null when no model has learned yet",
    )


@router.get(
    "/{user_id}/suggestions",
    response_model=SuggestionsResponse,
    summary="Ranked items near the user now, with score parts and a reason",
)
async def get_suggestions(
    user_id: UserId,
    services: ServicesDep,
    lat: Annotated[Latitude | None, Query(description="default: the user's last known latitude")] = None,
    lon: Annotated[Longitude | None, Query(description="default: the user's last known longitude")] = None,
    radius_km: RadiusKm = None,
    limit: Limit = 10,
    at: Annotated[IsoTime | None, Query(description="ISO-8601 time to suggest for; default now")] = None,
) -> SuggestionsResponse:
    # On the event loop unless KAIROS_API_INLINE_SUGGESTIONS=false (why: kairos/config.py).
    def answer() -> SuggestionsResponse:
        return suggestions_for(services, user_id, lat, lon, radius_km, limit, at)

    if services.settings.api_inline_suggestions:
        return answer()
    return await run_in_threadpool(answer)


def suggestions_for(
    services: Services,
    user_id: str,
    lat: float | None,
    lon: float | None,
    radius_km: float | None,
    limit: int,
    at: datetime | None,
) -> SuggestionsResponse:
    """What ``GET /v1/users/{id}/suggestions`` answers (parameters already validated)."""
    if (lat is None) != (lon is None):
        missing = "lon" if lon is None else "lat"
        raise ApiError(
            422,
            f"{missing}: is required when {'lat' if missing == 'lon' else 'lon'} is given",
            [{"field": missing, "message": "lat and lon go together", "type": "missing"}],
        )
    radius = _radius(radius_km, services.settings)
    user, store_down = with_fallback(lambda: read_user(services, user_id), None, "user_activity")
    if user is None and not store_down:
        raise ApiError(
            404, f"unknown user {user_id!r}: no events yet; POST /v1/users/{user_id}/location first"
        )
    if lat is None or lon is None:
        if user is None:
            # The store is down and this process has not seen the user: no place to suggest for.
            raise ApiError(503, "the feature store is not answering and no location was given; pass lat and lon")
        lat, lon = last_location(user, user_id)
    response = build_suggestions(
        services, user_id, lat, lon, at or datetime.now(UTC), radius, limit, user, widen=radius_km is None
    )
    enqueue_impressions(services, response, user)  # written by a background thread
    # Store down: the last known row (or a cold start) was used; say so.
    return response.model_copy(update={"degraded": True}) if store_down else response


@router.post(
    "/{user_id}/location",
    response_model=LocationResponse,
    summary="Record a location change and get fresh suggestions for that place and time",
)
def post_location(
    user_id: UserId,
    body: LocationIn,
    services: ServicesDep,
    radius_km: RadiusKm = None,
    limit: Limit = 10,
) -> LocationResponse:
    radius = _radius(radius_km, services.settings)
    ts = body.ts or datetime.now(UTC)
    # The flow turns this document into a location event; its shape is the contract with the
    # "pings" decoder, so nothing else (accuracy, device) goes in.
    document = {
        "_id": f"api-{uuid.uuid4().hex}",
        "user_id": user_id,
        "lat": body.lat,
        "lon": body.lon,
        "ts": ts.isoformat(),
        "source": "api",
    }
    try:
        (position,) = services.event_store.append(PINGS_COLLECTION, [document])
    except Exception:
        log.error("appending a ping for %s failed", user_id, exc_info=True)
        raise ApiError(503, "could not record the location: the event store is not answering") from None

    # Suggestions are computed here and now rather than after the flow catches up: the user is
    # looking at the screen. A new user is fine (cold start); an unreadable row degrades.
    user, degraded = with_fallback(lambda: read_user(services, user_id), None, "user_activity")
    intent, intent_model = predict_intent(services, user_id, ts, body.lat, body.lon, user)
    hint = intent_hint(intent, services.settings.intent_min_probability) if intent else None
    prefer = top_k(intent, 1)[0] if hint else None
    response = build_suggestions(
        services, user_id, body.lat, body.lon, ts, radius, limit, user, widen=radius_km is None, prefer=prefer
    )
    enqueue_impressions(services, response, user)
    return LocationResponse(
        **response.model_dump(exclude={"degraded"}),
        degraded=response.degraded or degraded,
        event_position=position,
        intent=[IntentOut(category=c, probability=round(intent[c], 4)) for c in top_k(intent, 3)],
        you_may_want=hint,
        intent_model=intent_model,
    )


def predict_intent(
    services: Services, user_id: str, at: datetime, lat: float, lon: float, user: Mapping[str, Any] | None
) -> tuple[dict[str, float], str | None]:
    """Next-category probabilities and the model that produced them (``({}, None)`` before any
    model has learned).

    The online model (River, published by the flow) answers for everyone; the promoted GRU
    (``online.sequence_intent``) joins it in a linear pool for a user with enough engaged
    categories. Nothing promoted: the online model alone, as before the GRU existed.
    """
    river = _predict_river(services, user_id, at, lat, lon, user)
    gru: tuple[str, dict[str, float]] | None = None
    weight = services.settings.sequence_intent_weight
    if weight > 0:
        try:
            gru = sequence_intent(services).predict(user_id, at.timestamp())
        except Exception:  # a model that cannot answer must not cost the user their suggestions
            log.warning("sequence-model prediction failed for %s", user_id, exc_info=True)
    if gru is None:
        return river, ("river" if river else None)
    version, probabilities = gru
    label = f"gru:{version}" if not river or weight >= 1.0 else f"gru:{version}+river"
    return pool(river, probabilities, weight), label


def sequence_intent(services: Services) -> SequenceIntent:
    """The promoted next-category GRU of this process, following the registry."""
    return services.extra("sequence_intent", lambda s: SequenceIntent.from_settings(s.settings))


def _predict_river(
    services: Services, user_id: str, at: datetime, lat: float, lon: float, user: Mapping[str, Any] | None
) -> dict[str, float]:
    from online.model_state import ModelWatcher, open_model_state

    watcher = services.extra(
        "intent_watcher",
        lambda s: ModelWatcher(open_model_state(s.settings), INTENT_MODEL, interval_s=s.settings.model_poll_interval_s),
    )
    learner = watcher.current()
    if learner is None:
        return {}
    try:
        travelling = is_travelling(user, lat, lon, services.settings.travel_km)
        return learner.predict(user_id, at, lon=lon, cell=cell_of(lat, lon, services.settings.h3_resolution),
                               travelling=travelling)
    except Exception:  # a model that cannot answer must not cost the user their suggestions
        log.warning("next-intent prediction failed for %s", user_id, exc_info=True)
        return {}


def _radius(radius_km: float | None, settings: Settings) -> float:
    if radius_km is None:
        return settings.suggest_radius_km
    if radius_km > settings.max_radius_km:
        message = f"must be greater than 0 and at most {settings.max_radius_km:g}"
        raise ApiError(
            422,
            f"radius_km: {message}",
            [{"field": "radius_km", "message": message, "type": "less_than_equal"}],
        )
    return radius_km
