"""/v1/features end to end: real Feast online store and Parquet offline log under a temporary home,
rows written as the flow writes them, and every error path (404 unknown view or key, 422 bad key
or parameter, 503 when the online store is down with nothing known)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.geo import cell_of
from kairos.stores.offline_log import OfflineLog
from serving.app import create_app
from serving.deps import Services
from tests.api_errors import assert_error

#: Reset when the module's app is built: ages are measured against the wall clock, and in a full run
#: the fixture starts minutes after this module is imported.
NOW = time.time()
HOUR, DAY = 3600.0, 86400.0
CELL_A = cell_of(40.758, -73.9855, 8)
CELL_B = cell_of(40.768, -73.9855, 8)


def row(view: str, **values: Any) -> dict[str, Any]:
    spec = VIEWS[view]
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    out = {f.name: defaults[f.dtype] for f in spec.fields}
    out.update(values)
    return out


@dataclass
class Env:
    services: Services
    client: TestClient


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = Settings(home=tmp_path_factory.mktemp("features_api"), feast_project=f"fv{uuid.uuid4().hex[:8]}",
                        auth_required=False, ranker="transparent")
    services = Services.start(settings)
    global NOW
    NOW = time.time()
    services.features.write("user_activity", [
        row("user_activity", user_id="ana", as_of=NOW - 30, location_count_24h=7, top_category="spa"),
    ])
    services.features.write("item_stats", [row("item_stats", item_id="latte", as_of=NOW - HOUR, price=4.5)])
    services.features.write("cell_demand", [row("cell_demand", cell=CELL_A, category="spa", as_of=NOW - 60,
                                                view_count_24h=12)])
    log = OfflineLog(settings.offline_dir)
    # ana's history: 3 rows over two weeks; the last two share an event time (a late fold: 5 -> 6).
    log.write_rows("user_activity", [
        row("user_activity", user_id="ana", as_of=NOW - 10 * DAY, location_count_24h=1, top_category="food"),
        row("user_activity", user_id="ana", as_of=NOW - 2 * DAY, location_count_24h=5, top_category="spa"),
    ])
    log.write_rows("user_activity", [
        row("user_activity", user_id="ana", as_of=NOW - 2 * DAY, location_count_24h=6, top_category="spa"),
        row("user_activity", user_id="bob", as_of=NOW - DAY, location_count_24h=2, top_category="food"),
    ])
    log.write_rows("item_stats", [row("item_stats", item_id=f"i{k}", as_of=NOW - k * HOUR, price=float(k),
                                      category="spa" if k % 2 else "food") for k in range(30)])
    log.write_rows("cell_demand", [
        row("cell_demand", cell=CELL_A, category="spa", as_of=NOW - 60, view_count_24h=12),
        row("cell_demand", cell=CELL_A, category="food", as_of=NOW - 60, view_count_24h=3),
        row("cell_demand", cell=CELL_B, category="spa", as_of=NOW - 60, view_count_24h=4),
    ])
    with TestClient(create_app(services=services)) as client:
        yield Env(services, client)
    services.close()


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def test_catalog_lists_the_views_as_registered_in_feast(env: Env) -> None:
    body = env.client.get("/v1/features").json()
    views = {v["name"]: v for v in body["views"]}
    assert list(views) == list(VIEWS)
    demand = views["cell_demand"]
    assert demand["key_format"] == "cell:category" and demand["freshness_objective_s"] == 120
    assert [w["name"] for w in demand["windows"]] == ["15m", "1h", "24h"]
    assert demand["entities"][0]["description"].startswith("An H3 cell")
    assert demand["feast"]["registered"] is True and demand["feast"]["push_source"] == "cell_demand_push"
    assert "spa" in body["categories"]
    one = env.client.get("/v1/features/item_stats").json()
    assert one["name"] == "item_stats" and len(one["fields"]) == len(VIEWS["item_stats"].fields)
    assert_error(env.client.get("/v1/features/nope"), 404, "unknown feature view 'nope'", "user_activity")


def test_lookup_returns_live_values_with_event_time_and_age(env: Env) -> None:
    body = env.client.get("/v1/features/user_activity/ana").json()
    assert body["key"] == {"user_id": "ana"} and body["degraded"] is False
    assert 29 <= body["age_s"] < 120 and body["fresh"] is True
    values = {v["name"]: v for v in body["values"]}
    assert values["location_count_24h"]["value"] == 7 and values["top_category"]["value"] == "spa"
    assert values["location_count_24h"]["age_s"] == body["age_s"]
    assert values["location_count_24h"]["event_time"] == body["event_time"]
    stale = env.client.get("/v1/features/item_stats/latte").json()
    assert stale["fresh"] is False and stale["age_s"] >= HOUR
    cell = env.client.get(f"/v1/features/cell_demand/{CELL_A}:spa").json()
    assert {v["name"]: v["value"] for v in cell["values"]}["view_count_24h"] == 12


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("/v1/features/user_activity/nobody", 404, "no user_activity row for user_id=nobody"),
    ("/v1/features/nope/ana", 404, "unknown feature view"),
    (f"/v1/features/cell_demand/{CELL_B}:food", 404, "no cell_demand row"),
    (f"/v1/features/cell_demand/{CELL_A}", 422, "cell:category"),
    ("/v1/features/cell_demand/notacell:spa", 422, "not an H3 cell"),
    (f"/v1/features/cell_demand/{CELL_A}:casino", 422, "category 'casino' is not one of"),
    (f"/v1/features/cell_demand/{cell_of(40.758, -73.9855, 7)}:spa", 422, "resolution 7"),
    ("/v1/features/user_activity/has%20space", 422, "must match"),
    ("/v1/features/user_activity/nobody/history", 404, "no user_activity rows for user_id=nobody"),
    ("/v1/features/user_activity/has%20space/history", 422, "must match"),
    ("/v1/features/user_activity/ana/history?at=0001-01-01T00:00:00Z", 422, "at: must be between 1970"),
    ("/v1/features/item_stats/stats?at=9999-12-31T00:00:00Z&days=90", 422, "at: must be between"),
    ("/v1/features/cell_demand/map?at=1900-01-01T00:00:00Z", 422, "at: must be between"),
])
def test_lookup_history_stats_map_errors(env: Env, path: str, status: int, fragment: str) -> None:
    assert_error(env.client.get(path), status, fragment)


def test_lookup_while_the_online_store_is_down(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.client.get("/v1/features/user_activity/ana")  # known before the outage
    features = env.services.features

    class Down:
        """An online store whose every read fails (whichever read path the wrapper takes)."""

        def read(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("store down")

        read_fast = read

    monkeypatch.setattr(features, "features", Down())
    monkeypatch.setattr(features.breaker, "open_until", 0.0)
    body = env.client.get("/v1/features/user_activity/ana").json()
    assert body["degraded"] is True and {v["name"]: v["value"] for v in body["values"]}["location_count_24h"] == 7
    assert_error(env.client.get("/v1/features/user_activity/never-read"), 503, "online store is unavailable")
    monkeypatch.undo()
    features.breaker.open_until = 0.0


def test_history_is_point_in_time(env: Env) -> None:
    url = "/v1/features/user_activity/ana/history"
    body = env.client.get(url).json()
    # Three rows written, two with the same event time: the later write replaced the earlier.
    assert [r["location_count_24h"] for r in body["rows"]] == [1, 6]
    assert body["rows"][0]["event_time"] < body["rows"][1]["event_time"]
    at = env.client.get(url, params={"at": iso(NOW - 5 * DAY)}).json()["at"]
    assert at["row"]["location_count_24h"] == 1 and at["row"]["top_category"] == "food"
    assert env.client.get(url, params={"at": iso(NOW - 30 * DAY)}).json()["at"]["row"] is None
    window = env.client.get(url, params={"start": iso(NOW - 5 * DAY), "end": iso(NOW)}).json()
    assert [r["location_count_24h"] for r in window["rows"]] == [6]
    assert window["in_force_at_start"]["location_count_24h"] == 1
    empty = env.client.get(url, params={"start": iso(NOW - 40 * DAY), "end": iso(NOW - 30 * DAY)}).json()
    assert empty["rows"] == [] and empty["in_force_at_start"] is None
    assert_error(env.client.get(url, params={"start": iso(NOW), "end": iso(NOW - DAY)}), 422, "start")
    assert_error(env.client.get(url, params={"at": "yesterday"}), 422, "at: must be an ISO-8601 time")
    assert_error(env.client.get(url, params={"limit": 0}), 422, "limit")


def test_stats_distributions_and_drift(env: Env) -> None:
    body = env.client.get("/v1/features/item_stats/stats").json()
    assert body["entities_current"] == 30 and body["entities_previous"] == 0
    fields = {f["name"]: f for f in body["fields"]}
    price = fields["price"]
    assert price["count"] == 30 and price["null_rate"] == 0.0
    assert sum(b["count"] for b in price["histogram"]) == 30 and price["summary"]["max"] == 29.0
    assert price["drift"]["level"] == "unknown" and "0 in the 7 days before" in price["drift"]["words"]
    assert fields["category"]["top_values"] == [{"value": "food", "count": 15}, {"value": "spa", "count": 15}]
    users = env.client.get("/v1/features/user_activity/stats", params={"days": 7}).json()
    assert users["entities_current"] == 2 and users["entities_previous"] == 1  # ana 10 days ago
    older = env.client.get("/v1/features/user_activity/stats", params={"at": iso(NOW - 9 * DAY)}).json()
    assert older["entities_current"] == 1 and older["entities_previous"] == 0


def test_stats_on_a_view_without_rows_is_empty_not_an_error(env: Env) -> None:
    body = env.client.get("/v1/features/cell_supply/stats").json()
    assert body["entities_current"] == 0 and body["reference_time"] is None and body["note"]
    assert all(f["count"] == 0 for f in body["fields"])
    assert_error(env.client.get("/v1/features/cell_supply/stats", params={"days": 0}), 422, "days")
    assert_error(env.client.get("/v1/features/nope/stats"), 404, "unknown feature view")


def test_map_of_cell_demand(env: Env) -> None:
    body = env.client.get("/v1/features/cell_demand/map").json()
    values = {c["cell"]: c["value"] for c in body["cells"]}
    assert values == {CELL_A: 15.0, CELL_B: 4.0} and body["combined_over_categories"] == "sum"
    assert all(len(c["boundary"]) == 6 for c in body["cells"]) and body["areas"][0]["cells"] == 2
    spa = env.client.get("/v1/features/cell_demand/map", params={"category": "spa"}).json()
    assert {c["cell"]: c["value"] for c in spa["cells"]} == {CELL_A: 12.0, CELL_B: 4.0}
    assert env.client.get("/v1/features/cell_supply/map").json()["cells"] == []
    assert_error(env.client.get("/v1/features/user_activity/map"), 422, "not keyed by cell")
    assert_error(env.client.get("/v1/features/cell_demand/map", params={"field": "top"}), 422, "field")
    assert_error(env.client.get("/v1/features/cell_demand/map", params={"category": "casino"}), 422, "category")
    assert_error(env.client.get("/v1/features/cell_demand/map", params={"area": 3}), 422, "area")


def test_keys_lists_recent_keys(env: Env) -> None:
    body = env.client.get("/v1/features/user_activity/keys").json()
    assert [k["key"] for k in body["keys"]] == ["bob", "ana"]  # bob updated last
    assert [k["key"] for k in env.client.get("/v1/features/item_stats/keys", params={"limit": 3}).json()["keys"]] \
        == ["i0", "i1", "i2"]
    assert env.client.get("/v1/features/user_activity/keys", params={"prefix": "a"}).json()["keys"][0]["key"] == "ana"
    demand = env.client.get("/v1/features/cell_demand/keys").json()["keys"]
    assert {k["key"] for k in demand} == {f"{CELL_A}:spa", f"{CELL_A}:food", f"{CELL_B}:spa"}


def test_openapi_documents_the_routes(env: Env) -> None:
    paths = env.client.get("/openapi.json").json()["paths"]
    for path in ("/v1/features", "/v1/features/{view}/{key}", "/v1/features/{view}/{key}/history",
                 "/v1/features/{view}/stats", "/v1/features/{view}/map"):
        assert path in paths
    assert "/ui" not in paths
