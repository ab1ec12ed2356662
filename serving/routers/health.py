"""Liveness and readiness for orchestrators (DESIGN §6 ops)."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from serving.deps import ServicesDep
from serving.errors import ApiError
from serving.schemas import Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    # Deliberately touches no store: a slow database must not get a healthy process restarted.
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness: the stores answer")
def readyz(services: ServicesDep) -> Health:
    try:
        services.catalog.count()
        services.event_store.count()
    except Exception:
        log.warning("readiness check failed", exc_info=True)
        raise ApiError(503, "not ready: a store does not answer") from None
    return Health(status="ready")
