"""The committed OpenAPI schema is current, and a client generated from it calls the real service."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from app.openapi_export import openapi_json
from testkit import FIXTURES, ROOT, running_service


def test_committed_openapi_json_is_current():
    committed = (ROOT / "openapi.json").read_text()
    assert committed == openapi_json(), "openapi.json is stale: run python -m app.openapi_export openapi.json"


@pytest.mark.slow
def test_generated_python_client_estimates_age_with_a_key(tmp_path):
    gen = subprocess.run(
        [
            sys.executable,
            str(ROOT / "clients" / "generate.py"),
            "--out",
            str(tmp_path / "gen"),
            "--schema",
            str(tmp_path / "openapi.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0, gen.stderr
    site = tmp_path / "site"
    inst = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--target",
            str(site),
            str(tmp_path / "gen" / "daa-age-client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inst.returncode == 0, inst.stderr
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        from daa_age_client import AuthenticatedClient, Client
        from daa_age_client.api.estimation import estimate_age
        from daa_age_client.api.operations import get_readiness
        from daa_age_client.models import BodyEstimateAge, ErrorResponse, EstimateResponse
        from daa_age_client.types import File

        def body(fh):
            return BodyEstimateAge(file=File(payload=fh, file_name="astronaut.jpg", mime_type="image/jpeg"))

        anonymous = Client(base_url=sys.argv[1], timeout=60)
        assert get_readiness.sync(client=anonymous).ready  # readiness stays open
        with open({str(FIXTURES / "astronaut.jpg")!r}, "rb") as fh:
            refused = estimate_age.sync_detailed(client=anonymous, body=body(fh))
        assert refused.status_code == 401 and isinstance(refused.parsed, ErrorResponse), refused
        assert refused.parsed.code == "unauthorized"
        client = AuthenticatedClient(base_url=sys.argv[1], token="s3cret-key", timeout=60)  # Authorization: Bearer
        with open({str(FIXTURES / "astronaut.jpg")!r}, "rb") as fh:
            result = estimate_age.sync(client=client, body=body(fh))
        assert isinstance(result, EstimateResponse), result
        face = result.faces[0]
        print(len(result.faces), round(face.age, 1), len(face.delta_ages))
    """)
    with running_service({"DAA_API_KEYS": "other-key,s3cret-key"}) as (base, _):
        run = subprocess.run([sys.executable, "-c", script, base], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    n_faces, age, n_deltas = run.stdout.split()
    assert n_faces == "1" and 15 < float(age) < 70 and n_deltas == "100"
