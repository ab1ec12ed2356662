"""The FastAPI application: ``create_app()`` wires settings, stores, routers and error handlers.

Run it with ``uvicorn serving.app:create_app --factory`` (settings from ``KAIROS_*``), or build it
in code with ``create_app(Settings(home=...))``. There is no module-level app on purpose: importing
this module must not open stores or read the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from kairos import __version__
from kairos.config import Settings
from serving.auth import authorize
from serving.deps import Services
from serving.errors import install_error_handlers
from serving.metrics import Metrics, get_sampler
from serving.request_log import RequestLogMiddleware, configure_json_logging
from serving.routers import all_routers

DESCRIPTION = """\
Kairos tells each user what they are likely to want *here and now*.

Every error is JSON: `{"error": {"status": 422, "message": "lat: must be between -90 and 90"}}`.

Every route but `/healthz`, `/readyz` and `/metrics` needs an API key of the right scope
(`app`, `business:<id>`, `analyst`, `admin`): `Authorization: Bearer kairos_<id>_<secret>`
(create one with `kairos keys create --scope app`). A missing or unknown key is a 401, a key of
the wrong scope or another business's key a 403, a key over its rate limit a 429 with `Retry-After`.
Every response carries `X-Request-ID` (yours, if you sent one).
"""


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """A Kairos API app.

    ``services`` lets tests (and embedders) share already-open stores; they are then neither
    opened nor closed by the app. Otherwise the stores of ``settings`` (default: from the
    environment) are opened at startup and closed at shutdown.
    """
    if settings is None:
        settings = services.settings if services is not None else Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        if owned and settings.log_json:
            configure_json_logging()
        if owned:
            # Requests run concurrently on threads; BLAS threads inside one request only fight them
            # for the cores (a bandit's variance product on 150 candidates took 66x the CPU with
            # OpenBLAS's workers spinning). The API process computes single-threaded per request.
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)
        app.state.services = services if services is not None else Services.start(settings)
        try:
            yield
        finally:
            if owned:
                app.state.services.close()

    # ``authorize`` runs before every route's own dependencies: scopes are enforced in one place
    # (serving/auth.py), and a router added later cannot forget them.
    app = FastAPI(title="Kairos", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  dependencies=[Depends(authorize)])
    if services is not None:
        # Available even to clients that skip the lifespan (e.g. TestClient used without ``with``).
        app.state.services = services
    app.state.metrics = Metrics(lambda: _sampler(app))
    app.add_middleware(RequestLogMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)
    for router in all_routers():
        app.include_router(router)
    return app


def _sampler(app: FastAPI) -> object | None:
    services = getattr(app.state, "services", None)
    return get_sampler(services) if services is not None else None
