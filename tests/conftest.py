"""Shared fixtures only; shared helper functions live in ``testkit`` (the benchmarks use them too)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from testkit import FIXTURES, make_client


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    with make_client() as c:
        yield c


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    return Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
