"""Helpers that the tests and the benchmarks share: fixture photos, image encoding, box overlap, an in-process
client, and the one way to start the real service (``python -m app``) on a free loopback port."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT / "tests" / "fixtures"


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
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
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
