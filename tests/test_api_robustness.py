"""Hostile input gets a clear 4xx naming what is wrong, never a 500: NaN and infinite coordinates,
huge radii, odd unicode, oversized query strings, malformed JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from serving.app import create_app
from tests.test_auth import light_services


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    services = light_services(Settings(home=tmp_path_factory.mktemp("kairos_robust"), auth_required=False,
                                       ranker="transparent"))
    with TestClient(create_app(services=services), raise_server_exceptions=False) as test_client:
        yield test_client
    services.close()


def error(res) -> str:
    assert 400 <= res.status_code < 500, (res.status_code, res.text)
    body = res.json()["error"]
    assert body["status"] == res.status_code
    return body["message"]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
@pytest.mark.parametrize("path", ["/v1/users/u1/suggestions", "/v1/nearby", "/v1/search"])
def test_non_finite_coordinates_are_refused(client: TestClient, path: str, value: str) -> None:
    res = client.get(path, params={"lat": value, "lon": "-73.98", "q": "spa"})
    assert res.status_code == 422
    assert "lat: must be a finite number" in error(res)


def test_non_finite_coordinates_in_json_bodies(client: TestClient) -> None:
    # JSON has no NaN, but Python's encoder writes it: the server must refuse it, not store it.
    res = client.post("/v1/users/u1/location", content=b'{"lat": NaN, "lon": Infinity}',
                      headers={"Content-Type": "application/json"})
    message = error(res)
    assert res.status_code == 422 and "lat" in message and "finite" in message


@pytest.mark.parametrize("radius", ["1e308", "100000", "-1", "0"])
def test_huge_or_negative_radius_is_refused(client: TestClient, radius: str) -> None:
    res = client.get("/v1/users/u1/suggestions", params={"lat": "40.7", "lon": "-73.9", "radius_km": radius})
    assert res.status_code == 422 and "radius_km" in error(res)


def test_unicode_everywhere_is_handled(client: TestClient) -> None:
    for q in ("spa 💆‍♀️ ce soir", "スパ 渋谷", "\u202etxet desrever", "ä" * 50):
        res = client.get("/v1/search", params={"q": q, "lat": "40.7", "lon": "-73.9"})
        assert res.status_code in (200, 422), res.text  # answered, or refused with a reason
        if res.status_code == 422:
            error(res)
    res = client.get("/v1/users/%F0%9F%92%A9/suggestions", params={"lat": "40.7", "lon": "-73.9"})
    assert res.status_code == 422 and "user_id" in error(res)
    res = client.get("/v1/search", params={"q": "spa\x00drop", "lat": "40.7", "lon": "-73.9"})
    assert res.status_code in (200, 422)


def raw_get(app: Any, path: str, query: bytes) -> tuple[int, dict[str, Any]]:
    """A GET straight through ASGI: HTTP clients refuse URLs this long before sending them."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "", "headers": [],
             "server": ("test", 80), "client": ("test", 1)}
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def test_oversized_query_string_is_refused(client: TestClient) -> None:
    query = b"lat=40.7&lon=-73.9&q=" + b"spa+" * 25_000  # a 100 kB q
    status, body = raw_get(client.app, "/v1/search", query)
    assert status == 422, body
    assert body["error"]["message"].startswith("q: ")


@pytest.mark.parametrize("body", [b"{", b'{"lat": 40.7,}', b"\xff\xfe", b"[1, 2]", b"null", b'"text"'])
def test_bad_json_bodies_are_refused(client: TestClient, body: bytes) -> None:
    for path in ("/v1/users/u1/location", "/v1/feedback", "/v1/reports"):
        res = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert res.status_code == 422, (path, body, res.text)
        assert error(res)


def test_wrong_methods_and_unknown_paths_are_clear(client: TestClient) -> None:
    assert "no such path" in error(client.get("/v1/nothing-here"))
    res = client.delete("/v1/search")
    assert res.status_code == 405 and "not allowed" in error(res)
