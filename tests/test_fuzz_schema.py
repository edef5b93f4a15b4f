"""Schemathesis against the live service's own OpenAPI schema: no generated request may cause a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from testkit import running_service  # noqa: E402


@pytest.fixture(scope="module")
def api_schema():
    with running_service() as (base, _):
        yield schemathesis.openapi.from_url(base + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call(timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:  # every error uses the one error model
        assert set(response.json()) == {"code", "message", "detail"}
