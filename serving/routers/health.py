"""Ops endpoints (DESIGN §6): liveness, readiness and Prometheus metrics. All public (no key):
orchestrators and Prometheus call them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from serving.auth import get_authenticator
from serving.deps import Services, ServicesDep
from serving.errors import ApiError
from serving.schemas import Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    # Deliberately touches no store: a slow database must not get a healthy process restarted.
    return Health(status="ok")


def _store_checks(services: Services) -> dict[str, Callable[[], Any]]:
    # Behind the last-known caches (which answer from memory during an outage) the raw stores are
    # asked directly: readiness must say whether they answer *now*.
    features = getattr(services.features, "features", services.features)
    checks: dict[str, Callable[[], Any]] = {
        "event_store": lambda: services.event_store.count(collection="__readyz__"),
        "online_features": lambda: features.read("user_activity", [{"user_id": "__readyz__"}]),
        "catalog": lambda: getattr(services.catalog, "catalog", services.catalog).count(),
    }
    if services.settings.auth_required:
        checks["api_keys"] = lambda: get_authenticator(services).ping()
    return checks


@router.get("/readyz", response_model=Health, summary="Readiness: the stores answer (503 names those that do not)",
            responses={503: {"description": "a store does not answer; details name it"}})
def readyz(services: ServicesDep) -> Health:
    failed = []
    for name, check in _store_checks(services).items():
        try:
            check()
        except Exception as exc:
            log.warning("readiness check %s failed", name, exc_info=True)
            failed.append({"field": name, "message": f"{type(exc).__name__}: {str(exc)[:200]}",
                           "type": "store_unavailable"})
    if failed:
        raise ApiError(503, f"not ready: {', '.join(f['field'] for f in failed)} did not answer", failed)
    return Health(status="ready")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    body, content_type = await run_in_threadpool(request.app.state.metrics.render)
    return Response(content=body, media_type=content_type)
