"""API keys on every route: missing key 401, wrong scope 403, another business 403, revocation,
rate limits (429 + Retry-After), buffered usage counters.

The app here runs on light stores (SQLite event log and catalog, an empty feature reader): the
checks happen before any route touches a store, and starting Feast would cost seconds for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kairos.config import Settings
from kairos.stores.api_keys import create_key, revoke_key
from kairos.stores.catalog import SqliteCatalog
from kairos.stores.event_store import SqliteEventStore
from kairos.stores.last_known import LastKnownCatalog
from online.transparent_ranker import TransparentRanker
from serving.app import create_app
from serving.auth import api_routes, authorize, get_authenticator, rule_for
from serving.deps import Services

#: Routes anyone may call: ops endpoints and FastAPI's documentation pages (and the /ui page).
PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
#: Path parameters filled with values that pass their patterns.
PARAMS = {"user_id": "u1", "business_id": "b1", "draft_id": "dr-0123456789abcdef", "queue_id": "q-0123456789abcdef",
          "actor_type": "user", "actor_id": "u1", "view": "user_activity", "key": "u1"}


class NoFeatures:
    """An online store that holds nothing."""

    def read(self, view: str, keys: list[dict[str, str]], fields: Any = None) -> list[None]:
        return [None] * len(keys)

    def read_one(self, view: str, key: dict[str, str]) -> None:
        return None


def light_services(settings: Settings) -> Services:
    settings.home.mkdir(parents=True, exist_ok=True)
    return Services(settings=settings, event_store=SqliteEventStore(settings.event_log_path),
                    catalog=LastKnownCatalog(SqliteCatalog(settings.catalog_path)), features=NoFeatures(),
                    ranker=TransparentRanker())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Services, dict[str, str]]]:
    settings = Settings(home=tmp_path_factory.mktemp("kairos_auth"), api_key_cache_s=0.2, api_usage_flush_s=3600)
    services = light_services(settings)
    store = get_authenticator(services).store
    keys = {scope: create_key(store, scope, name=scope, actor="test")[1]
            for scope in ("app", "analyst", "admin", "business:b1", "business:b2")}
    with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
        yield client, services, keys
    services.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def concrete(path: str, **overrides: str) -> str:
    values = {**PARAMS, **overrides}
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no test value for a parameter of {path}"
    return path


def protected_routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for path, methods, _route in api_routes(app):
        if path in PUBLIC_PATHS or path == "/ui" or path.startswith("/ui/") and not path.startswith("/ui/api"):
            continue
        for method in sorted(methods - {"HEAD"}):
            out.append((method, path))
    return out


def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None,
         params: dict[str, str] | None = None, body: Any = None) -> Any:
    json_body = body if body is not None else ({} if method in ("POST", "PUT", "PATCH") else None)
    return client.request(method, path, headers=headers, params=params, json=json_body)


def wrong_scope_for(path: str) -> str:
    rule = rule_for(path)
    return next(s for s in ("app", "analyst", "business:b1") if s.split(":")[0] not in rule.scopes)


def test_every_route_but_the_public_ones_needs_a_key_of_its_scope(env) -> None:
    client, _, keys = env
    app = client.app
    routes = protected_routes(app)
    # The walk really covers the API (a broken enumeration would make this test pass vacuously).
    assert len(routes) >= 20
    assert {("GET", "/v1/users/{user_id}/suggestions"), ("POST", "/v1/moderation/suspensions"),
            ("GET", "/v1/businesses/{business_id}/pricing"), ("POST", "/v1/events")} <= set(routes)
    for method, template in routes:
        path = concrete(template)
        missing = call(client, method, path)
        assert missing.status_code == 401, (method, template, missing.text)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "missing API key" in missing.json()["error"]["message"]
        garbage = call(client, method, path, headers=bearer("kairos_0123456789ab_" + "x" * 43))
        assert garbage.status_code == 401, (method, template)
        wrong = call(client, method, path, headers=bearer(keys[wrong_scope_for(template)]))
        assert wrong.status_code == 403, (method, template, wrong.text)
        assert "may not call" in wrong.json()["error"]["message"]
        admin = call(client, method, path, headers=bearer(keys["admin"]))
        assert admin.status_code not in (401, 403), (method, template, admin.text)


def test_only_the_allow_list_is_public(env) -> None:
    client, _, _ = env
    public = set()
    for path, _methods, route in api_routes(client.app):
        dependant = getattr(route, "dependant", None)
        dependant_calls = {d.call for d in dependant.dependencies} if dependant is not None else set()
        if authorize not in dependant_calls or rule_for(path).public:
            public.add(path)
    unexpected = {p for p in public - PUBLIC_PATHS if not (p == "/ui" or p.startswith("/ui/") and not p.startswith("/ui/api"))}
    assert not unexpected, f"routes open without a key: {unexpected}"
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_unlisted_v1_routes_default_to_admin() -> None:
    assert rule_for("/v1/train/runs").describe() == "admin"
    assert rule_for("/v1/registry/{model}/promote").describe() == "admin"
    assert rule_for("/somewhere/else").describe() == "admin"
    assert rule_for("/v1/features/{view}/{key}").describe() == "analyst | admin"
    assert rule_for("/v1/usersx").describe() == "admin"  # prefixes match whole segments only


def business_routes(app: Any) -> list[tuple[str, str]]:
    return [(m, p) for m, p in protected_routes(app) if rule_for(p).own_business]


def test_a_business_key_cannot_touch_another_business_on_any_route(env) -> None:
    client, _, keys = env
    routes = business_routes(client.app)
    assert {("GET", "/v1/businesses/{business_id}/pricing"), ("GET", "/v1/businesses/{business_id}/pricing/stream"),
            ("GET", "/v1/analytics/businesses/{business_id}"), ("POST", "/v1/events/draft"),
            ("POST", "/v1/events"), ("GET", "/v1/events/drafts/{draft_id}")} <= set(routes)
    for method, template in routes:
        path = concrete(template, business_id="b2")
        # The other business named wherever a route can take it: path, query and body.
        other = call(client, method, path, headers=bearer(keys["business:b1"]), params={"business_id": "b2"},
                     body={"business_id": "b2"} if method == "POST" else None)
        assert other.status_code == 403, (method, template, other.text)
        assert "may not access business 'b2'" in other.json()["error"]["message"]
        # b2's own key passes the check on the same request (it then fails or succeeds on its merits).
        own = call(client, method, path, headers=bearer(keys["business:b2"]), params={"business_id": "b2"},
                   body={"business_id": "b2"} if method == "POST" else None)
        assert own.status_code != 403, (method, template, own.text)


def test_a_business_key_may_not_hide_the_business_in_one_place(env) -> None:
    client, _, keys = env
    b1 = bearer(keys["business:b1"])
    # Own business in the body, another in the query: refused.
    res = client.post("/v1/events/draft", headers=b1, params={"business_id": "b2"}, json={"business_id": "b1"})
    assert res.status_code == 403
    # Naming no business at all: refused, the key cannot be checked against anything.
    res = client.get("/v1/events/drafts/dr-0123456789abcdef", headers=b1)
    assert res.status_code == 403 and "must name its business" in res.json()["error"]["message"]
    # A draft body naming the own business passes auth and reaches validation (422 names a field).
    res = client.post("/v1/events/draft", headers=b1, json={"business_id": "b1"})
    assert res.status_code == 422 and "kind" in res.json()["error"]["message"]


def test_area_analytics_are_open_to_any_business_and_analysts(env) -> None:
    client, _, keys = env
    for scope in ("business:b1", "analyst"):
        res = client.get("/v1/analytics/area", headers=bearer(keys[scope]), params={"lat": "91", "lon": "0"})
        assert res.status_code == 422, res.text  # past auth, the latitude is refused
    assert client.get("/v1/analytics/area", headers=bearer(keys["app"])).status_code == 403
    res = client.get("/v1/analytics/businesses/b2", headers=bearer(keys["analyst"]), params={"days": "0"})
    assert res.status_code == 422


def test_revocation_takes_effect_within_the_cache_time(env) -> None:
    client, services, _ = env
    store = get_authenticator(services).store
    key, token = create_key(store, "app", actor="test")
    assert client.get("/v1/nearby", headers=bearer(token)).status_code == 422  # accepted, bad params
    revoke_key(store, key.key_id, actor="test")
    time.sleep(services.settings.api_key_cache_s + 0.05)
    res = client.get("/v1/nearby", headers=bearer(token))
    assert res.status_code == 401 and "revoked" in res.json()["error"]["message"]


def test_wrong_secret_of_a_real_key_is_refused(env) -> None:
    client, _, keys = env
    token = keys["admin"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get("/v1/moderation/queue", headers=bearer(tampered)).status_code == 401
    assert client.get("/v1/moderation/queue", headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_rate_limit_answers_429_with_retry_after(env) -> None:
    client, services, _ = env
    store = get_authenticator(services).store
    key, token = create_key(store, "app", rate_limit_per_min=2, actor="test")
    codes = [client.get("/v1/nearby", headers=bearer(token)).status_code for _ in range(2)]
    assert codes == [422, 422]
    limited = client.get("/v1/nearby", headers=bearer(token))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "rate limit of 2 requests/min" in limited.json()["error"]["message"]
    # Another key is not affected.
    _, other = create_key(store, "app", rate_limit_per_min=2, actor="test")
    assert client.get("/v1/nearby", headers=bearer(other)).status_code == 422


def test_usage_is_counted_in_memory_and_flushed_in_one_write(env) -> None:
    client, services, _ = env
    auth = get_authenticator(services)
    key, token = create_key(auth.store, "app", actor="test")
    writes = []
    original = auth.store.add_usage

    def spy(usage: Any) -> None:
        writes.append(dict(usage))
        original(usage)

    auth.store.add_usage = spy
    try:
        for _ in range(5):
            client.get("/v1/nearby", headers=bearer(token))
        assert writes == []  # nothing written on the request path
        assert key.key_id not in auth.store.usage()
        auth.flush()
    finally:
        del auth.store.add_usage
    assert len(writes) == 1
    assert auth.store.usage()[key.key_id]["requests"] == 5


def test_auth_off_needs_no_key(tmp_path) -> None:
    services = light_services(Settings(home=tmp_path, auth_required=False))
    with TestClient(create_app(services=services)) as client:
        assert client.get("/v1/moderation/queue").status_code == 200
    services.close()


STREAM = "/v1/businesses/{business_id}/pricing/stream"


def test_the_pricing_stream_also_takes_the_key_as_a_query_parameter(env) -> None:
    """A browser EventSource cannot send headers: ``?api_key=`` on that route, with the same checks."""
    client, services, keys = env
    path = concrete(STREAM)
    params = {"max_events": "1", "interval_s": "0.05"}
    own = client.get(path, params={**params, "api_key": keys["business:b1"]})
    assert own.status_code not in (401, 403), own.text  # past auth (then answers on its merits)
    other = client.get(path, params={**params, "api_key": keys["business:b2"]})
    assert other.status_code == 403 and "may not access business 'b1'" in other.json()["error"]["message"]
    assert client.get(path, params={"api_key": keys["app"]}).status_code == 403
    garbage = client.get(path, params={"api_key": "kairos_0123456789ab_" + "x" * 43})
    assert garbage.status_code == 401 and garbage.headers["www-authenticate"] == "Bearer"
    revoked_key, revoked = create_key(get_authenticator(services).store, "business:b1", actor="test")
    revoke_key(get_authenticator(services).store, revoked_key.key_id, actor="test")
    time.sleep(services.settings.api_key_cache_s + 0.05)
    assert client.get(path, params={"api_key": revoked}).status_code == 401
    # A header, when sent, wins over the query parameter.
    both = client.get(path, params={**params, "api_key": keys["business:b1"]}, headers=bearer(keys["business:b2"]))
    assert both.status_code == 403


def test_a_key_in_the_url_is_refused_everywhere_else(env) -> None:
    client, _, keys = env
    for method, template in protected_routes(client.app):
        if template == STREAM:
            continue
        path = concrete(template)
        res = call(client, method, path, params={"api_key": keys["admin"]})
        assert res.status_code == 401, (method, template, res.text)
        assert "accepted only by" in res.json()["error"]["message"]


def test_the_query_key_never_reaches_the_logs(env, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from serving.request_log import JsonFormatter

    client, _, keys = env
    secret = keys["business:b1"]
    with caplog.at_level(logging.INFO):
        client.get(concrete(STREAM), params={"max_events": "1", "interval_s": "0.05", "api_key": secret})
        # uvicorn's own access line (on when KAIROS_LOG_JSON=0) has the full URL: it is redacted.
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                                                 f"{concrete(STREAM)}?max_events=1&api_key={secret}", "1.1", 200)
    access = [r for r in caplog.records if r.name == "kairos.access"]
    assert access and access[-1].http["path"] == concrete(STREAM)  # the path, without the query
    uvicorn_lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert uvicorn_lines and "api_key=***" in uvicorn_lines[-1]
    formatter = JsonFormatter()
    # Every server-side line (the test's HTTP client logs its own URLs: not the server's logs).
    for record in (r for r in caplog.records if not r.name.startswith("httpx")):
        assert secret not in formatter.format(record), record.name
        assert secret.split("_")[-1] not in record.getMessage()
