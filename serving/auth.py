"""API keys on every route, in one place: which scope each route needs, and who may touch which
business.

The app installs :func:`authorize` as a dependency of *every* route (``FastAPI(dependencies=…)``),
so routers never deal with keys and a new router cannot forget them. :data:`RULES` maps a route's
path template (longest prefix wins) to the scopes it accepts; any ``/v1/`` route that no rule
names needs ``admin``, so a route added later is closed until someone decides otherwise.

Checks, in order: a ``Bearer`` key is present (401; the SSE pricing stream also takes
``?api_key=``, which a browser ``EventSource`` can send), it exists and is not revoked (401), its scope
is allowed here (403), a ``business:<id>`` key only names its own business wherever the request
names one — path, query or JSON body (403), and the key is within its rate limit (429 with
``Retry-After``). ``admin`` passes every check but the rate limit.

Serving latency matters (~25 ms p99 for suggestions), so the hot path never waits on a store:
verified key records are cached for ``KAIROS_API_KEY_CACHE_S`` seconds (so a revocation takes
effect within that time on every replica), hashing is one SHA-256, and usage counters are kept in
memory and flushed every ``KAIROS_API_USAGE_FLUSH_S`` seconds in one write.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kairos.config import Settings
from kairos.stores.api_keys import ApiKey, open_api_keys, parse_token
from serving.errors import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """Who may call a route.

    ``scopes``: ``app``, ``analyst`` or ``business`` (any ``business:<id>`` key); ``admin`` is
    always allowed. ``own_business``: a business key must name its own business in the request.
    ``public``: no key at all (ops endpoints, the /ui page).
    """

    scopes: frozenset[str] = frozenset()
    own_business: bool = False
    public: bool = False

    def describe(self) -> str:
        if self.public:
            return "public"
        names = sorted("business:<own id>" if s == "business" and self.own_business else
                       "business:<any id>" if s == "business" else s for s in self.scopes)
        return " | ".join([*names, "admin"])


PUBLIC = Rule(public=True)
ADMIN = Rule()
APP = Rule(frozenset({"app"}))
ANALYST = Rule(frozenset({"analyst"}))
OWN_BUSINESS = Rule(frozenset({"business"}), own_business=True)

#: Path-template prefix → rule; the longest matching prefix wins (matched on whole segments).
RULES: dict[str, Rule] = {
    "/healthz": PUBLIC,
    "/readyz": PUBLIC,
    "/metrics": PUBLIC,
    # FastAPI's own pages (plain routes that never run ``authorize``; listed so the table says so).
    "/docs": PUBLIC,
    "/redoc": PUBLIC,
    "/openapi.json": PUBLIC,
    # The consumer app.
    "/v1/users": APP,
    "/v1/search": APP,
    "/v1/nearby": APP,
    "/v1/feedback": APP,
    "/v1/reports": APP,
    # Business owners: their own business only.
    "/v1/businesses/{business_id}": OWN_BUSINESS,
    "/v1/events": OWN_BUSINESS,
    # Analytics: an area is open to any business and to analysts; a business's KPIs to itself.
    "/v1/analytics/area": Rule(frozenset({"business", "analyst"})),
    "/v1/analytics/businesses/{business_id}": Rule(frozenset({"business", "analyst"}), own_business=True),
    "/v1/analytics": ANALYST,
    # Feature views and the analysts' UI: the page is public, the data it loads needs a key.
    "/v1/features": ANALYST,
    "/ui/api": ANALYST,
    "/ui": PUBLIC,
    # Moderation, suspensions, key administration, training and registry: admin.
    "/v1/moderation": ADMIN,
    "/v1": ADMIN,
}
#: Routes nothing above names (non-/v1 routes added later) are closed too.
DEFAULT_RULE = ADMIN
#: Routes that also accept the key as ``?api_key=``: a browser ``EventSource`` cannot send an
#: ``Authorization`` header. Only here: a key in a URL ends up in browser history, proxy logs and
#: ``Referer`` headers, so every other route refuses it (our access log drops the query string and
#: redacts ``api_key`` from uvicorn's, see :mod:`serving.request_log`).
QUERY_KEY_ROUTES = frozenset({"/v1/businesses/{business_id}/pricing/stream"})
QUERY_KEY_PARAM = "api_key"


def rule_for(path_template: str) -> Rule:
    """The rule of a route, by the longest prefix of its path template that ends at a segment."""
    best, best_len = DEFAULT_RULE, -1
    for prefix, rule in RULES.items():
        if (path_template == prefix or path_template.startswith(prefix.rstrip("/") + "/")) and len(prefix) > best_len:
            best, best_len = rule, len(prefix)
    return best


def api_routes(app: FastAPI) -> Iterator[tuple[str, frozenset[str], Any]]:
    """(path template, methods, route) of every route the app serves, included routers flattened
    (FastAPI ≥ 0.160 keeps included routers as one entry of ``app.routes``)."""
    def walk(routes: Any) -> Iterator[tuple[str, frozenset[str], Any]]:
        for route in routes:
            contexts = getattr(route, "effective_route_contexts", None)
            if contexts is not None:
                for ctx in contexts():
                    # The effective context is what is served: the app's dependencies are on it.
                    yield ctx.path_format, frozenset(ctx.methods or ()), ctx
            else:
                yield getattr(route, "path", ""), frozenset(getattr(route, "methods", None) or ()), route

    yield from walk(app.routes)


# ------------------------------------------------------------------------------------------------
# Key verification, rate limits and usage
# ------------------------------------------------------------------------------------------------


class _Bucket:
    """Token bucket: a minute's worth of requests as burst, refilled at ``limit/60`` per second."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, limit_per_min: int, now: float) -> None:
        self.rate = limit_per_min / 60.0
        self.capacity = float(limit_per_min)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> float:
        """0 if a request may go now, else the seconds until it may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Authenticator:
    """Verifies keys against a store through a short-lived cache; counts usage; limits rates.

    Rate limits are per API process: with ``n`` replicas behind a load balancer a key can make up
    to ``n`` times its limit (a shared limiter would cost a Redis round trip per request).
    """

    def __init__(self, store: Any, cache_s: float = 2.0, flush_s: float = 5.0, cache_size: int = 10_000,
                 clock: Any = time.monotonic) -> None:
        self.store = store
        self.cache_s = cache_s
        self.cache_size = cache_size
        self.clock = clock
        self._cache: OrderedDict[str, tuple[ApiKey | None, float]] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._usage: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, args=(flush_s,), name="api-key-usage", daemon=True)
        self._flusher.start()

    @classmethod
    def from_services(cls, services: Any) -> Authenticator:
        settings: Settings = services.settings
        return cls(open_api_keys(settings), cache_s=settings.api_key_cache_s, flush_s=settings.api_usage_flush_s)

    def lookup(self, key_id: str) -> ApiKey | None:
        """The stored key (or ``None``), from the cache when it is younger than ``cache_s``.

        Unknown ids are cached too, so a client retrying a bad key does not reach the store each
        time; the cache is bounded so random ids cannot grow it without limit.
        """
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key_id)
            if hit is not None and now - hit[1] < self.cache_s:
                return hit[0]
        key = self.store.get(key_id)
        with self._lock:
            self._cache[key_id] = (key, now)
            self._cache.move_to_end(key_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return key

    def authenticate(self, token: str) -> ApiKey:
        parsed = parse_token(token)
        if parsed is None:
            raise _unauthorized("invalid API key: expected kairos_<key id>_<secret>")
        key_id, secret = parsed
        key = self.lookup(key_id)
        if key is None or not key.verify(secret):
            raise _unauthorized("invalid API key")
        if not key.active:
            raise _unauthorized(f"API key {key_id} has been revoked")
        return key

    def admit(self, key: ApiKey) -> None:
        """Count the request and apply the key's rate limit (429 with Retry-After beyond it)."""
        now = self.clock()
        with self._lock:
            usage = self._usage.setdefault(key.key_id, [0, 0.0])
            usage[0] += 1
            usage[1] = time.time()
            if key.rate_limit_per_min <= 0:
                return
            bucket = self._buckets.get(key.key_id)
            if bucket is None or bucket.capacity != key.rate_limit_per_min:
                bucket = self._buckets[key.key_id] = _Bucket(key.rate_limit_per_min, now)
            wait = bucket.take(now)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise ApiError(429, f"rate limit of {key.rate_limit_per_min} requests/min exceeded for key "
                                f"{key.key_id}; retry in {retry} s", headers={"Retry-After": str(retry)})

    def flush(self) -> None:
        """Write the buffered usage counters in one store call."""
        with self._lock:
            usage, self._usage = self._usage, {}
        if not usage:
            return
        try:
            self.store.add_usage({k: (int(n), last) for k, (n, last) in usage.items()})
        except Exception:
            # Keep the counts for the next flush rather than lose them to a passing outage.
            log.warning("flushing API key usage failed; will retry", exc_info=True)
            with self._lock:
                for key_id, (n, last) in usage.items():
                    mine = self._usage.setdefault(key_id, [0, 0.0])
                    mine[0] += n
                    mine[1] = max(mine[1], last)

    def _flush_loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.flush()

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        self.store.close()


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def get_authenticator(services: Any) -> Authenticator:
    return services.extra("authenticator", Authenticator.from_services)


# ------------------------------------------------------------------------------------------------
# The dependency every route runs
# ------------------------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer kairos_<id>_<secret>`")


async def _named_businesses(request: Request) -> set[str]:
    """Every ``business_id`` the request names: path, query and top-level JSON body."""
    named: set[str] = set()
    if "business_id" in request.path_params:
        named.add(str(request.path_params["business_id"]))
    named.update(request.query_params.getlist("business_id"))
    if request.method in ("POST", "PUT", "PATCH") and "json" in request.headers.get("content-type", ""):
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError):
            body = None  # FastAPI answers bad JSON with a 422 itself
        if isinstance(body, dict) and "business_id" in body:
            named.add(str(body["business_id"]))
    return named


def _query_key(request: Request, template: str) -> str | None:
    """The ``?api_key=`` of a route in :data:`QUERY_KEY_ROUTES` (a header, when sent, wins)."""
    given = request.query_params.get(QUERY_KEY_PARAM)
    if given is None:
        return None
    if template not in QUERY_KEY_ROUTES:
        raise _unauthorized(f"{QUERY_KEY_PARAM}: a key in the URL is accepted only by "
                            f"{', '.join(sorted(QUERY_KEY_ROUTES))}; send the header Authorization: Bearer <key>")
    return given


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey | None:
    """Run on every route (see :func:`serving.app.create_app`): enforce :data:`RULES`."""
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    rule = rule_for(template)
    services = request.app.state.services
    if rule.public or not services.settings.auth_required:
        return None
    token = credentials.credentials if credentials is not None else None
    if not token:
        token = _query_key(request, template)
    if not token:
        raise _unauthorized("missing API key: send the header Authorization: Bearer <key> (see `kairos keys create`)")
    auth = get_authenticator(services)
    key = auth.authenticate(token)
    request.state.api_key_id = key.key_id
    if key.scope != "admin":
        kind = "business" if key.business_id is not None else key.scope
        if kind not in rule.scopes:
            raise ApiError(403, f"a key with scope {key.scope!r} may not call {request.method} {template}; "
                                f"it needs {rule.describe()}")
        if kind == "business" and rule.own_business:
            named = await _named_businesses(request)
            if not named:
                raise ApiError(403, f"a business key must name its business: business_id={key.business_id}")
            others = sorted(named - {key.business_id})
            if others:
                raise ApiError(403, f"key {key.key_id} belongs to business {key.business_id!r} and may not "
                                    f"access business {others[0]!r}")
    auth.admit(key)
    return key


__all__ = ["ADMIN", "ANALYST", "APP", "Authenticator", "OWN_BUSINESS", "PUBLIC", "QUERY_KEY_PARAM",
           "QUERY_KEY_ROUTES", "RULES", "Rule", "api_routes", "authorize", "get_authenticator", "rule_for"]
