"""API keys and CORS, in-process on the real app (the generated-client test and the page test use keys against a
real server too)."""

from __future__ import annotations

import pytest

from app.settings import Settings
from testkit import fixture_bytes, make_client, post_image

KEY = "k3y-for-tests"


@pytest.fixture(scope="module")
def keyed():
    with make_client(api_keys=f"first-key,{KEY}", flip_tta=False) as c:
        yield c


def test_without_a_key_estimate_and_model_answer_401(keyed):
    for r in (post_image(keyed, fixture_bytes("astronaut.jpg")), keyed.get("/model")):
        assert r.status_code == 401
        assert r.json()["code"] == "unauthorized" and set(r.json()) == {"code", "message", "detail"}
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_a_wrong_key_is_refused(keyed):
    r = post_image(keyed, fixture_bytes("astronaut.jpg"))
    assert r.status_code == 401
    r = keyed.post("/estimate", files={"file": ("a.jpg", fixture_bytes("astronaut.jpg"))}, headers={"X-API-Key": KEY + "x"})
    assert r.status_code == 401
    assert keyed.get("/model", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_either_header_carries_a_key(keyed):
    r = keyed.post("/estimate", files={"file": ("a.jpg", fixture_bytes("astronaut.jpg"))}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
    assert keyed.get("/model", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_health_ready_page_and_metrics_stay_open(keyed):
    for path in ("/health", "/ready", "/", "/metrics"):
        assert keyed.get(path).status_code == 200, path


def test_metrics_can_need_a_key():
    with make_client(api_keys=KEY, metrics_need_key=True, flip_tta=False) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200


def test_keys_from_a_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# one per line\nfile-key\n\n")
    settings = Settings(api_keys_file=keys)
    assert settings.keys() == ["file-key"]
    with pytest.raises(FileNotFoundError):  # a missing secret fails closed
        Settings(api_keys_file=tmp_path / "absent").keys()


def test_schema_declares_both_schemes(keyed):
    schema = keyed.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerKey"}
    assert schema["paths"]["/estimate"]["post"]["security"] == [{"ApiKeyHeader": []}, {"BearerKey": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_cors_preflight_from_an_allowed_and_a_refused_origin():
    allowed = "https://app.example.org"
    with make_client(cors_origins=allowed, flip_tta=False) as c:
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
        ok = c.options("/estimate", headers={"Origin": allowed, **ask})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
        refused = c.options("/estimate", headers={"Origin": "https://evil.example.com", **ask})
        assert refused.status_code == 400 and refused.json()["code"] == "cors_refused"
        assert not [h for h in refused.headers if h.startswith("access-control-allow")]
        simple = c.get("/health", headers={"Origin": allowed})
        assert simple.headers["access-control-allow-origin"] == allowed


def test_a_trailing_slash_is_a_json_404_and_docs_can_be_off(client):
    r = client.post("/estimate/")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.get("/docs").status_code == 200
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(api_docs=False))) as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200


def test_no_cors_by_default(client):
    r = client.options("/estimate", headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.slow
def test_keys_and_cors_on_a_real_server():
    import httpx

    from testkit import running_service

    allowed = "https://app.example.org"
    env = {"DAA_API_KEYS": KEY, "DAA_CORS_ORIGINS": allowed}
    with running_service(env) as (base, _):
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
        ok = httpx.options(base + "/estimate", headers={"Origin": allowed, **ask})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        refused = httpx.options(base + "/estimate", headers={"Origin": "https://evil.example.com", **ask})
        assert "access-control-allow-origin" not in refused.headers
        files = {"file": ("a.jpg", fixture_bytes("astronaut.jpg"), "image/jpeg")}
        assert httpx.post(base + "/estimate", files=files, timeout=60).status_code == 401
        r = httpx.post(base + "/estimate", files=files, headers={"Origin": allowed, "X-API-Key": KEY}, timeout=60)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
