"""The FastAPI application: ``create_app()`` wires settings, stores, routers and error handlers.

Run it with ``uvicorn serving.app:create_app --factory`` (settings from ``KAIROS_*``), or build it
in code with ``create_app(Settings(home=...))``. There is no module-level app on purpose: importing
this module must not open stores or read the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kairos import __version__
from kairos.config import Settings
from serving.deps import Services
from serving.errors import install_error_handlers
from serving.routers import all_routers

DESCRIPTION = """\
Kairos tells each user what they are likely to want *here and now*.

Every error is JSON: `{"error": {"status": 422, "message": "lat: must be between -90 and 90"}}`.
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
        app.state.services = services if services is not None else Services.start(settings)
        try:
            yield
        finally:
            if owned:
                app.state.services.close()

    app = FastAPI(title="Kairos", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    if services is not None:
        # Available even to clients that skip the lifespan (e.g. TestClient used without ``with``).
        app.state.services = services
    install_error_handlers(app)
    for router in all_routers():
        app.include_router(router)
    return app
