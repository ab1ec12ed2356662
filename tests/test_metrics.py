"""Observability: /metrics (per-route latency, events, freshness, dead letters, model versions),
/readyz naming the store that fails, request ids and JSON access logs."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.features import VIEWS
from kairos.schema import DeadLetter
from kairos.stores.deadletters import SqliteDeadLetters
from online.model_state import open_model_state
from serving.app import create_app
from serving.auth import get_authenticator
from serving.deps import Services
from serving.metrics import get_sampler, reason_class
from serving.request_log import JsonFormatter


def feature_row(view: str, **values: Any) -> dict[str, Any]:
    defaults = {"int": 0, "float": 0.0, "str": "", "bool": False}
    out = {f.name: defaults[f.dtype] for f in VIEWS[view].fields}
    out.update(values)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Services]]:
    settings = Settings(home=tmp_path_factory.mktemp("kairos_metrics"), feast_project=f"m{uuid.uuid4().hex[:8]}",
                        auth_required=False, metrics_sample_s=0.0, ranker="transparent")
    services = Services.start(settings)
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        yield client, services
    services.close()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


def test_latency_is_per_route_template_not_per_path(env) -> None:
    client, _ = env
    for user in ("alice", "bob", "carol"):
        client.get(f"/v1/users/{user}/suggestions", params={"lat": "40.7", "lon": "-73.9"})
    client.get("/v1/users/alice/suggestions", params={"lat": "95", "lon": "0"})  # 422
    text = client.get("/metrics").text
    route = "/v1/users/{user_id}/suggestions"
    assert metric(text, "kairos_http_request_duration_seconds_count", route=route, method="GET") == 4
    assert metric(text, "kairos_http_requests_total", route=route, method="GET", status="422") == 1
    assert metric(text, "kairos_http_request_duration_seconds_bucket", route=route, method="GET", le="10.0") == 4
    assert "alice" not in text and "bob" not in text


def test_events_freshness_deadletters_and_model_versions(env) -> None:
    client, services = env
    store = services.event_store
    base = store.count()
    store.append("pings", [{"_id": f"p{i}", "user_id": "u1"} for i in range(5)])
    text = client.get("/metrics").text
    assert metric(text, "kairos_events_appended_total") == base + 5
    time.sleep(0.05)
    store.append("pings", [{"_id": f"q{i}", "user_id": "u1"} for i in range(40)])
    text = client.get("/metrics").text
    assert metric(text, "kairos_events_appended_total") == base + 45
    assert metric(text, "kairos_events_appended_per_second") > 0

    now = time.time()
    services.features.write("user_activity", [feature_row("user_activity", user_id="fresh", as_of=now - 120)])
    services.features.write("item_stats", [feature_row("item_stats", item_id="old", as_of=now - 3600)])
    letters = SqliteDeadLetters(services.settings.deadletter_path)
    letters.write([DeadLetter("pings", "1", "lat: 91.5 is out of range", "{}"),
                   DeadLetter("pings", "2", "lat: 97 is out of range", "{}"),
                   DeadLetter("orders", "3", "no user id in 'buyer'", "{}")])
    letters.close()
    models = open_model_state(services.settings)
    for version in range(3):
        models.publish("bandit", {"w": version})
    text = client.get("/metrics").text
    assert 119 <= metric(text, "kairos_feature_freshness_lag_seconds", view="user_activity") < 180
    assert 3599 <= metric(text, "kairos_feature_freshness_lag_seconds", view="item_stats") < 3660
    assert metric(text, "kairos_deadletters", reason="lat: <n> is out of range", status="open") == 2
    assert metric(text, "kairos_deadletters", reason="no user id in <v>", status="open") == 1
    assert metric(text, "kairos_model_versions_published_total", model="bandit") == 3


def test_sampled_metrics_are_not_read_on_every_scrape(env) -> None:
    _, services = env
    sampler = get_sampler(services)
    sampler.every_s = 3600
    try:
        first = sampler.sample(force=True)["events"]
        services.event_store.append("pings", [{"_id": "late", "user_id": "u1"}])
        assert sampler.sample()["events"] == first  # the cached sample, no store query
        assert sampler.sample(force=True)["events"] == first + 1
    finally:
        sampler.every_s = 0.0


def test_reason_class_strips_values() -> None:
    assert reason_class("price: '12,5' is not a number") == "price: <v> is not a number"
    assert reason_class("ts: 1714586400000 is in the future") == "ts: <n> is in the future"


def test_readyz_names_the_store_that_fails(env, monkeypatch) -> None:
    client, services = env
    assert client.get("/readyz").json() == {"status": "ready"}
    catalog = services.catalog.catalog

    def down() -> int:
        raise ConnectionError("catalog is down")

    monkeypatch.setattr(catalog, "count", down)
    res = client.get("/readyz")
    assert res.status_code == 503
    body = res.json()["error"]
    assert body["message"] == "not ready: catalog did not answer"
    assert body["details"][0]["field"] == "catalog" and "catalog is down" in body["details"][0]["message"]
    assert client.get("/healthz").status_code == 200  # liveness does not depend on stores


def test_readyz_checks_the_key_store_when_keys_are_required(env, monkeypatch) -> None:
    client, services = env
    monkeypatch.setattr(services, "settings", services.settings.with_(auth_required=True))
    auth = get_authenticator(services)
    monkeypatch.setattr(auth.store, "ping", lambda: (_ for _ in ()).throw(OSError("disk gone")))
    res = client.get("/readyz")
    assert res.status_code == 503 and res.json()["error"]["details"][0]["field"] == "api_keys"


def test_request_ids_are_echoed_or_made_and_logged_as_json(env) -> None:
    client, _ = env
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("kairos.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        mine = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        made = client.get("/v1/users/zed/suggestions", params={"lat": "99", "lon": "0"})
        bad = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    assert mine.headers["x-request-id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])  # too long: replaced
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["trace-42", made.headers["x-request-id"],
                                                      bad.headers["x-request-id"]]
    assert lines[1]["route"] == "/v1/users/{user_id}/suggestions" and lines[1]["status"] == 422
    assert lines[1]["path"] == "/v1/users/zed/suggestions" and lines[1]["duration_ms"] >= 0
