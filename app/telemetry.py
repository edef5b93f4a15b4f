"""Prometheus metrics, one registry per application instance (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "daa_estimate_requests_total", "POST /estimate answers by status code", ["status"], registry=self.registry
        )
        self.faces = Counter("daa_faces_total", "faces estimated", registry=self.registry)
        self.batch_size = Histogram(
            "daa_model_batch_faces", "faces per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry
        )
        self.model_seconds = Histogram("daa_model_call_seconds", "model call latency", registry=self.registry)
        self.detect_seconds = Histogram("daa_detect_seconds", "face detection latency per image", registry=self.registry)
        self.queue_faces = Gauge("daa_queue_faces", "faces waiting for the model", registry=self.registry)
        self.requests_active = Gauge("daa_requests_active", "POST /estimate requests being served", registry=self.registry)

    def on_batch(self, faces: int, seconds: float) -> None:
        self.batch_size.observe(faces)
        self.model_seconds.observe(seconds)
