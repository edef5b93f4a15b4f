"""A short load-and-soak run against a real uvicorn (the full 10,000-request run is benchmarks/soak.py)."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak


@pytest.mark.slow
def test_soak_no_errors_and_bounded_memory():
    result = soak(requests=400, concurrency=16)
    assert result["errors"] == {}, result["statuses"]
    assert result["statuses"].get(200, 0) > 0
    assert result["rss_growth"] < 0.10, result["rss_kib"]
