"""Prometheus metrics, one registry per application instance (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "daa_estimate_requests_total",
            "POST /estimate and /estimate/video answers by status code",
            ["status"],
            registry=self.registry,
        )
        self.faces = Counter("daa_faces_total", "faces estimated", registry=self.registry)
        self.batch_size = Histogram(
            "daa_model_batch_faces", "faces per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry
        )
        self.model_seconds = Histogram("daa_model_call_seconds", "model call latency", registry=self.registry)
        self.detect_seconds = Histogram("daa_detect_seconds", "face detection latency per image", registry=self.registry)
        self.queue_faces = Gauge("daa_queue_faces", "faces waiting for the model", registry=self.registry)
        self.decode_workers_replaced = Counter(
            "daa_decode_workers_replaced_total",
            "decode worker processes stopped and replaced, by reason: cpu, memory, wall, client_gone, crashed",
            ["reason"],
            registry=self.registry,
        )
        self.requests_active = Gauge("daa_requests_active", "POST /estimate requests being served", registry=self.registry)

    def on_worker_replaced(self, reason: str) -> None:
        self.decode_workers_replaced.labels(reason).inc()

    def on_batch(self, faces: int, seconds: float) -> None:
        self.batch_size.observe(faces)
        self.model_seconds.observe(seconds)


class CountAnswers:
    """ASGI middleware counting every answer to ``path`` by its status, whichever layer gave it: the route, a
    dependency (401, 503 ``not_ready``), request validation (422), an exception handler (503 ``out_of_memory``) or
    an unhandled error (500). A client that went away before any answer counts as 499 (nginx's "client closed
    request")."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry, paths: tuple[str, ...]) -> None:
        self.app, self.telemetry, self.paths = app, telemetry, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:  # answered by the outermost error handler, with a 500
            if not status:
                status.append(500)
            raise
        finally:
            self.telemetry.requests.labels(str(status[0] if status else 499)).inc()
