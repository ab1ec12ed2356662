"""A suggestions or search response's body ``request_id`` is its ``X-Request-ID`` when the server
made the id up, and the impressions it logs carry that same id; a client's own id is echoed in the
header but never reused in the body (it may repeat, and the body's id keys feedback)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.stores.catalog import CatalogItem
from serving.app import create_app
from serving.deps import Services

LAT, LON = 40.7580, -73.9855
T0 = 1_777_000_000.0
AT = "2026-04-24T12:00:00+00:00"


def user_row(user_id: str) -> dict[str, Any]:
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    row = {f.name: defaults[f.dtype] for f in VIEWS["user_activity"].fields}
    row.update(user_id=user_id, category_affinity='{"spa": 1}', top_category="spa", last_lat=LAT, last_lon=LON,
               as_of=T0 - 60)
    return row


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Services]]:
    settings = Settings(home=tmp_path_factory.mktemp("kzF_request_ids"), auth_required=False, ranker="transparent",
                        feast_project=f"r{uuid.uuid4().hex[:8]}")
    services = Services.start(settings)
    services.catalog.upsert([
        CatalogItem(item_id=f"spa{n}", business_id="b1", kind="offer", category="spa", title=f"Spa {n} massage",
                    text="deep tissue massage", lat=LAT + n * 0.001, lon=LON, cell=None, price=30.0 + n,
                    original_price=None, currency="USD", valid_from=None, valid_to=None, deleted=False,
                    updated_ts=T0)
        for n in range(3)
    ])
    services.features.write("user_activity", [user_row("reader")])
    try:
        with TestClient(create_app(services=services)) as test_client:
            yield test_client, services
    finally:
        services.close()


def calls(client: TestClient) -> dict[str, Any]:
    """One call of each route whose body has a request_id, as functions of extra headers."""
    return {
        "suggestions": lambda h: client.get("/v1/users/reader/suggestions",
                                            params={"lat": LAT, "lon": LON, "at": AT}, headers=h),
        "location": lambda h: client.post("/v1/users/reader/location", json={"lat": LAT, "lon": LON, "ts": AT},
                                          headers=h),
        "search": lambda h: client.get("/v1/search", params={"q": "massage", "lat": LAT, "lon": LON}, headers=h),
        "voice": lambda h: client.post("/v1/search/voice", json={"transcript": "a massage", "lat": LAT, "lon": LON},
                                       headers=h),
    }


@pytest.mark.parametrize("route", ["suggestions", "location", "search", "voice"])
def test_body_request_id_is_the_response_header(client, route: str) -> None:
    test_client, _ = client
    call = calls(test_client)[route]
    first, second = call({}), call({"X-Request-ID": "bad id with spaces"})  # a malformed id is replaced
    for response in (first, second):
        assert response.status_code == 200, response.text
        assert response.json()["items"], "the route must have shown something"
        assert response.json()["request_id"] == response.headers["x-request-id"]
    assert first.json()["request_id"] != second.json()["request_id"]


@pytest.mark.parametrize("route", ["suggestions", "search"])
def test_a_client_id_is_echoed_but_not_reused_in_the_body(client, route: str) -> None:
    test_client, _ = client
    call = calls(test_client)[route]
    responses = [call({"X-Request-ID": "app-retry-7"}) for _ in range(2)]
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "app-retry-7"
        assert response.json()["request_id"] != "app-retry-7"
    # The same client id twice: two responses, two distinct keys for their impressions.
    assert responses[0].json()["request_id"] != responses[1].json()["request_id"]


def test_impressions_carry_the_header_id(client) -> None:
    test_client, services = client
    response = calls(test_client)["suggestions"]({})
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while True:  # the impression writer is a background thread
        logged = [r for r in services.event_store.read("feedback", None, 100_000)
                  if r.document.get("request_id") == request_id]
        if len(logged) == len(response.json()["items"]):
            break
        assert time.monotonic() < deadline, f"{len(logged)} impressions logged for {request_id}"
        time.sleep(0.05)
    assert {r.document["item_id"] for r in logged} == {i["item_id"] for i in response.json()["items"]}
