"""GET /v1/nearby: items in the camera's field of view, with bearings, ranked like suggestions."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.geo import bearing_deg, cell_of
from kairos.stores.catalog import CatalogItem
from online.transparent_ranker import Candidate, RankContext
from serving.app import create_app
from serving.deps import Services
from serving.routers.nearby import in_view, relative_bearing

AT = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
AT_ISO = "2026-05-01T18:00:00Z"
T0 = AT.timestamp()
HOUR = 3600.0
LAT, LON = 40.7580, -73.9855
KM_LAT = 1 / 111.2
KM_LON = KM_LAT / math.cos(math.radians(LAT))


def item(item_id: str, category: str, bearing: float, km: float, price: float | None = 20.0,
         original: float | None = None, **kwargs: Any) -> CatalogItem:
    lat = LAT + km * math.cos(math.radians(bearing)) * KM_LAT
    lon = LON + km * math.sin(math.radians(bearing)) * KM_LON
    values = dict(
        item_id=item_id, business_id=f"biz-{item_id}", kind="offer", category=category, title=f"{item_id} title",
        text=None, lat=lat, lon=lon, cell=cell_of(lat, lon, 8), price=price, original_price=original,
        currency="USD", valid_from=T0 - HOUR, valid_to=T0 + 2 * HOUR, deleted=False, updated_ts=T0 - 2 * HOUR,
    )
    values.update(kwargs)
    return CatalogItem(**values)


CATALOG = [
    item("north_spa", "spa", 0, 0.3, 30.0, 50.0),
    item("north_far_spa", "spa", 5, 0.8, 60.0),
    item("nne_cafe", "coffee", 20, 0.2, 4.0),
    item("east_gym", "fitness", 90, 0.3),
    item("south_bar", "food", 180, 0.3),
    item("west_shop", "retail", 270, 0.3),
    item("nnw_cafe", "coffee", 350, 0.4, 3.0),
    item("here_kiosk", "coffee", 123, 0.003, 2.0),  # 3 m away: in view whatever the heading
    item("north_closed", "spa", 0, 0.2, 10.0, valid_to=T0 - HOUR),
    item("north_deleted", "spa", 0, 0.25, 10.0, deleted=True),
    item("north_beyond", "spa", 0, 1.8, 10.0),  # beyond the default 1 km
]


def row(view: str, **values: Any) -> dict[str, Any]:
    spec = VIEWS[view]
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    out = {f.name: defaults[f.dtype] for f in spec.fields}
    out["as_of"] = T0 - 60
    out.update(values)
    return out


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path_factory.mktemp("kairos_nearby"), auth_required=False, feast_project=f"ar{uuid.uuid4().hex[:8]}")
    services = Services.start(settings)
    services.catalog.upsert(CATALOG)
    services.features.write("user_activity", [row(
        "user_activity", user_id="coffee_lover", category_affinity=json.dumps({"coffee": 0.9, "spa": 0.1}),
        top_category="coffee", last_lat=LAT, last_lon=LON,
    )])
    with TestClient(create_app(services=services)) as test_client:
        yield test_client
    services.close()


def nearby(client: TestClient, **params: Any) -> Any:
    query = {"lat": LAT, "lon": LON, "heading": 0, "at": AT_ISO, **params}
    return client.get("/v1/nearby", params={k: v for k, v in query.items() if v is not None})


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {i["item_id"] for i in response.json()["items"]}


def test_pure_geometry() -> None:
    assert relative_bearing(10, 350) == pytest.approx(20)
    assert relative_bearing(350, 10) == pytest.approx(-20)
    assert relative_bearing(180, 0) == pytest.approx(-180)
    assert relative_bearing(90, 90) == 0
    assert in_view(30, 60) and not in_view(30.5, 60) and in_view(-180, 360)


def test_only_items_inside_the_field_of_view(client: TestClient) -> None:
    # Facing north with a 60° view: -30..+30 degrees.
    assert ids(nearby(client)) == {"north_spa", "north_far_spa", "nne_cafe", "nnw_cafe", "here_kiosk"}
    assert ids(nearby(client, heading=90)) == {"east_gym", "here_kiosk"}
    assert ids(nearby(client, heading=180, fov=10)) == {"south_bar", "here_kiosk"}
    # A narrow view excludes what is 20° off centre.
    assert ids(nearby(client, fov=30)) == {"north_spa", "north_far_spa", "nnw_cafe", "here_kiosk"}
    everything = {"north_spa", "north_far_spa", "nne_cafe", "east_gym", "south_bar", "west_shop", "nnw_cafe",
                  "here_kiosk"}
    assert ids(nearby(client, fov=360)) == everything
    assert ids(nearby(client, fov=360, radius_km=2)) == everything | {"north_beyond"}


def test_bearings_distances_and_screen_position(client: TestClient) -> None:
    body = nearby(client, heading=350).json()
    items = {i["item_id"]: i for i in body["items"]}
    cafe = items["nne_cafe"]  # bearing ~20°, camera at 350°: 30° to the right, the right edge
    assert cafe["bearing_deg"] == pytest.approx(bearing_deg(LAT, LON, CATALOG[2].lat, CATALOG[2].lon), abs=0.01)
    assert cafe["relative_bearing_deg"] == pytest.approx(30.0, abs=0.2)
    assert cafe["screen_x"] == pytest.approx(1.0, abs=0.01)
    assert cafe["distance_km"] == pytest.approx(0.2, abs=0.005)
    nnw = items["nnw_cafe"]
    assert nnw["relative_bearing_deg"] == pytest.approx(0.0, abs=0.2) and nnw["screen_x"] == pytest.approx(0, abs=0.01)
    spa = items["north_spa"]
    assert spa["relative_bearing_deg"] == pytest.approx(10.0, abs=0.2)
    assert spa["screen_x"] == pytest.approx(10 / 30, abs=0.01)
    assert items["here_kiosk"]["relative_bearing_deg"] == 0.0
    for i in body["items"]:
        assert -180 <= i["relative_bearing_deg"] <= 180 and 0 <= i["bearing_deg"] < 360
    assert body["heading"] == 350 and body["fov"] == 60 and body["radius_km"] == 1.0
    assert body["location"]["cell"] == cell_of(LAT, LON, 8)


def test_heading_360_is_north(client: TestClient) -> None:
    assert ids(nearby(client, heading=360)) == ids(nearby(client, heading=0))
    assert nearby(client, heading=360).json()["heading"] == 0


def test_ranked_like_suggestions(client: TestClient) -> None:
    body = nearby(client, fov=360).json()
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    visible = {i["item_id"] for i in body["items"]}
    candidates = [Candidate.from_catalog(i) for i in CATALOG if i.item_id in visible]
    context = RankContext.build(LAT, LON, AT, candidates, radius_km=1.0)
    from online.transparent_ranker import TransparentRanker

    expected = TransparentRanker().rank(context, candidates)
    assert [i["item_id"] for i in body["items"]] == [s.item.item_id for s in expected]
    first = body["items"][0]
    assert first["reason"] and set(first["score_parts"]) >= {"interest", "distance", "timing", "discount"}


def test_user_taste_reorders_what_is_in_view(client: TestClient) -> None:
    anonymous = [i["item_id"] for i in nearby(client).json()["items"]]
    personal = nearby(client, user_id="coffee_lover").json()
    ranked = [i["item_id"] for i in personal["items"]]
    assert set(ranked) == set(anonymous)
    coffee_first = [i for i in ranked if i.endswith("cafe") or i == "here_kiosk"]
    assert ranked[: len(coffee_first)] == coffee_first  # every coffee place before any spa
    assert personal["user_id"] == "coffee_lover"
    # An unknown user is ranked at cold start, not refused.
    assert nearby(client, user_id="stranger").status_code == 200


def test_limit(client: TestClient) -> None:
    assert len(nearby(client, fov=360, limit=3).json()["items"]) == 3


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"heading": None}, "heading: is required"),
        ({"heading": -1}, "heading: must be greater than or equal to 0"),
        ({"heading": 361}, "heading: must be less than or equal to 360"),
        ({"heading": "nan"}, "heading:"),
        ({"heading": "east"}, "heading: must be a valid number"),
        ({"fov": 0}, "fov: must be greater than 0"),
        ({"fov": 400}, "fov: must be less than or equal to 360"),
        ({"fov": "inf"}, "fov:"),
        ({"radius_km": 0}, "radius_km: must be greater than 0"),
        ({"radius_km": 6}, "radius_km: must be less than or equal to 5"),
        ({"lat": None}, "lat: is required"),
        ({"lat": 91}, "lat: must be between -90 and 90"),
        ({"lon": -181}, "lon: must be between -180 and 180"),
        ({"limit": 0}, "limit: must be greater than or equal to 1"),
        ({"user_id": "bad id!"}, "user_id: must match"),
        ({"at": "tomorrow"}, "at: must be an ISO-8601 time"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, params: dict[str, Any], fragment: str) -> None:
    response = nearby(client, **params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == 422
    assert fragment in body["error"]["message"], body["error"]["message"]


def test_catalog_outage_degrades_instead_of_failing(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    services = client.app.state.services

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("catalog down")

    monkeypatch.setattr(services.catalog.catalog, "near", down)
    response = nearby(client)
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is True
    # Served from the items the API saw before the outage.
    assert {"north_spa", "nne_cafe"} <= {i["item_id"] for i in body["items"]}
