"""The business pricing feed (DESIGN §6): recommended prices now, and a stream of changes.

``GET /v1/businesses/{id}/pricing`` answers, for every item the business has on sale, the price
Kairos recommends for the coming hour within the guardrails, the expected sales and revenue at the
current and the recommended price, and the reason in words. ``…/pricing/stream`` pushes the same
as server-sent events: a ``snapshot`` first, then a ``recommendation`` whenever an item's
recommendation changes materially, ``removed`` when an item goes off sale, and a keep-alive
comment otherwise.

There are no API keys yet (issue #6 adds scopes): the business is the one in the path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from serving.business_views import PricingOptions, material_change, pricing_feed
from serving.deps import ServicesDep
from serving.errors import ApiError
from serving.schemas import ERROR_RESPONSES, FiniteFloat, IsoTime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/businesses", tags=["businesses"], responses={
    **ERROR_RESPONSES, 409: {"description": "the item is not on sale at that time"},
    503: {"description": "the market model or a store is not available"},
})

#: Business ids as documents carry them; the pattern keeps them safe in paths, logs and keys.
BUSINESS_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
ITEM_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]{1,128}$"

BusinessId = Annotated[
    str, Path(pattern=BUSINESS_ID_PATTERN, description="letters, digits and _ . : - (1 to 64 characters)")
]
ItemId = Annotated[str | None, Query(pattern=ITEM_ID_PATTERN, description="only this item of the business")]
Capacity = Annotated[
    FiniteFloat | None,
    Query(gt=0, le=1e6, description="units each item can sell per hour, for items that do not state one"),
]
FloorRatio = Annotated[
    FiniteFloat | None,
    Query(gt=0, le=1, description="cost floor as a share of the list price (default 0.7)"),
]
MaxStep = Annotated[
    FiniteFloat | None, Query(gt=0, lt=1, description="largest change per recommendation (default 0.15)")
]
RadiusKm = Annotated[FiniteFloat, Query(gt=0, le=10, description="competitors within this distance, km")]
Tz = Annotated[
    str | None,
    Query(max_length=64, description="IANA time zone for hours in reasons (default: from the longitude)"),
]


class Bounds(BaseModel):
    lower: float
    upper: float


class DemandInfo(BaseModel):
    area: str = Field(description="H3 cell of the item's area (KAIROS_H3_RESOLUTION - 1)")
    hour: datetime = Field(description="start of the hour the forecast is for (UTC)")
    slot: str | None = Field(description="that hour in local time, e.g. 'Friday 18:00'")
    forecast: float | None = Field(description="expected views and searches in the area for the category")
    usual: float | None = Field(description="the usual for that hour of the week")
    ratio: float | None = Field(description="forecast / usual")
    hours_seen: int
    stale: bool = Field(description="the model's data ends well before this hour: the forecast is the usual")


class ElasticityInfo(BaseModel):
    value: float = Field(description="% change of sales per % change of price")
    source: str = Field(description="item | area | category | prior: where the estimate comes from")
    item_price_changes: int


class CompetitorInfo(BaseModel):
    count: int
    radius_km: float
    median_price: float | None
    min_price: float | None
    max_price: float | None


class ItemPricing(BaseModel):
    item_id: str
    title: str | None
    kind: str
    category: str
    currency: str | None
    current_price: float
    original_price: float | None
    list_price: float
    recommended_price: float | None = Field(description="None: not enough data yet (see missing)")
    action: str | None = Field(description="raise | lower | hold")
    change: float | None = Field(description="recommended / current - 1")
    bounds: Bounds | None = Field(description="the guardrails of this step")
    guardrail: str | None = Field(description="the guardrail that stopped the price, if one did")
    expected_sales_now: float | None
    expected_sales: float | None
    expected_revenue_now: float | None
    expected_revenue: float | None
    expected_revenue_change: float | None
    expected_views_next_hour: float | None
    demand: DemandInfo
    elasticity: ElasticityInfo
    competitors: CompetitorInfo
    capacity: float | None
    reason: str = Field(examples=[
        "Raise to 88.00 (+10 %): demand here is 2.4x usual for Friday 18:00; at 80.00 you would sell out "
        "(about 3.0 wanted per hour, capacity 1); 3 competitors within 1 km are 24 % dearer"])
    missing: list[str] = Field(description="what the model has not learned yet for this item")


class SkippedItem(BaseModel):
    item_id: str
    reason: str


class ModelInfo(BaseModel):
    learned_until: str | None
    events: int
    hours_learned: int
    source: str = Field(description="checkpoint (written by the flow) or offline log (replayed)")


class PricingResponse(BaseModel):
    business_id: str
    at: datetime
    timezone: str
    status: str = Field(description="ok | not_enough_data")
    missing: list[str]
    items: list[ItemPricing]
    skipped: list[SkippedItem]
    model: ModelInfo


def _options(capacity: float | None, floor_ratio: float | None, max_step: float | None, radius_km: float,
             tz: str | None) -> PricingOptions:
    return PricingOptions(capacity=capacity, floor_ratio=floor_ratio, max_step=max_step, radius_km=radius_km,
                          tz=tz)


@router.get(
    "/{business_id}/pricing",
    response_model=PricingResponse,
    summary="Recommended price per active item, with expected demand and revenue change and the reason",
)
def get_pricing(
    business_id: BusinessId,
    services: ServicesDep,
    item_id: ItemId = None,
    at: Annotated[IsoTime | None, Query(description="ISO-8601 time to price for; default now")] = None,
    capacity: Capacity = None,
    floor_ratio: FloorRatio = None,
    max_step: MaxStep = None,
    radius_km: RadiusKm = 1.0,
    tz: Tz = None,
) -> dict[str, Any]:
    options = _options(capacity, floor_ratio, max_step, radius_km, tz)
    return pricing_feed(services, business_id, at or datetime.now(UTC), options, item_id)


@router.get(
    "/{business_id}/pricing/stream",
    summary="Server-sent events: a snapshot, then each material change of a recommendation",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "events: snapshot, recommendation, removed, error"}},
)
async def stream_pricing(
    business_id: BusinessId,
    request: Request,
    services: ServicesDep,
    interval_s: Annotated[FiniteFloat, Query(ge=0.05, le=3600, description="seconds between checks")] = 30.0,
    min_change: Annotated[
        FiniteFloat, Query(ge=0, le=1, description="relative price move that counts as a change")
    ] = 0.02,
    max_events: Annotated[int | None, Query(ge=1, le=100_000, description="end the stream after this many")] = None,
    capacity: Capacity = None,
    floor_ratio: FloorRatio = None,
    max_step: MaxStep = None,
    radius_km: RadiusKm = 1.0,
    tz: Tz = None,
) -> StreamingResponse:
    options = _options(capacity, floor_ratio, max_step, radius_km, tz)
    # The first feed is computed before the stream starts, so a bad business or option is a
    # plain 4xx response rather than an error event.
    first = await run_in_threadpool(pricing_feed, services, business_id, datetime.now(UTC), options)

    async def events() -> AsyncIterator[str]:
        seq = 0
        sent = 0
        last = {item["item_id"]: item for item in first["items"]}
        yield _sse("snapshot", first, seq)
        sent += 1
        while max_events is None or sent < max_events:
            await asyncio.sleep(interval_s)
            if await request.is_disconnected():
                return
            try:
                feed = await run_in_threadpool(pricing_feed, services, business_id, datetime.now(UTC), options)
            except ApiError as exc:
                seq += 1
                yield _sse("error", {"status": exc.status, "message": exc.message}, seq)
                return
            except Exception:
                log.error("pricing stream of %s failed", business_id, exc_info=True)
                seq += 1
                yield _sse("error", {"status": 500, "message": "internal error; the failure has been logged"}, seq)
                return
            current = {item["item_id"]: item for item in feed["items"]}
            quiet = True
            for item_id, item in current.items():
                if material_change(last.get(item_id), item, min_change):
                    seq += 1
                    yield _sse("recommendation", item, seq)
                    last[item_id] = item
                    sent, quiet = sent + 1, False
                    if max_events is not None and sent >= max_events:
                        return
            for item_id in [i for i in last if i not in current]:
                seq += 1
                yield _sse("removed", {"item_id": item_id}, seq)
                del last[item_id]
                sent, quiet = sent + 1, False
                if max_events is not None and sent >= max_events:
                    return
            if quiet:
                yield ": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(event: str, data: Any, seq: int) -> str:
    payload = json.dumps(jsonable_encoder(data), separators=(",", ":"))
    return f"id: {seq}\nevent: {event}\ndata: {payload}\n\n"
