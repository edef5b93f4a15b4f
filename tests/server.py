"""Start the real service (``python -m app``, the command the README and the image use) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(env: dict[str, str] | None = None, timeout: float = 180.0,
                    log_path: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    full_env = {**os.environ, "DAA_HOST": "127.0.0.1", "DAA_PORT": str(port), "DAA_LOG_LEVEL": "warning",
                **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=full_env, stdout=log,
                            stderr=subprocess.STDOUT if log_path else None)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited with {proc.returncode} before it was ready")
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("service not ready in time")
            time.sleep(0.3)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()
