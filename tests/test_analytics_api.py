"""Area and business analytics end to end: an offline log and a catalog under a temporary home,
the routes as JSON and as charts, and their errors.

The current-hour numbers come from the feature store's ``read`` interface; a small stand-in with
the same interface serves them here (Feast itself is tested with the flow; opening it costs
seconds)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.geo import cell_of
from kairos.schema import Event
from kairos.stores.catalog import CatalogItem, SqliteCatalog
from kairos.stores.event_store import SqliteEventStore
from kairos.stores.offline_log import OfflineLog
from serving.app import create_app
from serving.deps import Services
from tests.api_errors import assert_error

AT = datetime(2026, 5, 6, tzinfo=UTC)  # the window is the two days before: May 4 and 5
DAY = timedelta(days=1)
LAT, LON = 40.7265, -73.9815
CELL = cell_of(LAT, LON, 8)
KM = 1 / 111.2


def item(item_id: str, business: str, category: str, price: float, km_north: float = 0.0,
         valid: tuple[datetime, datetime] = (AT - 30 * DAY, AT + 30 * DAY), original: float | None = None) -> CatalogItem:
    lat = LAT + km_north * KM
    return CatalogItem(
        item_id=item_id, business_id=business, kind="offer", category=category, title=item_id, text=None,
        lat=lat, lon=LON, cell=cell_of(lat, LON, 8), price=price, original_price=original, currency="USD",
        valid_from=valid[0].timestamp(), valid_to=valid[1].timestamp(), deleted=False,
        updated_ts=(AT - 30 * DAY).timestamp(),
    )


CATALOG = [
    item("b1-latte", "b1", "coffee", 4.0, original=5.0),
    item("b2-espresso", "b2", "coffee", 5.0),
    # A spa offer on sale 10:00-14:00 on May 4 only: half a spa per day at those hours.
    item("b1-facial", "b1", "spa", 60.0, valid=(AT - 2 * DAY + timedelta(hours=10), AT - 2 * DAY + timedelta(hours=14))),
    item("b3-far", "b3", "retail", 30.0, km_north=40.0),  # another area, never seen by anyone
]


def user_event(eid: str, ts: datetime, kind: str, category: str, item_id: str | None = None,
               price: float | None = None, cell: str = CELL) -> Event:
    return Event(eid, ts, "user", f"u-{eid}", kind, item_id=item_id, category=category, lat=LAT, lon=LON,
                 cell=cell, price=price)


def history() -> list[Event]:
    events = []
    for day in (2, 1):
        start = AT - day * DAY
        for k in range(3):
            events.append(user_event(f"s{day}{k}", start + timedelta(hours=8, minutes=10 + k), "search", "coffee"))
        events.append(user_event(f"s{day}x", start + timedelta(hours=15, minutes=10), "search", "coffee"))
        for k in range(2):
            events.append(user_event(f"v{day}{k}", start + timedelta(hours=8, minutes=20 + k), "view", "coffee",
                                     "b1-latte"))
        events.append(user_event(f"p{day}", start + timedelta(hours=8, minutes=30), "purchase", "coffee",
                                 "b1-latte", 4.0))
        for k in range(2):
            events.append(user_event(f"q{day}{k}", start + timedelta(hours=12, minutes=30 + k), "purchase",
                                     "coffee", "b2-espresso", 5.0))
        # Demand elsewhere, and a profile (state, not demand): neither counts for the area.
        events.append(user_event(f"far{day}", start + timedelta(hours=12), "search", "spa",
                                 cell=cell_of(LAT + 0.5, LON, 8)))
        events.append(Event(f"prof{day}", start - 400 * DAY, "user", "u9", "profile"))
    events.append(user_event("old", AT - 5 * DAY, "search", "coffee"))  # before the window
    return events


class FakeFeatures:
    """The feature store's narrow read interface, with fixed rows."""

    def __init__(self) -> None:
        self.rows = {
            ("cell_demand", CELL, "coffee"): {"search_count_1h": 2, "view_count_1h": 7, "purchase_count_24h": 3},
            ("cell_supply", CELL, "coffee"): {"active_items": 2, "median_price": 4.5},
        }
        self.down = False

    def read(self, view: str, keys: list[dict[str, str]]) -> list[dict[str, Any] | None]:
        if self.down:
            raise ConnectionError("redis down")
        return [self.rows.get((view, k["cell"], k["category"])) for k in keys]


@dataclass
class Env:
    services: Services
    client: TestClient
    features: FakeFeatures


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = Settings(home=tmp_path_factory.mktemp("kairos_analytics"), auth_required=False, feast_project=f"a{uuid.uuid4().hex[:8]}")
    events = history()
    OfflineLog(settings.offline_dir).write_events(events[: len(events) // 2])
    OfflineLog(settings.offline_dir).write_events(events[len(events) // 2:])
    OfflineLog(settings.offline_dir).write_events(events[:2])  # written twice: counted once
    catalog = SqliteCatalog(settings.catalog_path)
    catalog.upsert(CATALOG)
    features = FakeFeatures()
    services = Services(settings=settings, event_store=SqliteEventStore(settings.event_log_path), catalog=catalog,
                        features=features)
    with TestClient(create_app(services=services)) as client:
        yield Env(services, client, features)
    services.close()


def area(env: Env, **params: Any) -> Any:
    query = {"lat": LAT, "lon": LON, "at": AT.isoformat(), "days": 2, "tz": "UTC", **params}
    return env.client.get("/v1/analytics/area", params={k: v for k, v in query.items() if v is not None})


def business(env: Env, business_id: str = "b1", **params: Any) -> Any:
    query = {"at": AT.isoformat(), "days": 2, "tz": "UTC", **params}
    return env.client.get(f"/v1/analytics/businesses/{business_id}", params=query)


# ---- area ----------------------------------------------------------------------------------------


def test_area_demand_supply_prices_and_best_hours(env: Env) -> None:
    response = area(env)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cells"][0] == CELL and set(body["cells"]) == set(h3.grid_disk(CELL, 1))
    assert body["days_with_data"] == 2 and body["timezone"] == "UTC"
    assert body["categories"] == ["coffee", "spa"]
    coffee = body["demand_per_day"]["coffee"]
    # Per day at 8:00: 3 searches + 2 views + 1 purchase; 12:00: 2 purchases; 15:00: 1 search.
    assert coffee[8] == 6.0 and coffee[12] == 2.0 and coffee[15] == 1.0 and sum(coffee) == 9.0
    assert body["purchases_per_day"]["coffee"][8] == 1.0 and body["purchases_per_day"]["coffee"][12] == 2.0
    assert body["demand_per_day"]["spa"] == [0.0] * 24  # the spa search was in another area
    assert body["supply_per_day"]["coffee"] == [2.0] * 24
    assert body["supply_per_day"]["spa"] == [0.5 if 10 <= h < 14 else 0.0 for h in range(24)]
    prices = body["competitor_prices"]["coffee"]
    assert (prices["count"], prices["min"], prices["median"], prices["max"]) == (2, 4.0, 4.5, 5.0)
    assert prices["mean_discount"] == pytest.approx(0.2)
    assert sum(b["items"] for b in prices["histogram"]) == 2
    assert body["competitor_prices"]["spa"]["count"] == 0  # the facial is not on sale at `at`
    assert [b["hour"] for b in body["best_hours_to_promote"]["coffee"]] == [8, 12, 15]
    assert body["best_hours_to_promote"]["coffee"][0] == {
        "hour": 8, "demand_per_day": 6.0, "items_on_sale": 2.0, "demand_per_item": 2.0}
    assert body["best_hours_to_promote"]["spa"] == []
    assert body["now"]["coffee"] == {"searches_1h": 2, "views_1h": 7, "purchases_24h": 3, "active_items": 2,
                                     "median_of_cell_median_prices": 4.5}
    assert body["missing"] == []


def test_area_by_cell_category_and_local_time(env: Env) -> None:
    body = area(env, lat=None, lon=None, cell=CELL, ring=0, category="coffee", tz="America/New_York").json()
    assert body["cells"] == [CELL] and body["categories"] == ["coffee"]
    assert body["timezone"] == "America/New_York"
    assert body["demand_per_day"]["coffee"][4] == 6.0  # 8:00 UTC is 4:00 in New York in May
    # A coarser cell holds the area too (events are counted in their parent cell).
    parent = h3.cell_to_parent(CELL, 7)
    coarse = area(env, lat=None, lon=None, cell=parent, ring=0).json()
    assert coarse["demand_per_day"]["coffee"][8] == 6.0 and coarse["now"] is None


def test_area_without_data_says_what_is_missing(env: Env) -> None:
    body = area(env, lat=LAT + 40 * KM * 3, lon=LON).json()
    assert body["missing"] == ["demand in this area in the last 2 days", "items located in this area"]
    assert body["categories"] == [] and body["best_hours_to_promote"] == {}
    assert body["days_with_data"] == 2  # the log has two days; this area is quiet, not young


def test_area_survives_the_feature_store_being_down(env: Env) -> None:
    env.features.down = True
    try:
        body = area(env).json()
    finally:
        env.features.down = False
    assert body["now"] is None and body["demand_per_day"]["coffee"][8] == 6.0


@pytest.mark.parametrize(("fmt", "media", "magic"), [("png", "image/png", b"\x89PNG"), ("svg", "image/svg+xml", b"<svg")])
@pytest.mark.parametrize("chart", ["demand", "supply", "prices"])
def test_area_charts(env: Env, fmt: str, media: str, magic: bytes, chart: str) -> None:
    response = area(env, format=fmt, chart=chart)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    assert magic in response.content[:2000]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"lat": None, "lon": None}, "cell or lat and lon: one is required"),
        ({"lon": None}, "lon: is required when lat is given"),
        ({"lat": None}, "lat: is required when lon is given"),
        ({"lat": 95}, "lat: must be between -90 and 90"),
        ({"lat": None, "lon": None, "cell": "not-a-cell"}, "cell: 'not-a-cell' is not an H3 cell index"),
        ({"lat": None, "lon": None, "cell": cell_of(LAT, LON, 9)}, "cell: resolution 9 is finer than the event cells"),
        ({"ring": 4}, "ring: must be less than or equal to 3"),
        ({"days": 0}, "days: must be greater than or equal to 1"),
        ({"days": 91}, "days: must be less than or equal to 90"),
        ({"format": "gif"}, "format: must be 'json', 'png' or 'svg'"),
        ({"chart": "pie"}, "chart: must be 'demand', 'supply' or 'prices'"),
        ({"category": "cars"}, "category: must be"),
        ({"tz": "Nowhere/City"}, "tz: unknown time zone"),
        ({"at": "noon"}, "at: must be an ISO-8601 time"),
    ],
)
def test_area_bad_input_is_422_naming_the_field(env: Env, params: dict[str, Any], fragment: str) -> None:
    assert_error(area(env, **params), 422, fragment)


# ---- business ----------------------------------------------------------------------------------


def test_business_kpis_against_the_area(env: Env) -> None:
    response = business(env)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["categories"] == ["coffee", "spa"] and body["competitors"] == 1 and body["days_with_data"] == 2
    assert body["kpis"] == {"views": 4, "clicks": 0, "saves": 0, "orders": 2, "revenue": 8.0, "conversion": 0.5,
                            "average_order_value": 4.0}
    assert body["area_average"]["orders"] == 4 and body["area_average"]["revenue"] == 20.0
    assert body["revenue_share_of_area"] == pytest.approx(8 / 28, abs=1e-4)
    assert (body["revenue_rank"], body["businesses_ranked"]) == (2, 2)
    assert body["daily"] == [
        {"date": "2026-05-04", "revenue": 4.0, "area_average_revenue": 10.0},
        {"date": "2026-05-05", "revenue": 4.0, "area_average_revenue": 10.0},
    ]
    assert body["orders_by_hour"]["own_per_day"][8] == 1.0
    assert body["orders_by_hour"]["area_average_per_day"][12] == 2.0
    coffee = next(p for p in body["price_position"] if p["category"] == "coffee")
    assert coffee == {"category": "coffee", "own_median_price": 4.0, "area_median_price": 5.0, "difference": -0.2}
    assert body["missing"] == []


def test_business_without_activity_or_competitors(env: Env) -> None:
    body = business(env, "b3").json()
    assert body["kpis"]["orders"] == 0 and body["area_average"] is None and body["competitors"] == 0
    assert body["missing"] == ["views or orders of this business in the last 2 days",
                               "competitors of the same categories within 2 km"]
    assert body["revenue_share_of_area"] is None


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_business_chart(env: Env, fmt: str, magic: bytes) -> None:
    response = business(env, format=fmt)
    assert response.status_code == 200 and magic in response.content[:2000]


def test_business_errors(env: Env) -> None:
    assert_error(business(env, "ghost"), 404, "unknown business 'ghost'")
    assert_error(business(env, "bad id"), 422, "business_id: must match")
    assert_error(business(env, radius_km=0), 422, "radius_km: must be greater than 0")
    assert_error(business(env, days=100), 422, "days: must be less than or equal to 90")
    assert_error(business(env, format="pdf"), 422, "format:")


def test_openapi_documents_the_routes(env: Env) -> None:
    paths = env.client.get("/openapi.json").json()["paths"]
    assert {"/v1/analytics/area", "/v1/analytics/businesses/{business_id}"} <= set(paths)
