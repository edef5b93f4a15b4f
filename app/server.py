"""Run the app under uvicorn with the limits an exposed service needs: a deadline for each request head, keep-alive
and connection limits, graceful shutdown, and one or more worker processes."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import uvicorn

from app.settings import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseProtocol
except ImportError:  # uvicorn without its [standard] extra
    from uvicorn.protocols.http.h11_impl import H11Protocol as _BaseProtocol  # type: ignore[assignment]


# The most a request head (request line and headers) may take. httptools, unlike h11, sets no limit: a client
# sending headers for ever grew the process by gigabytes and stalled the event loop (an outside probe: 238 MB of
# small headers took it to 4.4 GiB; one endless header value made /health unreachable).
MAX_HEAD_BYTES = 64 * 1024


class GuardedHTTPProtocol(_BaseProtocol):
    """uvicorn's HTTP protocol plus a deadline and a size cap for the request head: a connection that does not
    finish sending its request line and headers in time (a stalled or slow-drip client), or sends more than
    ``MAX_HEAD_BYTES`` of them, is closed, so neither idle sockets nor endless headers can pile up. The deadline
    starts when the connection opens and again after each response on a kept-alive connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:  # still reading a request head (the body that may follow it not counted)
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                )
                self.transport.close()
                return
        super().data_received(data)
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:  # the head is complete: a request is running
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_bytes = 0
        timeout = getattr(self.config, "header_timeout_s", Settings.model_fields["header_timeout_s"].default)
        self._head_timer = asyncio.get_running_loop().call_later(timeout, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def raise_open_file_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit (connections are files); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus the request-head deadline, which :class:`GuardedHTTPProtocol` reads from it
    (uvicorn hands every protocol its config; worker processes get a pickled copy, so the setting travels)."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """``app``: the application, or ``"app.main:app"`` when several worker processes each build their own."""
    return ServerConfig(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        workers=settings.workers,
        http=GuardedHTTPProtocol,
        timeout_keep_alive=settings.keepalive_timeout_s,
        timeout_graceful_shutdown=10,
        limit_concurrency=settings.max_connections,
        backlog=min(2048, 4 * settings.max_connections),
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
        header_timeout_s=settings.header_timeout_s,
    )
