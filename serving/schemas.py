"""Pydantic models at the edge of the API: what clients send and what they get back.

Validation lives here so that every route rejects bad input the same way and with the same words
("lat: must be between -90 and 90"); the error handlers in :mod:`serving.errors` only rephrase.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

#: User ids as the event documents carry them; the pattern keeps ids safe in paths, logs and keys.
USER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _check_lat(value: float | None) -> float | None:
    return _check_range(value, 90.0)


def _check_lon(value: float | None) -> float | None:
    return _check_range(value, 180.0)


def _check_range(value: float | None, bound: float) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number between {-bound:g} and {bound:g}")
    if not -bound <= value <= bound:
        raise ValueError(f"must be between {-bound:g} and {bound:g}")
    return value


def parse_iso_time(value: Any) -> Any:
    """ISO-8601 text to an aware UTC datetime; a time without offset is taken as UTC.

    Epoch numbers are refused on purpose: ``1714586400`` and ``1714586400000`` (ms) are both
    common, and guessing wrong shifts a location by decades without anyone noticing.
    """
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"must be an ISO-8601 time such as 2026-05-01T18:30:00Z, not {value[:40]!r}"
            ) from None
    else:
        raise ValueError("must be an ISO-8601 time string such as 2026-05-01T18:30:00Z")
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


Latitude = Annotated[float, AfterValidator(_check_lat)]
Longitude = Annotated[float, AfterValidator(_check_lon)]
FiniteFloat = Annotated[float, AfterValidator(_finite)]
IsoTime = Annotated[datetime, BeforeValidator(parse_iso_time)]


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class LocationIn(BaseModel):
    """A location ping from the app."""

    lat: Latitude = Field(description="WGS84 latitude, -90..90", examples=[40.758])
    lon: Longitude = Field(description="WGS84 longitude, -180..180", examples=[-73.9855])
    ts: IsoTime | None = Field(None, description="when the user was there (ISO-8601); default: now")
    accuracy_m: Annotated[float, AfterValidator(_finite)] | None = Field(
        None, ge=0, description="GPS accuracy radius in metres, as the device reports it"
    )


class GeoPoint(BaseModel):
    lat: float
    lon: float
    cell: str = Field(description="H3 cell at KAIROS_H3_RESOLUTION")


class SuggestionItem(BaseModel):
    item_id: str
    title: str | None
    kind: str
    category: str | None
    business_id: str
    price: float | None
    original_price: float | None
    discount: float | None = Field(description="0..1 off the original price")
    currency: str | None
    lat: float
    lon: float
    distance_km: float
    travel_minutes: float
    valid_from: datetime | None
    valid_to: datetime | None
    score: float
    score_parts: dict[str, float] = Field(description="raw part values the score is built from")
    score_contributions: dict[str, float] = Field(description="weight x part; they sum to score")
    reason: str = Field(examples=["38 % off spa 0.6 km away (8 min walk), ends in 2 h"])


class SuggestionsResponse(BaseModel):
    request_id: str = Field(description="ties feedback (POST /v1/feedback) to this response")
    user_id: str
    at: datetime
    location: GeoPoint
    radius_km: float = Field(description="the radius searched (may be wider than the default, see widened_for)")
    widened_for: str | None = Field(
        None, description="the default radius was widened because this favourite category had nothing open in it"
    )
    travelling: bool = Field(description="the user is far (KAIROS_TRAVEL_KM) from their home area")
    cold_start: bool = Field(description="no behaviour known yet: interest is uniform across categories")
    degraded: bool = Field(description="some optional features could not be read; ranking used defaults")
    items: list[SuggestionItem]


class IntentOut(BaseModel):
    category: str
    probability: float


class LocationSuggestionsResponse(SuggestionsResponse):
    event_position: str = Field(description="position of the recorded ping in the event store")
    intent: list[IntentOut] = Field(
        default_factory=list, description="next-intent model: the most likely next categories here and now"
    )
    you_may_want: str | None = Field(
        None, description='a hint when one category is likely enough, e.g. "you may want a spa now"'
    )


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str
    type: str | None = None


class ErrorInfo(BaseModel):
    status: int
    message: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


#: ``responses=`` for routes, so /docs shows the error shape next to each status.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "not found"},
    422: {"model": ErrorResponse, "description": "invalid input; the message names the field"},
    500: {"model": ErrorResponse, "description": "internal error (details are logged, not returned)"},
}
