"""Bad input: each class gets its 4xx and the one error body, and the service keeps serving afterwards."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from testkit import FIXTURES, encode, fixture_bytes, make_client, post_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message", "detail"}
    assert body["code"] == code and body["message"]


@pytest.mark.parametrize(
    "data,filename,ctype,status,code",
    [
        (b"", "empty.jpg", "image/jpeg", 400, "empty_file"),
        (b"this is not an image at all", "notes.txt", "text/plain", 415, "unsupported_image_type"),
        (
            b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
            "doc.pdf",
            "application/pdf",
            415,
            "unsupported_image_type",
        ),
        (fixture_bytes("astronaut.jpg")[:3000], "cut.jpg", "image/jpeg", 400, "truncated_image"),
        (png_header_only(50000, 50000), "bomb.png", "image/png", 413, "image_too_large"),
        (encode(Image.new("RGB", (8, 8)), "PPM"), "x.ppm", "image/x-portable-pixmap", 415, "unsupported_image_type"),
    ],
)
def test_bad_uploads(client, data, filename, ctype, status, code):
    assert_error(post_image(client, data, filename, ctype), status, code)


def test_missing_file_field(client):
    assert_error(client.post("/estimate"), 422, "validation_error")
    assert_error(client.post("/estimate", data={"photo": "x"}), 422, "validation_error")


def test_invalid_options(client):
    for params in ({"max_faces": 0}, {"min_face_size": 2}, {"reference_interval": 7}, {"include_deltas": "maybe"}):
        assert_error(post_image(client, fixture_bytes("astronaut.jpg"), **params), 422, "validation_error")


def test_tiny_image_has_no_face(client):
    r = post_image(client, encode(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"), "one.png", "image/png")
    assert r.status_code == 200 and r.json()["faces"] == []


def test_wrong_content_type_is_judged_by_content(client):
    r = post_image(client, fixture_bytes("astronaut.jpg"), "photo.bin", "application/octet-stream")
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_byte_and_pixel_limits_are_settings():
    with make_client(max_upload_bytes=10_000, max_image_pixels=50_000) as c:
        assert_error(post_image(c, fixture_bytes("astronaut.jpg")), 413, "file_too_large")
        small = encode(Image.open(FIXTURES / "rocket.jpg").resize((300, 300)), "JPEG", quality=30)
        assert len(small) < 10_000
        r = post_image(c, small)
        assert_error(r, 413, "image_too_large")
        assert r.json()["detail"]["max_pixels"] == 50_000


def test_service_keeps_serving_after_garbage(client):
    for junk in (b"\x00" * 100, b"\xff\xd8\xff\xe0garbage", png_header_only(10, 10)):
        assert 400 <= post_image(client, junk).status_code < 500
    r = post_image(client, fixture_bytes("astronaut.jpg"))
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_unknown_route_uses_error_model(client):
    assert_error(client.get("/nope"), 404, "not_found")
