"""Helpers that the tests and the benchmarks share: fixture photos, image encoding, box overlap, an in-process
client, and the one way to start the real service (``python -m app``) on a free loopback port."""

from __future__ import annotations

import contextlib
import fractions
import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT / "tests" / "fixtures"
# The default network as a torch checkpoint (the service serves it as an int8 ONNX graph on CPU).
DEFAULT_NETWORK = ROOT / "models" / "daa-faceres160-distilled-utkface.pt"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@contextlib.contextmanager
def make_client(timeout: float = 180.0, **overrides: Any) -> Iterator[Any]:
    """An in-process ``TestClient`` on an app with these settings, yielded once its model has loaded (the app
    answers /ready with 503 while it loads)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(**overrides))) as client:
        deadline = time.monotonic() + timeout
        while client.get("/ready").status_code != 200:
            if client.app.state.startup_error is not None:
                raise RuntimeError(f"the app failed to load: {client.app.state.startup_error}")
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not become ready in time")
            time.sleep(0.1)
        yield client


def post_image(
    client: Any, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg", **params: Any
) -> Any:
    return client.post("/estimate", files={"file": (filename, data, content_type)}, params=params)


def proc_status_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc/PID/status, in KiB: ``VmRSS`` (resident now) or ``VmHWM`` (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (uvicorn's worker processes, for one)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        # Each thread's children are listed under its own task (a process started from a thread is not the
        # main thread's child there).
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and the processes below it, from /proc: what a server
    spent, whatever the load generator beside it spent."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(base: str, proc: subprocess.Popen, timeout: float = 180.0, log_path: Path | None = None) -> None:
    """Poll ``base``/ready until it answers 200; raise (with the log's tail, if any) if the process exits first or
    the time runs out."""

    def tail() -> str:
        return ":\n" + log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before it was ready{tail()}")
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"service not ready in {timeout:g} s{tail()}")
        time.sleep(0.3)


@contextlib.contextmanager
def running_service(
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
    log_path: Path | None = None,
    python_args: list[str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``python -m app`` (the command README and the image use; ``python_args`` replace ``-m app``) and
    yield (base URL, process) once /ready answers 200; stop it afterwards."""
    port = free_port()
    full_env = {**os.environ, "DAA_HOST": "127.0.0.1", "DAA_PORT": str(port), "DAA_LOG_LEVEL": "warning", **(env or {})}
    log: Any = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, *(python_args or ["-m", "app"])],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT if log_path else None,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, timeout, log_path)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()


# The hostile corpus: files built to cost more than their bytes (tests/test_hostile.py, benchmarks/hostile_bench.py).


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


# Video clips made from photos (tests/test_video.py, benchmarks/video_bench.py): nothing committed, nothing fetched.


def encode_clip(
    frames: Iterable[Image.Image], fps: float = 30, codec: str = "libx264", fmt: str = "mp4", **opts: Any
) -> bytes:
    """Frames (RGB images of one size) as a clip in memory, with PyAV."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = None
        for i, image in enumerate(frames):
            if stream is None:
                stream = out.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1000), options=opts)
                stream.width, stream.height = image.size
                stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
            frame = av.VideoFrame.from_image(image)
            frame.pts = i
            out.mux(stream.encode(frame))
        if stream is not None:
            out.mux(stream.encode())
    return buf.getvalue()


def moving_faces(
    faces: list[Image.Image],
    size: tuple[int, int] = (640, 480),
    seconds: float = 3.0,
    fps: float = 30,
    face_side: int = 160,
    crossing: bool = False,
) -> Iterator[Image.Image]:
    """Frames of ``faces`` pasted on a grey background, each moving along its own line (across each other when
    ``crossing``), slowly scaling and brightening."""
    w, h = size
    n = len(faces)
    steps = int(seconds * fps)
    for i in range(steps):
        k = i / max(steps - 1, 1)
        canvas = Image.new("RGB", size, (70, 72, 75))
        for j, face in enumerate(faces):
            side = int(face_side * (0.9 + 0.2 * k))
            lane = (j + 0.5) / n
            if crossing:
                x = (lane + (1 - 2 * lane) * k) * (w - side)
            else:
                x = lane * (w - side) + 20 * np.sin(2 * np.pi * k)
            y = (h - side) / 2 + (j - (n - 1) / 2) * side * 0.15
            shade = 0.85 + 0.3 * k
            tile = face.resize((side, side)).point(lambda v, s=shade: min(255, int(v * s)))
            canvas.paste(tile, (int(x), int(y)))
        yield canvas


FIXTURE_FACE_BOXES = {  # what the default detector finds in the fixture photos (x1, y1, x2, y2)
    "astronaut.jpg": [(113, 40, 168, 109)],
    "group.jpg": [(77, 136, 168, 246), (283, 167, 351, 249)],
}


def fixture_faces(margin: float = 1.8) -> list[Image.Image]:
    """Square chips around the faces of the fixture photos: the astronaut and two of the group."""
    chips = []
    for name, boxes in FIXTURE_FACE_BOXES.items():
        photo = Image.open(FIXTURES / name).convert("RGB")
        for x1, y1, x2, y2 in boxes:
            cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * margin
            chips.append(photo.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))))
    return chips


def gradient_jpeg(side: int = 6000) -> bytes:
    """A valid 6000x6000 JPEG of under 1 MB whose decode and search take most of a second of CPU here."""
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    return encode(Image.fromarray(np.stack([np.tile(ramp, (side, 1))] * 3, -1)), "JPEG", quality=90)


def blank_png(side: int) -> bytes:
    """A flat side x side RGB PNG: a small file that decodes to 3 x side^2 bytes."""
    return encode(Image.new("RGB", (side, side), (80, 80, 80)), "PNG")


def made_up_cache(folder: Path, size: int, count: int = 40, seed: int = 0) -> list[str]:
    """A crop cache as ``training preprocess`` writes it (crops.npy + index.csv) of random crops aged 5, 7, ...;
    returns the names, for a split file."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)
    names = [f"{i}.jpg" for i in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "crops.npy", rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))
    with open(folder / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "age", "subject", "detected"])
        w.writerows([n, 5 + i * 2, "", 1] for i, n in enumerate(names))
    return names
