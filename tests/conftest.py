from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"


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
