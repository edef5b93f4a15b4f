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


def requests_by_status(client) -> dict[str, float]:
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("daa_estimate_requests_total{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def test_every_answer_is_counted_by_its_own_status(client, monkeypatch):
    before = requests_by_status(client)
    post_image(client, fixture_bytes("astronaut.jpg"), max_faces=0)  # 422 from request validation
    post_image(client, b"")  # 400 from the pipeline

    def no_memory(*_, **__):
        raise MemoryError

    monkeypatch.setattr(client.app.state.service, "prepare", no_memory)
    assert post_image(client, fixture_bytes("astronaut.jpg")).json()["code"] == "out_of_memory"
    monkeypatch.undo()
    service, client.app.state.service = client.app.state.service, None
    try:
        assert post_image(client, fixture_bytes("astronaut.jpg")).json()["code"] == "not_ready"
    finally:
        client.app.state.service = service
    after = requests_by_status(client)
    gained = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert gained == {**{k: 0 for k in after}, "422": 1, "400": 1, "503": 2}


def test_api_errors_are_only_codes_the_api_answers(client):
    from app.errors import STATUS
    from model.errors import ErrorCode

    enum = client.get("/openapi.json").json()["components"]["schemas"]["ErrorCode"]["enum"]
    assert set(enum) == {c.value for c in ErrorCode} == {c.value for c in STATUS}
    assert "no_face" not in enum and "file_not_readable" not in enum  # bulk rows only (model.errors.RowCode)


def test_library_defaults_are_the_service_defaults(monkeypatch):
    import inspect

    from app.batching import MicroBatcher
    from model.detection import DetectorSettings
    from model.estimator import Estimator
    from model.options import PipelineLimits

    for name in [k for k in __import__("os").environ if k.startswith("DAA_")]:
        monkeypatch.delenv(name)
    s = Settings()
    assert s.detector_settings() == DetectorSettings() and s.pipeline_limits() == PipelineLimits()
    est = inspect.signature(Estimator).parameters
    assert (est["flip_tta"].default, est["runtime"].default, est["device"].default) == (s.flip_tta, s.runtime, s.device)
    batcher = inspect.signature(MicroBatcher).parameters
    assert batcher["max_wait_s"].default * 1000 == s.max_wait_ms and batcher["max_batch"].default == s.max_batch_size
    assert batcher["max_queue"].default == s.max_queue


def test_openapi_contract(client):
    schema = client.get("/openapi.json").json()
    ops = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert ops == {"estimate_age", "estimate_video", "get_health", "get_readiness", "get_model_info", "get_metrics"}
    assert schema["info"]["version"]
    for path in ("/estimate", "/estimate/video"):
        est = schema["paths"][path]["post"]
        for status in ("400", "413", "415", "422", "500", "503"):
            assert est["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
        body = est["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert schema["components"]["schemas"][body]["required"] == ["file"]
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


def test_readme_lists_every_setting():
    from testkit import ROOT

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Settings") :]
    for name in Settings.model_fields:
        assert f"`DAA_{name.upper()}`" in table, f"DAA_{name.upper()} is missing from README's settings table"
