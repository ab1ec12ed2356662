"""Analytics for businesses and analysts (DESIGN §6): an area's demand and supply by category and
hour, competitor prices and the best hours to promote; a business's KPIs against its area. Each as
JSON, or as a PNG or SVG chart with ``format=png|svg``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import h3
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kairos.schema import CATEGORIES
from serving.analytics_views import area_chart, area_report, business_chart, business_report, resolve_area
from serving.business_views import business_items, local_time
from serving.deps import ServicesDep
from serving.errors import ApiError
from serving.routers.businesses import BUSINESS_ID_PATTERN
from serving.schemas import ERROR_RESPONSES, FiniteFloat, IsoTime, Latitude, Longitude

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=ERROR_RESPONSES)

Format = Annotated[Literal["json", "png", "svg"], Query(description="json, or a chart as png or svg")]
Days = Annotated[int, Query(ge=1, le=90, description="how many days of history, ending at `at`")]
At = Annotated[IsoTime | None, Query(description="ISO-8601 end of the window; default now")]
Tz = Annotated[str | None, Query(max_length=64, description="IANA time zone of the hours (default: from the longitude)")]
MEDIA = {"png": "image/png", "svg": "image/svg+xml"}


class PriceBin(BaseModel):
    from_: float = Field(alias="from")
    to: float
    items: int


class PriceStats(BaseModel):
    count: int
    min: float | None
    p25: float | None
    median: float | None
    p75: float | None
    max: float | None
    mean_discount: float | None
    histogram: list[PriceBin]


class BestHour(BaseModel):
    hour: int = Field(description="local hour of the day")
    demand_per_day: float
    items_on_sale: float
    demand_per_item: float


class AreaResponse(BaseModel):
    cells: list[str]
    resolution: int
    at: datetime
    days: int
    days_with_data: int
    timezone: str
    categories: list[str]
    hours: list[int]
    demand_per_day: dict[str, list[float]] = Field(description="demand signals per day by local hour")
    purchases_per_day: dict[str, list[float]]
    supply_per_day: dict[str, list[float]] = Field(description="items on sale by local hour (average)")
    competitor_prices: dict[str, PriceStats] = Field(description="items on sale at `at`")
    best_hours_to_promote: dict[str, list[BestHour]]
    now: dict[str, dict[str, Any]] | None = Field(description="this hour's feature rows summed over the area")
    missing: list[str]


class Kpis(BaseModel):
    views: int
    clicks: int
    saves: int
    orders: int = Field(description="purchases and bookings")
    revenue: float = Field(description="sum of amounts paid")
    conversion: float = Field(description="orders / views")
    average_order_value: float


class AverageKpis(BaseModel):
    views: float
    clicks: float
    saves: float
    orders: float
    revenue: float
    conversion: float
    average_order_value: float


class DailyRevenue(BaseModel):
    date: str
    revenue: float
    area_average_revenue: float | None


class OrdersByHour(BaseModel):
    hours: list[int]
    own_per_day: list[float]
    area_average_per_day: list[float] | None


class PricePosition(BaseModel):
    category: str
    own_median_price: float | None
    area_median_price: float | None
    difference: float | None = Field(description="own / area - 1")


class BusinessAnalyticsResponse(BaseModel):
    business_id: str
    at: datetime
    days: int
    days_with_data: int
    timezone: str
    categories: list[str]
    radius_km: float
    competitors: int
    kpis: Kpis
    area_average: AverageKpis | None = Field(description="the average competitor business in the area")
    revenue_share_of_area: float | None
    revenue_rank: int
    businesses_ranked: int
    daily: list[DailyRevenue]
    orders_by_hour: OrdersByHour
    price_position: list[PricePosition]
    missing: list[str]


@router.get(
    "/area",
    response_model=AreaResponse,
    summary="Demand and supply by category and hour around a cell, competitor prices, best hours to promote",
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
)
async def get_area(
    services: ServicesDep,
    cell: Annotated[str | None, Query(max_length=20, description="H3 cell (default: the cell of lat, lon)")] = None,
    lat: Annotated[Latitude | None, Query(description="WGS84 latitude, with lon, instead of cell")] = None,
    lon: Annotated[Longitude | None, Query(description="WGS84 longitude, with lat, instead of cell")] = None,
    ring: Annotated[int, Query(ge=0, le=3, description="rings of neighbouring cells included")] = 1,
    category: Annotated[Literal[CATEGORIES] | None, Query(description="only this category")] = None,  # type: ignore[valid-type]
    days: Days = 28,
    at: At = None,
    tz: Tz = None,
    format: Format = "json",
    chart: Annotated[Literal["demand", "supply", "prices"], Query(description="which chart (png/svg)")] = "demand",
) -> Any:
    if (lat is None) != (lon is None):
        missing = "lon" if lon is None else "lat"
        raise ApiError(422, f"{missing}: is required when {'lat' if missing == 'lon' else 'lon'} is given",
                       [{"field": missing, "message": "lat and lon go together", "type": "missing"}])
    cells = resolve_area(services.settings, cell, lat, lon, ring)
    centre_lon = lon if lon is not None else h3.cell_to_latlng(cells[0])[1]
    clock = local_time(tz, centre_lon)
    report = await run_in_threadpool(area_report, services, cells, at or datetime.now(UTC), days, category, clock)
    if format == "json":
        return report
    content = await run_in_threadpool(area_chart, report, chart, format)
    return Response(content=content, media_type=MEDIA[format])


@router.get(
    "/businesses/{business_id}",
    response_model=BusinessAnalyticsResponse,
    summary="A business's KPIs (views, orders, revenue, conversion) against its area",
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
)
async def get_business(
    business_id: Annotated[str, Path(pattern=BUSINESS_ID_PATTERN, description="the business")],
    services: ServicesDep,
    days: Days = 28,
    at: At = None,
    radius_km: Annotated[FiniteFloat, Query(gt=0, le=20, description="competitors within this distance")] = 2.0,
    tz: Tz = None,
    format: Format = "json",
) -> Any:
    items = await run_in_threadpool(business_items, services, business_id)
    lon = next((i.lon for i in items if i.lon is not None), None)
    clock = local_time(tz, lon)
    report = await run_in_threadpool(
        business_report, services, business_id, items, at or datetime.now(UTC), days, radius_km, clock
    )
    if format == "json":
        return report
    content = await run_in_threadpool(business_chart, report, format)
    return Response(content=content, media_type=MEDIA[format])
