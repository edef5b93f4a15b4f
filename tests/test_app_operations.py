"""Health, readiness, model info, metrics, the OpenAPI contract, and start-up failures."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from model.checkpoint import CheckpointError
from testkit import fixture_bytes, post_image


def test_health_ready_model(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["device"] == "cpu"
    info = client.get("/model").json()
    arch = info["architecture"]  # the shipped model is an ensemble: its config lists the members' configs
    nets = arch.get("members", [arch])
    assert nets and all(m["daa_mode"] == "binary" for m in nets)
    assert info["name"] == arch["name"]
    assert info["reference_ages"] == list(range(100)) and info["reference_intervals"] == [1, 2, 5, 10, 20, 50]
    assert info["parameters"] > 1000
    assert info["crop"]["size"] == 150


def test_metrics_count_requests(client):
    post_image(client, fixture_bytes("astronaut.jpg"))
    text = client.get("/metrics").text
    assert 'daa_estimate_requests_total{status="200"}' in text
    assert "daa_model_batch_faces_bucket" in text


def test_openapi_contract(client):
    schema = client.get("/openapi.json").json()
    ops = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert ops == {"estimate_age", "get_health", "get_readiness", "get_model_info", "get_metrics"}
    assert schema["info"]["version"]
    est = schema["paths"]["/estimate"]["post"]
    for status in ("400", "413", "415", "422", "500", "503"):
        assert est["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert "examples" in schema["components"]["schemas"]["EstimateResponse"]


def test_missing_checkpoint_fails_startup(tmp_path):
    app = create_app(Settings(checkpoint=tmp_path / "absent.pt"))
    with pytest.raises(CheckpointError, match="file not found"):
        with TestClient(app):
            pass


def test_not_ready_before_startup():
    client = TestClient(create_app())  # no context manager: lifespan not run
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["code"] == "not_ready"


@pytest.mark.slow
def test_corrupt_checkpoint_exits_nonzero_with_message(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    proc = subprocess.run(
        [sys.executable, "-m", "app"],
        env={"DAA_CHECKPOINT": str(bad), "DAA_PORT": "8599", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and "not a readable checkpoint" in proc.stderr
