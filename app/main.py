"""The FastAPI application: ``uvicorn app.main:app`` or ``python -m app``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.errors import install_error_handlers
from app.routes import UPLOAD_SCHEMAS, router
from app.security import APIKeys, RefusingCORSMiddleware
from app.service import Service
from app.settings import Settings
from app.telemetry import CountAnswers, Telemetry
from app.video_routes import router as video_router
from model.pipeline import read_model


def _package_version() -> str:
    """The API's version is the package's (pyproject.toml): one number for both."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("daa-age")
    except PackageNotFoundError:  # a source tree run without installing it
        return "0+unknown"


API_VERSION = _package_version()
log = logging.getLogger("daa.app")


def create_app(
    settings: Settings | None = None,
    on_load_failure: Callable[[], None] | None = None,
    load_in_background: bool = True,
) -> FastAPI:
    """``on_load_failure``: called when the model fails to load after the server started (``python -m app`` stops
    the server; by default the error is kept in ``app.state.startup_error`` and /ready stays 503).

    ``load_in_background``: open the port first and answer /ready with 503 while the model loads (one process).
    Worker processes sharing a port load before they accept connections instead, so a worker that is still
    loading never takes a request while another one already answers /ready."""
    settings = settings or Settings()
    telemetry = Telemetry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Read and check the checkpoint file before the port opens (a missing or corrupt file stops start-up
        # with a message naming it); build the model after it opens, so /ready answers 503 while it loads.
        payload = await asyncio.to_thread(read_model, settings.checkpoint)
        loading = asyncio.create_task(_load(app, settings, payload, telemetry, on_load_failure), name="daa-load")
        if not load_in_background:
            await loading
        try:
            yield
        finally:
            loading.cancel()
            service: Service | None = app.state.service
            app.state.service = None
            if service is not None:
                await service.stop()

    app = FastAPI(
        title="DAA age estimation",
        version=API_VERSION,
        description=(
            "Facial age estimation with the Delta Age AdaIN method (Chen et al., CVPR 2023). Every face "
            "comes with its age, an uncertainty, and its delta age to each reference age."
        ),
        lifespan=lifespan,
        # /estimate/ is a 404 in the error model, not a 307 with an empty body.
        redirect_slashes=False,
        # Swagger UI and ReDoc load their scripts from a CDN: DAA_API_DOCS=false leaves them out (openapi.json stays).
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    app.state.service = None
    app.state.startup_error = None
    app.state.settings = settings
    app.state.telemetry = telemetry
    app.state.api_keys = APIKeys(settings.keys())
    install_error_handlers(app, settings.retry_after_s)
    app.add_middleware(CountAnswers, telemetry=telemetry, paths=("/estimate", "/estimate/video"))
    if settings.cors_origins:
        app.add_middleware(
            RefusingCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
            max_age=600,
        )
    app.include_router(router)
    app.include_router(video_router)
    from app.page import router as page_router  # the browser page at GET /

    app.include_router(page_router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _load(
    app: FastAPI,
    settings: Settings,
    payload: dict[str, Any] | None,
    telemetry: Telemetry,
    on_failure: Callable[[], None] | None,
) -> None:
    try:
        service = await asyncio.to_thread(Service.load, settings, payload, telemetry)
        await service.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  (whatever stops the model from loading stops the server)
        log.error("daa-age: cannot start: %s", exc)
        app.state.startup_error = exc
        if on_failure is not None:
            on_failure()
        return
    app.state.service = service
    est = service.pipeline.estimator
    log.info("serving %s on %s", est.name, est.device)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the upload's body model, which the streaming route declares by reference."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(UPLOAD_SCHEMAS)
        app.openapi_schema = schema
    return app.openapi_schema


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn app.main:app`` builds the app on first access, not at import (no import-time side effects).
    if name == "app":  # what each worker process of python -m app (DAA_WORKERS > 1) builds
        return create_app(load_in_background=False)
    raise AttributeError(name)
