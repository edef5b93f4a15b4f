"""``python -m app``: start the service with uvicorn, settings from ``DAA_*`` environment variables."""

from __future__ import annotations

import sys

import uvicorn

from app.main import create_app
from app.settings import Settings
from model.checkpoint import CheckpointError, load_checkpoint


def main() -> None:
    settings = Settings()
    try:  # fail before binding the port, with one clear line, rather than from inside the lifespan
        load_checkpoint(settings.checkpoint)
    except CheckpointError as exc:
        sys.exit(f"daa-age: cannot start: {exc} (set DAA_CHECKPOINT to a valid checkpoint)")
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level=settings.log_level, timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    try:
        server.run()
    except CheckpointError as exc:
        sys.exit(f"daa-age: cannot start: {exc}")
    if not server.started:  # lifespan failed (uvicorn logged why)
        sys.exit(3)


if __name__ == "__main__":
    main()
