from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"


def iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def make_client(**overrides) -> TestClient:
    return TestClient(create_app(Settings(**overrides)))


@pytest.fixture(scope="session")
def client():
    with make_client() as c:
        yield c


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    return Image.open(FIXTURES / "astronaut.jpg").convert("RGB")


def post_image(client: TestClient, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg",
               **params):
    return client.post("/estimate", files={"file": (filename, data, content_type)}, params=params)
