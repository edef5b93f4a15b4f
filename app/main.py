"""The FastAPI application: ``uvicorn app.main:app`` or ``python -m app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.errors import install_error_handlers
from app.routes import router
from app.service import Service
from app.settings import Settings

API_VERSION = "1.0.0"
log = logging.getLogger("daa.app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A missing or corrupt checkpoint raises here, so start-up fails loudly instead of serving errors.
        service = Service.load(settings)
        await service.start()
        app.state.service = service
        log.info("serving %s on %s", service.estimator.name, service.estimator.device)
        try:
            yield
        finally:
            app.state.service = None
            await service.stop()

    app = FastAPI(
        title="DAA age estimation",
        version=API_VERSION,
        description=("Facial age estimation with the Delta Age AdaIN method (Chen et al., CVPR 2023). Every face "
                     "comes with its age, an uncertainty, and its delta age to each reference age."),
        lifespan=lifespan,
    )
    app.state.service = None
    install_error_handlers(app)
    app.include_router(router)
    return app


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn app.main:app`` builds the app on first access, not at import (no import-time side effects).
    if name == "app":
        return create_app()
    raise AttributeError(name)
