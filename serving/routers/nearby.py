"""AR clients: ``GET /v1/nearby?lat=&lon=&heading=&fov=`` (DESIGN §1.9, §6).

A camera view needs the items it can see: those within ``radius_km`` whose bearing from the user
lies inside the field of view (``fov`` degrees centred on the compass ``heading``), each with its
bearing relative to the heading (negative: left of centre, positive: right; in [-180, 180]) and its
distance, so the client can place a label on screen. They are ranked exactly like suggestions
(:class:`online.transparent_ranker.TransparentRanker`, same parts and reasons), so the best deal in
view is first.

Items within :data:`HERE_KM` of the user are always "in view": at a few metres the bearing is GPS
noise, and the shop the user stands in front of must not vanish when they turn.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from kairos.geo import bearing_deg, cell_of, haversine_km
from online.transparent_ranker import RankContext
from serving.deps import ServicesDep
from serving.errors import ApiError
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
from serving.suggestions import candidate_items, ranking_candidates, read_user, to_item, with_fallback

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/nearby", tags=["ar"], responses=ERROR_RESPONSES)

DEFAULT_FOV_DEG = 60.0
DEFAULT_RADIUS_KM = 1.0
#: A camera does not resolve a label farther than this; larger radii are refused, not clipped.
MAX_RADIUS_KM = 5.0
#: Closer than this an item is "here", in view whatever the heading.
HERE_KM = 0.01


class NearbyItem(SuggestionItem):
    bearing_deg: float = Field(description="compass bearing from the user to the item, 0..360 clockwise from north")
    relative_bearing_deg: float = Field(
        description="bearing relative to the heading, -180..180: negative left of centre, positive right"
    )
    screen_x: float = Field(description="horizontal place in the view: -1 left edge, 0 centre, 1 right edge")


class NearbyResponse(BaseModel):
    request_id: str = Field(description="ties feedback (POST /v1/feedback) to this response")
    at: datetime
    location: GeoPoint
    heading: float
    fov: float
    radius_km: float
    user_id: str | None
    degraded: bool = Field(description="some optional store could not be read; ranking used defaults")
    items: list[NearbyItem]


def relative_bearing(bearing: float, heading: float) -> float:
    """``bearing - heading`` folded into [-180, 180) (exactly behind is -180)."""
    return (bearing - heading + 180.0) % 360.0 - 180.0


def in_view(relative: float, fov: float) -> bool:
    return abs(relative) <= fov / 2.0 + 1e-9


@router.get("", response_model=NearbyResponse, summary="Items in the camera's field of view, with bearing and distance")
def nearby(
    services: ServicesDep,
    lat: Annotated[Latitude, Query(description="where the camera is")],
    lon: Annotated[Longitude, Query()],
    heading: Annotated[FiniteFloat, Query(ge=0, le=360, description="compass heading of the camera, degrees")],
    fov: Annotated[FiniteFloat, Query(gt=0, le=360, description="horizontal field of view, degrees")] = DEFAULT_FOV_DEG,
    radius_km: Annotated[
        FiniteFloat, Query(gt=0, le=MAX_RADIUS_KM, description=f"how far to look, at most {MAX_RADIUS_KM:g} km")
    ] = DEFAULT_RADIUS_KM,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN, description="personalises the ranking")] = None,
    at: Annotated[IsoTime | None, Query(description="ISO-8601 time; default now")] = None,
) -> NearbyResponse:
    settings = services.settings
    if radius_km > settings.max_radius_km:
        message = f"must be greater than 0 and at most {settings.max_radius_km:g}"
        raise ApiError(422, f"radius_km: {message}",
                       [{"field": "radius_km", "message": message, "type": "less_than_equal"}])
    at = (at or datetime.now(UTC)).astimezone(UTC)
    heading = heading % 360.0

    degraded = False
    user: Mapping[str, Any] | None = None
    if user_id is not None:
        user, failed = with_fallback(lambda: read_user(services, user_id), None, "user_activity")
        degraded |= failed

    items, failed = with_fallback(lambda: candidate_items(services, lat, lon, radius_km, at), [], "catalog")
    degraded |= failed
    # Geometry first: only what the camera sees is ranked.
    view: dict[str, tuple[float, float]] = {}
    visible = []
    for item in items:
        distance = haversine_km(lat, lon, item.lat, item.lon)
        bearing = bearing_deg(lat, lon, item.lat, item.lon)
        relative = 0.0 if distance < HERE_KM else relative_bearing(bearing, heading)
        if distance < HERE_KM or in_view(relative, fov):
            view[item.item_id] = (bearing, relative)
            visible.append(item)

    # Every item_stats field, as nearby always read them (suggestions read only ITEM_STATS_FIELDS).
    candidates, area_median, failed = ranking_candidates(services, visible)
    degraded |= failed
    context = RankContext.build(lat, lon, at, candidates, radius_km=radius_km, user=user,
                                area_median_price=area_median)
    ranked = services.ranker.rank(context, candidates, limit=limit)

    out = []
    for scored in ranked:
        bearing, relative = view[scored.item.item_id]
        half = min(fov, 359.999) / 2.0
        out.append(NearbyItem(
            **to_item(scored).model_dump(),
            bearing_deg=round(bearing, 2),
            relative_bearing_deg=round(relative, 2),
            screen_x=round(max(-1.0, min(1.0, relative / half)), 4),
        ))
    return NearbyResponse(
        request_id=uuid.uuid4().hex,
        at=at,
        location=GeoPoint(lat=lat, lon=lon, cell=cell_of(lat, lon, settings.h3_resolution)),
        heading=heading,
        fov=fov,
        radius_km=radius_km,
        user_id=user_id,
        degraded=degraded,
        items=out,
    )


__all__ = ["NearbyItem", "NearbyResponse", "in_view", "relative_bearing", "router"]
