"""The HTTP API end to end: real stores under a temporary home, Feast rows written as the flow would."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.geo import cell_of
from kairos.stores.catalog import CatalogItem
from online.transparent_ranker import PARTS
from serving.app import create_app
from serving.deps import Services
from tests.api_errors import assert_error

AT = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
AT_ISO = "2026-05-01T18:00:00Z"
T0 = AT.timestamp()
HOUR = 3600.0
# Times Square; 1 km is about 0.009 degrees of latitude.
LAT, LON = 40.7580, -73.9855
KM_LAT = 1 / 111.2
RES = 8


def item(
    item_id: str,
    category: str,
    km_north: float,
    price: float | None,
    original: float | None = None,
    *,
    valid_from: float | None = T0 - HOUR,
    valid_to: float | None = T0 + 2 * HOUR,
    deleted: bool = False,
    kind: str = "offer",
) -> CatalogItem:
    lat = LAT + km_north * KM_LAT
    return CatalogItem(
        item_id=item_id,
        business_id=f"biz-{item_id}",
        kind=kind,
        category=category,
        title=f"{item_id} title",
        text=None,
        lat=lat,
        lon=LON,
        cell=cell_of(lat, LON, RES),
        price=price,
        original_price=original,
        currency="USD",
        valid_from=valid_from,
        valid_to=valid_to,
        deleted=deleted,
        updated_ts=T0 - 2 * HOUR,
    )


CATALOG = [
    item("spa_zen", "spa", 0.4, 31.0, 50.0),  # close, cheap, 38 % off
    item("spa_four", "spa", 1.2, 45.0),
    item("spa_mid", "spa", 1.0, 60.0),
    item("spa_lux", "spa", 2.5, 120.0),  # far and dear
    item("coffee_cup", "coffee", 0.2, 4.0, 5.0),
    item("coffee_bean", "coffee", 0.5, 3.5),
    item("concert", "culture", 1.0, 25.0, kind="event", valid_from=T0 + 2 * HOUR, valid_to=T0 + 4 * HOUR),
    # Must never appear:
    item("spa_expired", "spa", 0.1, 10.0, 40.0, valid_from=T0 - 5 * HOUR, valid_to=T0 - HOUR),
    item("spa_deleted", "spa", 0.1, 10.0, 40.0, deleted=True),
    item("spa_far", "spa", 20.0, 5.0, 40.0),
    item("sport_arena", "sport", 7.0, 30.0),  # the only sport anywhere: beyond the default radius
    item(
        "concert_tomorrow",
        "culture",
        0.3,
        25.0,
        kind="event",
        valid_from=T0 + 20 * HOUR,
        valid_to=T0 + 23 * HOUR,
    ),
]
NEVER = {"spa_expired", "spa_deleted", "spa_far", "concert_tomorrow"}
ZEN_CELL_MEDIAN = 55.0


def row(view: str, **values: Any) -> dict[str, Any]:
    """A complete row of a view: every field of the spec, defaults for the ones a test does not care about."""
    spec = VIEWS[view]
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    out = {f.name: defaults[f.dtype] for f in spec.fields}
    out["as_of"] = T0 - 60
    out.update(values)
    return out


USERS = {
    "spa_lover": row(
        "user_activity",
        user_id="spa_lover",
        category_affinity=json.dumps({"spa": 0.7, "coffee": 0.2, "food": 0.1}),
        top_category="spa",
        discount_sensitivity=0.8,
        last_lat=LAT,
        last_lon=LON,
        last_cell=cell_of(LAT, LON, RES),
        home_cell=cell_of(LAT, LON, 6),
        travelling=False,
    ),
    # Home is Mumbai; the flow's flag says travelling; no behaviour yet (empty affinity).
    "traveller": row(
        "user_activity",
        user_id="traveller",
        category_affinity="{}",
        last_lat=LAT,
        last_lon=LON,
        home_cell=cell_of(19.0760, 72.8777, 6),
        travelling=True,
    ),
    "sport_fan": row(
        "user_activity",
        user_id="sport_fan",
        category_affinity=json.dumps({"sport": 0.8, "coffee": 0.2}),
        top_category="sport",
        last_lat=LAT,
        last_lon=LON,
        home_cell=cell_of(LAT, LON, 6),
    ),
    # Searched, never sent a location.
    "nowhere": row(
        "user_activity",
        user_id="nowhere",
        category_affinity='{"food": 1}',
        last_lat=math.nan,
        last_lon=math.nan,
        home_cell="",
    ),
}


@dataclass
class Env:
    services: Services
    client: TestClient
    app: Any


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = Settings(
        home=tmp_path_factory.mktemp("kairos_api"), auth_required=False, feast_project=f"api{uuid.uuid4().hex[:8]}"
    )
    services = Services.start(settings)  # opens Feast once for the whole module
    services.catalog.upsert(CATALOG)
    services.features.write("user_activity", list(USERS.values()))
    zen = next(i for i in CATALOG if i.item_id == "spa_zen")
    services.features.write(
        "cell_supply",
        [
            row(
                "cell_supply",
                cell=zen.cell,
                category="spa",
                active_items=3,
                median_price=ZEN_CELL_MEDIAN,
                p25_price=40.0,
            ),
        ],
    )
    services.features.write(
        "item_stats",
        [
            row("item_stats", item_id="coffee_cup", view_count_24h=200, click_count_24h=90, ctr_24h=0.45),
        ],
    )
    app = create_app(services=services)
    with TestClient(app) as client:
        yield Env(services, client, app)
    services.close()


def suggestions(env: Env, user_id: str = "spa_lover", **params: Any) -> Any:
    query = {"lat": LAT, "lon": LON, "at": AT_ISO, **params}
    return env.client.get(
        f"/v1/users/{user_id}/suggestions", params={k: v for k, v in query.items() if v is not None}
    )


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["item_id"]: i for i in body["items"]}


# -- health ----------------------------------------------------------------------------------------


def test_healthz_and_readyz(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    assert env.client.get("/readyz").json() == {"status": "ready"}


# -- GET suggestions ------------------------------------------------------------------------------


def test_spa_lover_gets_the_close_cheap_discounted_spa_first(env: Env) -> None:
    response = suggestions(env, limit=20)
    assert response.status_code == 200, response.text
    body = response.json()
    ids = [i["item_id"] for i in body["items"]]
    assert ids[0] == "spa_zen"
    assert ids.index("spa_mid") < ids.index("spa_lux")
    assert not NEVER & set(ids)
    assert set(ids) == {i.item_id for i in CATALOG} - NEVER - {"sport_arena"}  # 7 km: beyond 3 km
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_response_shape_and_score_parts(env: Env) -> None:
    body = suggestions(env).json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert body["user_id"] == "spa_lover"
    assert datetime.fromisoformat(body["at"]) == AT
    assert body["location"] == {"lat": LAT, "lon": LON, "cell": cell_of(LAT, LON, RES)}
    assert body["travelling"] is False and body["degraded"] is False and body["cold_start"] is False
    zen = by_id(body)["spa_zen"]
    assert set(zen) >= {
        "item_id",
        "title",
        "kind",
        "category",
        "business_id",
        "price",
        "original_price",
        "discount",
        "currency",
        "lat",
        "lon",
        "distance_km",
        "travel_minutes",
        "valid_from",
        "valid_to",
        "score",
        "score_parts",
        "reason",
    }
    assert set(zen["score_parts"]) == set(PARTS)
    assert zen["discount"] == pytest.approx(0.38)
    assert zen["distance_km"] == pytest.approx(0.4, abs=0.01)
    assert datetime.fromisoformat(zen["valid_to"]) == AT + timedelta(hours=2)
    assert zen["score"] == pytest.approx(sum(zen["score_contributions"].values()), abs=1e-3)
    # The area price comes from the cell_supply row of the item's cell, not from the candidates.
    assert zen["score_parts"]["price_vs_area"] == pytest.approx(
        (ZEN_CELL_MEDIAN - 31.0) / ZEN_CELL_MEDIAN, abs=1e-4
    )
    assert zen["score_parts"]["interest"] == pytest.approx(1.0)  # spa is this user's favourite
    # item_stats engagement reaches the ranking.
    assert by_id(body)["coffee_cup"]["score_parts"]["popularity"] > 0.8


def test_reasons_compare_with_competitors(env: Env) -> None:
    items = by_id(suggestions(env, limit=20).json())
    assert items["spa_zen"]["reason"].startswith("38 % off spa 0.4 km away (5 min walk), ends in 2 h")
    assert items["spa_zen"]["reason"].endswith("; cheapest of 4 spas open within 3 km")
    assert items["spa_four"]["reason"].endswith("; 2nd cheapest of 4 spas open within 3 km")
    assert items["spa_lux"]["reason"].endswith("; most expensive of 4 spas open within 3 km")
    assert items["coffee_bean"]["reason"].endswith("; cheaper of 2 coffee places open within 3 km")
    assert items["concert"]["reason"] == "culture 1.0 km away (13 min walk), starts in 2 h"


def test_radius_and_limit(env: Env) -> None:
    ids = {i["item_id"] for i in suggestions(env, radius_km=0.6).json()["items"]}
    assert ids == {"spa_zen", "coffee_cup", "coffee_bean"}
    assert len(suggestions(env, limit=2).json()["items"]) == 2
    # The far spa is found when the radius reaches it.
    assert "spa_far" in {i["item_id"] for i in suggestions(env, radius_km=25, limit=50).json()["items"]}


def test_defaults_to_the_last_known_location_and_now(env: Env) -> None:
    body = env.client.get("/v1/users/spa_lover/suggestions").json()
    assert body["location"]["lat"] == pytest.approx(LAT)
    assert abs(datetime.fromisoformat(body["at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert body["radius_km"] == 3.0


def test_travelling_user_at_cold_start(env: Env) -> None:
    body = suggestions(env, "traveller").json()
    assert body["travelling"] is True and body["cold_start"] is True
    interests = {i["score_parts"]["interest"] for i in body["items"]}
    assert len(interests) == 1  # uniform: nothing known about what they like


def test_unknown_user_is_404(env: Env) -> None:
    error = assert_error(
        suggestions(env, "ghost"), 404, "unknown user 'ghost'", "POST /v1/users/ghost/location"
    )
    assert error["message"] == "unknown user 'ghost': no events yet; POST /v1/users/ghost/location first"


def test_user_without_location_must_pass_one(env: Env) -> None:
    assert_error(env.client.get("/v1/users/nowhere/suggestions"), 422, "no location known")
    assert suggestions(env, "nowhere").status_code == 200


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"lon": None}, "lon: is required when lat is given"),
        ({"lat": None}, "lat: is required when lon is given"),
        ({"lat": 91}, "lat: must be between -90 and 90"),
        ({"lat": -90.5}, "lat: must be between -90 and 90"),
        ({"lon": 181}, "lon: must be between -180 and 180"),
        ({"lat": "nan"}, "lat: must be a finite number between -90 and 90"),
        ({"lon": "inf"}, "lon: must be a finite number between -180 and 180"),
        ({"lat": "north"}, "lat: must be a valid number"),
        ({"limit": 0}, "limit: must be greater than or equal to 1"),
        ({"limit": 51}, "limit: must be less than or equal to 50"),
        ({"limit": "ten"}, "limit: must be a valid integer"),
        ({"radius_km": 0}, "radius_km: must be greater than 0"),
        ({"radius_km": -2}, "radius_km: must be greater than 0"),
        ({"radius_km": 51}, "radius_km: must be greater than 0 and at most 50"),
        ({"radius_km": "nan"}, "radius_km: must be a finite number"),
        ({"at": "yesterday"}, "at: must be an ISO-8601 time"),
        ({"at": "1714586400"}, "at: must be an ISO-8601 time"),
        ({"at": "2026-13-01T00:00:00Z"}, "at: must be an ISO-8601 time"),
    ],
)
def test_bad_query_is_422_naming_the_field(env: Env, params: dict[str, Any], fragment: str) -> None:
    assert_error(suggestions(env, **params), 422, fragment)


@pytest.mark.parametrize("user_id", ["bad!id", "has space", "x" * 65, "semi;colon"])
def test_bad_user_id_is_422(env: Env, user_id: str) -> None:
    error = assert_error(suggestions(env, user_id), 422, "user_id: must match")
    assert error["details"][0]["field"] == "user_id"


def test_validation_errors_list_every_field(env: Env) -> None:
    error = assert_error(suggestions(env, lat=100, limit=0), 422, "lat:", "limit:")
    assert {d["field"] for d in error["details"]} == {"lat", "limit"}


def test_naive_at_is_taken_as_utc(env: Env) -> None:
    body = suggestions(env, at="2026-05-01T18:00:00").json()
    assert datetime.fromisoformat(body["at"]) == AT
    later = suggestions(env, at="2026-05-01T16:30:00-04:00").json()  # 20:30 UTC: zen closed at 20:00
    assert "spa_zen" not in by_id(later)


# -- POST location --------------------------------------------------------------------------------


def pings(env: Env) -> list[Any]:
    return env.services.event_store.read("pings", None, 10_000)


def test_post_location_appends_one_ping_and_returns_suggestions(env: Env) -> None:
    before = pings(env)
    response = env.client.post(
        "/v1/users/spa_lover/location", json={"lat": LAT, "lon": LON, "ts": AT_ISO, "accuracy_m": 12.5}
    )
    assert response.status_code == 200, response.text
    after = pings(env)
    assert len(after) == len(before) + 1
    record = after[-1]
    assert record.op == "insert"
    document = record.document
    assert set(document) == {"_id", "user_id", "lat", "lon", "ts", "source"}
    assert re.fullmatch(r"api-[0-9a-f]{32}", document["_id"])
    assert (document["user_id"], document["lat"], document["lon"], document["source"]) == (
        "spa_lover",
        LAT,
        LON,
        "api",
    )
    assert datetime.fromisoformat(document["ts"]) == AT
    body = response.json()
    assert body["event_position"] == record.position
    assert datetime.fromisoformat(body["at"]) == AT
    assert body["items"][0]["item_id"] == "spa_zen"
    assert set(body) >= {"request_id", "user_id", "at", "location", "travelling", "items", "degraded"}


def test_post_location_without_ts_uses_now(env: Env) -> None:
    response = env.client.post("/v1/users/spa_lover/location", json={"lat": LAT, "lon": LON})
    assert response.status_code == 200, response.text
    ts = datetime.fromisoformat(pings(env)[-1].document["ts"])
    assert ts.tzinfo is not None and abs(ts - datetime.now(UTC)) < timedelta(minutes=1)


def test_post_location_accepts_a_new_user_at_cold_start(env: Env) -> None:
    user_id = f"new.user:{uuid.uuid4().hex[:6]}"
    response = env.client.post(f"/v1/users/{user_id}/location", json={"lat": LAT, "lon": LON, "ts": AT_ISO})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user_id and body["cold_start"] is True and body["travelling"] is False
    assert body["items"] and not NEVER & {i["item_id"] for i in body["items"]}
    assert pings(env)[-1].document["user_id"] == user_id
    # Still unknown to GET until the flow has processed the ping.
    assert suggestions(env, user_id).status_code == 404


def test_post_location_far_from_home_is_travelling(env: Env) -> None:
    body = env.client.post(
        "/v1/users/spa_lover/location", json={"lat": 48.8566, "lon": 2.3522, "ts": AT_ISO}
    ).json()
    assert body["travelling"] is True and body["items"] == []


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"lat": LAT}, "lon: is required"),
        ({"lon": LON}, "lat: is required"),
        ({"lat": 100, "lon": LON}, "lat: must be between -90 and 90"),
        ({"lat": LAT, "lon": -200}, "lon: must be between -180 and 180"),
        ({"lat": "here", "lon": LON}, "lat: must be a valid number"),
        ({"lat": LAT, "lon": LON, "ts": "soon"}, "ts: must be an ISO-8601 time"),
        ({"lat": LAT, "lon": LON, "ts": 1714586400}, "ts: must be an ISO-8601 time"),
        ({"lat": LAT, "lon": LON, "accuracy_m": -1}, "accuracy_m: must be greater than or equal to 0"),
        ([LAT, LON], "must be a valid dictionary"),
    ],
)
def test_post_location_bad_body_is_422(env: Env, payload: Any, fragment: str) -> None:
    count = len(pings(env))
    assert_error(env.client.post("/v1/users/u1/location", json=payload), 422, fragment)
    assert len(pings(env)) == count  # nothing recorded


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"lat": NaN, "lon": 2}', "lat: must be a finite number"),
        ('{"lat": 1, "lon": Infinity}', "lon: must be a finite number"),
        ('{"lat": 1,', "body: is not valid JSON at character 10"),
        ("", "body: is required"),
    ],
)
def test_post_location_non_finite_or_broken_json_is_422(env: Env, raw: str, fragment: str) -> None:
    response = env.client.post(
        "/v1/users/u1/location", content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, fragment)


def test_post_location_bad_user_id_is_422(env: Env) -> None:
    assert_error(
        env.client.post("/v1/users/no%20spaces/location", json={"lat": LAT, "lon": LON}), 422, "user_id"
    )


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_path_and_method_are_json(env: Env) -> None:
    assert_error(env.client.get("/v1/nothing-here"), 404, "no such path")
    assert_error(env.client.delete("/v1/users/spa_lover/location"), 405, "not allowed")


class _BrokenCatalog:
    def near(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk I/O error at /secret/catalog.sqlite")


class _BrokenRanker:
    def rank(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in /secret/ranker.py")


def test_unexpected_errors_are_500_json_without_internals(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(env.services, "ranker", _BrokenRanker())
    client = TestClient(env.app, raise_server_exceptions=False)
    response = suggestions(Env(env.services, client, env.app))
    error = assert_error(response, 500, "internal error")
    assert "secret" not in response.text and "RuntimeError" not in response.text
    # The traceback is logged, under the incident id the client was given.
    incident = re.search(r"incident ([0-9a-f]{12})", error["message"]).group(1)
    logged = [r for r in caplog.records if r.name == "serving.errors" and r.exc_info]
    assert logged and incident in logged[-1].getMessage()


def test_a_failing_catalog_degrades_to_an_empty_answer_not_an_error(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(env.services, "catalog", _BrokenCatalog())
    response = suggestions(env)
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is True and body["items"] == []
    assert "secret" not in response.text


def test_optional_features_failing_degrades_instead_of_failing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = env.services.features.read

    def flaky_read(view: str, keys: list[dict[str, str]]) -> Any:
        if view != "user_activity":
            raise ConnectionError("redis down")
        return real_read(view, keys)

    monkeypatch.setattr(env.services.features, "read", flaky_read)
    # Read per request: a cached cell would (rightly) still hold features read a moment ago.
    # tests/test_serve_fast_path.py covers the same failure through the candidate cache.
    monkeypatch.setattr(env.services, "settings", env.services.settings.with_(suggest_cache_ttl_s=0))
    body = suggestions(env).json()
    assert body["degraded"] is True and body["items"][0]["item_id"] == "spa_zen"


def test_feature_store_down_degrades_to_cold_start_and_503_only_without_a_place(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(view: str, keys: list[dict[str, str]]) -> Any:
        raise ConnectionError("redis down")

    monkeypatch.setattr(env.services.features, "read", down)
    body = suggestions(env).json()
    assert body["degraded"] is True and body["cold_start"] is True and body["items"]
    # No point given and the user's last location is unreadable: nothing to suggest for.
    assert_error(env.client.get("/v1/users/spa_lover/suggestions", params={"at": AT_ISO}), 503, "lat and lon")
    response = env.client.post("/v1/users/spa_lover/location", json={"lat": LAT, "lon": LON, "ts": AT_ISO})
    assert response.status_code == 200
    assert response.json()["degraded"] is True and response.json()["cold_start"] is True


def test_openapi_documents_the_routes(env: Env) -> None:
    paths = env.client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/v1/users/{user_id}/suggestions", "/v1/users/{user_id}/location"} <= set(paths)


def test_default_radius_widens_to_reach_the_favourite_category(env) -> None:
    body = env.client.get("/v1/users/sport_fan/suggestions", params={"at": AT_ISO}).json()
    assert body["widened_for"] == "sport"
    assert body["radius_km"] == 12.0  # 3 -> 6 -> 12 km: the arena is 7 km away
    ids = [i["item_id"] for i in body["items"]]
    assert "sport_arena" in ids and "spa_far" not in ids
    # Nearby items still count: the arena does not push out everything close by.
    assert "coffee_cup" in ids


def test_explicit_radius_is_never_widened(env) -> None:
    body = env.client.get(
        "/v1/users/sport_fan/suggestions", params={"at": AT_ISO, "radius_km": 3}
    ).json()
    assert body["widened_for"] is None and body["radius_km"] == 3.0
    assert "sport_arena" not in [i["item_id"] for i in body["items"]]


def test_no_widening_when_the_favourite_is_already_in_reach(env) -> None:
    body = env.client.get("/v1/users/spa_lover/suggestions", params={"at": AT_ISO}).json()
    assert body["widened_for"] is None and body["radius_km"] == 3.0


def test_moderation_hides_items_in_review_and_suspended_businesses(env: Env) -> None:
    from kairos.stores.moderation_store import open_moderation_store
    from serving.suggestions import moderation_filter

    store = open_moderation_store(env.services.settings)
    store.set_item_status("spa_zen", "biz-spa_zen", "review", reason="3 reports", ts=T0)
    store.suspend("business", "biz-coffee_cup", "3 strikes", ts=T0)
    moderation_filter(env.services)._at = float("-inf")  # do not wait for the cache to expire
    try:
        ids = {i["item_id"] for i in suggestions(env, limit=20).json()["items"]}
        assert "spa_zen" not in ids and "coffee_cup" not in ids
        assert "spa_four" in ids and "coffee_bean" in ids
    finally:
        store.set_item_status("spa_zen", "biz-spa_zen", "live", reason=None, ts=T0)
        store.reinstate("business", "biz-coffee_cup")
        moderation_filter(env.services)._at = float("-inf")
