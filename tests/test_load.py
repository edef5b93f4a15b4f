"""A short load-and-soak run against a real uvicorn (the full 10,000-request run is benchmarks/soak.py)."""

from __future__ import annotations

import pytest

from benchmarks.soak import MAX_GROWTH_KIB, soak


@pytest.mark.slow
def test_soak_no_errors_and_bounded_memory():
    result = soak(requests=400, concurrency=16)
    assert result["errors"] == {}, result["statuses"]
    assert result["statuses"].get(200, 0) > 0
    start, end = result["rss_kib"][result["rss_mark"]], result["rss_kib"][400]
    assert end - start < MAX_GROWTH_KIB, result["rss_kib"]
