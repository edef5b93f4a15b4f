"""``python -m app``: start the service with uvicorn, settings from ``DAA_*`` environment variables."""

from __future__ import annotations

import sys

import uvicorn

from app.main import create_app
from app.server import raise_open_file_limit, uvicorn_config
from app.settings import Settings
from model.errors import CheckpointError
from model.pipeline import read_model


def main() -> None:
    try:
        settings = Settings()
        settings.keys()  # a keys file that cannot be read stops start-up here, with its name
    except (ValueError, OSError) as exc:
        sys.exit(f"daa-age: cannot start: invalid settings: {exc}")
    raise_open_file_limit()
    if settings.workers > 1:
        # Each worker process loads the model itself; check the file once here, so a bad checkpoint stops the
        # server with one message instead of failing in every worker.
        try:
            read_model(settings.checkpoint)
        except CheckpointError as exc:
            sys.exit(f"daa-age: cannot start: {exc} (set DAA_CHECKPOINT to a valid checkpoint)")
        from uvicorn.supervisors import Multiprocess

        config = uvicorn_config(settings, "app.main:app")
        # What uvicorn.run does for workers: one listening socket, shared by worker processes it supervises.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server: uvicorn.Server | None = None

    def stop() -> None:  # the model failed to load after the port opened
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    server = uvicorn.Server(uvicorn_config(settings, app))
    try:
        server.run()
    except CheckpointError as exc:
        sys.exit(f"daa-age: cannot start: {exc} (set DAA_CHECKPOINT to a valid checkpoint)")
    error = app.state.startup_error
    if error is not None or not server.started:
        sys.exit(f"daa-age: cannot start: {error or 'see the log above'}")


if __name__ == "__main__":
    main()
