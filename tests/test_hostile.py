"""Hostile input against the real server (``python -m app``): each class of file or client gets a 200 or a precise
4xx within seconds, and the server's peak memory stays within its stated budget. The corpus is generated here."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from testkit import encode, fixture_bytes, proc_status_kib, running_service

pytestmark = pytest.mark.slow

MEMORY_BUDGET_MIB = 2048  # README: "peak memory of the service stays within 2 GiB whatever is uploaded"
FAST_S = 5.0  # every answer below comes within this


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, rows: int | None = None, colour: int = 0) -> bytes:
    """A greyscale (or RGB, colour=2) PNG declaring width x height; ``rows`` < height leaves the rest out."""
    samples = 3 if colour == 2 else 1
    raw = (b"\x00" + b"\x00" * width * samples) * (height if rows is None else rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def gif_screen(width: int, height: int) -> bytes:
    """A GIF whose logical screen is width x height, holding one 1x1 frame (a few dozen bytes)."""
    return (
        b"GIF89a"
        + struct.pack("<HH", width, height)
        + b"\x80\x00\x00"
        + b"\x00\x00\x00\xff\xff\xff"
        + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


def many_frames(frames: int = 300, size: int = 1000) -> bytes:
    """A small file with many large frames (each a flat colour, so it compresses to almost nothing)."""
    images = [Image.new("L", (size, size), i % 256) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:])
    return buf.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    env = {
        "DAA_BODY_TIMEOUT_S": "2",
        "DAA_HEADER_TIMEOUT_S": "2",
        "DAA_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024),
        "DAA_THREADS": "1",
    }
    with running_service(env) as (base, proc):
        yield base, proc.pid


def post(base: str, data: bytes, name: str = "x.png", **params: object) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = httpx.post(base + "/estimate", files={"file": (name, data, "application/octet-stream")}, params=params, timeout=60)
    return r, time.monotonic() - t0


def jpeg_with(before_scan: bytes = b"", before_end: bytes = b"") -> bytes:
    """The fixture portrait as a JPEG with bytes inserted after its SOI marker and before its EOI marker."""
    data = fixture_bytes("astronaut.jpg")
    return data[:2] + before_scan + data[2:-2] + before_end + data[-2:]


def bmp_rle8(width: int = 6324, height: int = 6324) -> bytes:
    """A 26 KB RLE8 BMP declaring width x height pixels: one pixel and an end-of-line code per row."""
    palette = b"\x00\x00\x00\x00" * 256
    rows = b"\x01\x7f\x00\x00" * height + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


def tiff_one_huge_tile(width: int = 64, height: int = 64, tile: tuple[int, int] = (32768, 21840)) -> bytes:
    """A little-endian TIFF whose width x height image is stored as one Deflate tile of ``tile`` pixels."""
    data = zlib.compress(b"\x00" * tile[0] * 64)
    entries = [(256, width), (257, height), (258, 8), (259, 8), (262, 1), (277, 1), (322, tile[0]), (323, tile[1])]
    fields = [struct.pack("<HHIHH", tag, 3, 1, value, 0) for tag, value in entries]
    fields += [struct.pack("<HHII", 324, 4, 1, 8), struct.pack("<HHII", 325, 4, 1, len(data))]
    ifd = struct.pack("<H", len(fields)) + b"".join(fields) + b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + ifd


def png_with(extra: bytes) -> bytes:
    """A small valid PNG with ``extra`` chunks after its header."""
    data = encode(Image.new("RGB", (32, 32), (90, 90, 90)), "PNG")
    return data[:33] + extra + data[33:]


def comment(payload: bytes) -> bytes:
    return b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload


CORPUS = {
    # name: (bytes, params, expected status, expected code or None)
    "thin 20000x10": (lambda: png(20000, 10), {}, 200, None),
    "thin 10x20000": (lambda: png(10, 20000), {}, 200, None),
    "thin 32768x10": (lambda: png(32768, 10), {}, 200, None),
    "thin 40000x10": (lambda: png(40000, 10), {}, 413, "image_too_large"),
    "line 100000x1": (lambda: png(100000, 1), {}, 413, "image_too_large"),
    "one pixel": (lambda: png(1, 1), {}, 200, None),
    "62-byte GIF with a 6000x6000 screen": (lambda: gif_screen(6000, 6000), {}, 200, None),
    "PNG declaring 6300x6300, holding 5 rows": (lambda: png(6300, 6300, rows=5), {}, 400, "truncated_image"),
    "blank 2500x2500": (lambda: png(2500, 2500), {}, 200, None),
    "blank 2500x2500, min_face_size=12": (lambda: png(2500, 2500), {"min_face_size": 12}, 422, "min_face_size_unsupported"),
    "blank 6000x6000 RGB": (lambda: png(6000, 6000, colour=2), {}, 200, None),
    "over the pixel limit": (lambda: gif_screen(9000, 9000), {}, 413, "image_too_large"),
    "300-frame GIF": (many_frames, {}, 200, None),
    "truncated JPEG": (lambda: fixture_bytes("group.jpg")[:5000], {}, 400, "truncated_image"),
    "JPEG header only": (lambda: fixture_bytes("group.jpg")[:200], {}, 400, None),
    "noise 1500x1500": (
        lambda: encode(
            Image.fromarray(np.random.default_rng(1).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)), "JPEG", quality=80
        ),
        {},
        200,
        None,
    ),
    "max_faces over the limit": (lambda: fixture_bytes("astronaut.jpg"), {"max_faces": 100}, 422, "validation_error"),
    "text": (lambda: b"hello, world" * 10, {}, 415, "unsupported_image_type"),
    # Counted as markers, not bytes: FF DA inside a comment is no scan (the photo is valid and has a face).
    "JPEG whose comment holds 101 FF DA": (lambda: jpeg_with(comment(b"\xff\xda" * 101)), {}, 200, None),
    "JPEG with 3 MB of fill bytes before EOI": (lambda: jpeg_with(before_end=b"\xff" * 3_000_000), {}, 400, "invalid_image"),
    "JPEG with 800,000 empty APP segments": (lambda: jpeg_with(b"\xff\xe1\x00\x02" * 800_000), {}, 400, "invalid_image"),
    "26 KB RLE8 BMP declaring 6324x6324": (bmp_rle8, {}, 415, "unsupported_image_type"),
    "TIFF of 64x64 stored as one 32768x21840 tile": (tiff_one_huge_tile, {}, 400, "invalid_image"),
    "PNG with 300,000 empty chunks": (lambda: png_with(_chunk(b"tEXt", b"") * 300_000), {}, 400, "invalid_image"),
    "PNG with 3 MB of iCCP": (
        lambda: png_with(_chunk(b"iCCP", b"x\x00\x00" + b"\x00" * 3_000_000)),
        {},
        400,
        "invalid_image",
    ),
    "EPS": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9000 9000\n" + b"0 0 moveto\n" * 100_000, {}, 415, None),
    "SVG": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', {}, 415, None),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_file_gets_a_precise_answer_fast(server, name):
    base, _ = server
    make, params, status, code = CORPUS[name]
    r, seconds = post(base, make(), **params)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    if code:
        assert r.json()["code"] == code
    if status >= 400:
        assert set(r.json()) == {"code", "message", "detail"}
    assert seconds < FAST_S, f"{name} took {seconds:.1f} s"
    print(f"hostile: {name}: {r.status_code} in {seconds:.2f} s")  # shown with pytest -s


def test_two_file_parts_are_refused(server):
    base, _ = server
    data = fixture_bytes("astronaut.jpg")
    r = httpx.post(base + "/estimate", files=[("file", ("a.jpg", data)), ("file", ("b.jpg", data))], timeout=30)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


def _raw(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        head += chunk
    return int(head.split(b" ")[1])


def _multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()


def test_a_1_gib_upload_is_refused_before_it_is_read(server):
    base, _ = server
    with _raw(base) as sock:
        t0 = time.monotonic()
        sock.sendall(
            b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1073741824\r\n\r\n" + _multipart_head("b")
        )
        assert _status(sock) == 413
        assert time.monotonic() - t0 < FAST_S


def test_an_oversized_stream_without_length_stops_at_the_limit(server):
    base, _ = server
    sent = [0]
    with _raw(base) as sock:
        sock.sendall(
            b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        head = _multipart_head("b")
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        block = b"\xff" * 65536
        chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"

        def send() -> None:  # far past the 4 MiB limit, if the server kept reading
            while sent[0] < 256 * 1024 * 1024:
                try:
                    sock.sendall(chunk)
                except OSError:
                    return
                sent[0] += len(block)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            status = _status(sock)
        except OSError:  # the server answered and closed while we were still sending: TCP may reset the answer
            status = 413
        assert status == 413
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(10)
    assert sent[0] < 64 * 1024 * 1024  # it stopped reading near the limit (plus what the socket buffers held)


def test_a_stalled_body_times_out(server):
    base, _ = server
    with _raw(base) as sock:
        t0 = time.monotonic()
        sock.sendall(
            b"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n" + _multipart_head("b")
        )
        assert _status(sock) == 408
        assert time.monotonic() - t0 < FAST_S + 2


def test_a_stalled_head_is_closed_and_health_stays_reachable(server):
    base, _ = server
    sockets = []
    for _ in range(200):  # many clients that open a connection and never finish their request head
        s = _raw(base)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)
    try:
        assert httpx.get(base + "/health", timeout=5).status_code == 200
        time.sleep(3)  # past DAA_HEADER_TIMEOUT_S=2
        s = sockets[0]
        s.settimeout(5)
        assert s.recv(1) == b""  # closed by the server
    finally:
        for s in sockets:
            s.close()


def test_a_busy_server_refuses_with_503_and_keeps_serving(server):
    base, _ = server
    heavy = png(3000, 3000, colour=2)
    with ThreadPoolExecutor(64) as pool:
        responses = list(pool.map(lambda _: post(base, heavy)[0], range(64)))
    codes = {r.status_code for r in responses}
    assert codes <= {200, 503}
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] and r.json()["code"] == "overloaded"
    r, _ = post(base, fixture_bytes("astronaut.jpg"), "a.jpg")
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_work_stops_for_clients_that_went_away(server):
    base, _ = server
    heavy = encode(Image.fromarray(np.random.default_rng(2).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)), "PNG")

    def abandon() -> None:
        try:
            httpx.post(base + "/estimate", files={"file": ("n.png", heavy)}, timeout=0.3)
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=abandon) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r, seconds = post(base, fixture_bytes("astronaut.jpg"), "a.jpg")
    assert r.status_code == 200
    assert seconds < 10, f"a request after 20 abandoned ones took {seconds:.1f} s"


def thin_png(height: int = 40_000_000) -> bytes:
    """1 x height RGBA zeros: ~200 KB, but Pillow keeps a pointer per row of every copy it makes."""
    packer = zlib.compressobj(9)
    chunks = [packer.compress(b"\0" * 5 * 100_000) for _ in range(height // 100_000)]  # filter byte + RGBA
    idat = b"".join(chunks) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", 1, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def progressive_jpeg_with_scans(extra_scans: int) -> bytes:
    """A small progressive JPEG followed by many extra (tiny) scans: each one more pass over every block."""
    base = encode(Image.new("L", (64, 64), 128), "JPEG", progressive=True)[:-2]
    scan = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0x00]) + bytes([1, 63, 0x00]) + b"\x00"
    return base + scan * extra_scans + b"\xff\xd9"


@pytest.mark.parametrize(
    "name,make,status,code",
    [
        ("1 x 40,000,000 RGBA PNG", thin_png, 413, "image_too_large"),
        ("progressive JPEG with 5,000 scans", lambda: progressive_jpeg_with_scans(5000), 400, "invalid_image"),
    ],
)
def test_files_whose_cost_is_not_in_their_pixels_are_refused(server, name, make, status, code):
    base, _ = server
    r, seconds = post(base, make())
    assert (r.status_code, r.json()["code"]) == (status, code), (name, r.text[:300])
    assert seconds < FAST_S


def test_a_long_multipart_boundary_is_a_400(server):
    base, _ = server
    r = httpx.post(
        base + "/estimate", content=b"", timeout=10, headers={"Content-Type": "multipart/form-data; boundary=" + "B" * 1000}
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_body"


def test_an_endless_request_head_is_cut_off(server):
    base, _ = server
    with _raw(base) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"X-a: b\r\n" * 8192)
                sent += 8 * 8192
        except OSError:
            pass  # closed by the server
        assert sent < 16 * 1024 * 1024
    assert httpx.get(base + "/health", timeout=2).status_code == 200


def test_a_large_upload_in_one_packet_is_not_mistaken_for_a_long_head(server):
    base, _ = server
    big = encode(Image.fromarray(np.random.default_rng(3).integers(0, 255, (700, 700, 3), dtype=np.uint8)), "PNG")
    assert len(big) > 1024 * 1024
    r, _ = post(base, big)
    assert r.status_code == 200


# The corpus members that cost the most memory (the widest canvases, the most frames, the most pixels).
HEAVIEST = [
    "thin 32768x10",
    "blank 6000x6000 RGB",
    "62-byte GIF with a 6000x6000 screen",
    "300-frame GIF",
    "noise 1500x1500",
]


def test_peak_memory_stays_within_budget(server):
    # Self-contained: it sends the heaviest files itself, four at once, so it holds alone or in any order.
    base, pid = server
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda name: post(base, CORPUS[name][0]())[0].status_code, HEAVIEST * 2))
    assert all(status < 500 for status in answers), answers
    peak = proc_status_kib(pid, "VmHWM") / 1024
    print(f"hostile: server peak RSS {peak:.0f} MiB (budget {MEMORY_BUDGET_MIB})")
    assert peak < MEMORY_BUDGET_MIB


def test_a_client_that_hangs_up_mid_body_is_counted_as_499_not_500(server):
    base, _ = server

    def counts() -> dict[str, float]:
        lines = httpx.get(base + "/metrics").text.splitlines()
        prefix = "daa_estimate_requests_total{"
        return {line.split('"')[1]: float(line.split()[-1]) for line in lines if line.startswith(prefix)}

    before = counts()
    boundary = "b0undary"
    head = (
        f"POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        "Content-Length: 200000\r\n\r\n"
    )
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'.encode()
    with _raw(base) as sock:
        sock.sendall(head.encode() + part + fixture_bytes("astronaut.jpg")[:5000])
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while counts().get("499", 0) <= before.get("499", 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    after = counts()
    assert after.get("499", 0) == before.get("499", 0) + 1
    assert after.get("500", 0) == before.get("500", 0)


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"b0undary") -> tuple[bytes, dict[str, str]]:
    """A multipart body of (part headers, content) pairs."""
    body = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts)
    return body + b"--" + boundary + b"--\r\n", {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}


@pytest.mark.parametrize(
    "name,parts",
    [
        ("50,000 empty parts", [(b'Content-Disposition: form-data; name="x"', b"")] * 50_000),
        ("a part header of 1 MB", [(b'Content-Disposition: form-data; name="x"; y="' + b"a" * 1_000_000 + b'"', b"")]),
    ],
)
def test_part_floods_are_refused_fast(server, name, parts):
    base, _ = server
    body, headers = multipart(parts)
    t0 = time.monotonic()
    r = httpx.post(base + "/estimate", content=body, headers=headers, timeout=30)
    assert (r.status_code, r.json()["code"]) == (400, "malformed_body"), (name, r.text[:200])
    assert time.monotonic() - t0 < FAST_S


def test_a_photo_with_a_few_other_fields_is_served(server):
    base, _ = server
    photo = (b'Content-Disposition: form-data; name="file"; filename="a.jpg"', fixture_bytes("astronaut.jpg"))
    body, headers = multipart([(b'Content-Disposition: form-data; name="note"', b"hello"), photo])
    r = httpx.post(base + "/estimate", content=body, headers=headers, timeout=60)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1
