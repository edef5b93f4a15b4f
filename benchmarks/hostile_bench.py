"""Hostile input against a real server while a normal client keeps using it: what each class costs, and whether
the normal client and /health notice.

    python -m benchmarks.hostile_bench [--env DAA_KEY=VALUE ...] [--repeat 3] [--out FILE]

One ``python -m app`` with README's defaults (plus ``--env``). In the background, all the time: a normal client
posting the fixture portrait once a second (latency p50/p95) and a /health poller every 0.2 s (p50/p95/max).
Meanwhile, one class at a time:

- every file of the hostile corpus (``testkit.CORPUS``) and two that only the decode limits stop (a valid JPEG
  whose decode takes most of a second; a PNG that decodes to 108 MB), each sent ``--repeat`` times, four at once:
  status, code, wall seconds (max), CPU seconds of the server and its decode processes per file (from /proc);
- slow bodies: 32 connections sending one byte a second for 10 s;
- a burst: 200 clients at once each uploading 10 MB; how many read a 503 with its JSON body, and how many saw a
  connection reset or an unreadable answer.

Peak resident memory of the server and its decode processes (sum of their VmHWM) at the end. JSON out.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from testkit import (
    CORPUS,
    blank_png,
    fixture_bytes,
    gradient_jpeg,
    proc_status_kib,
    process_tree,
    process_tree_cpu_s,
    running_service,
)

EXTRA: dict[str, Callable[[], bytes]] = {
    "valid 6000x6000 JPEG (860 KB, ~0.9 s to decode and search)": gradient_jpeg,
    "valid 6000x6000 PNG (108 MB decoded)": lambda: blank_png(6000),
}


class Background:
    """The normal client (a photo a second) and the /health poller, until stopped."""

    def __init__(self, base: str) -> None:
        self.base, self.stop = base, threading.Event()
        self.photo_s: list[float] = []
        self.photo_errors: list[int] = []
        self.health_s: list[float] = []
        self.threads = [threading.Thread(target=self._photos), threading.Thread(target=self._health)]

    def _photos(self) -> None:
        data = fixture_bytes("astronaut.jpg")
        with httpx.Client(timeout=60) as c:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.post(self.base + "/estimate", files={"file": ("a.jpg", data)})
                    if r.status_code == 200:
                        self.photo_s.append(time.monotonic() - t0)
                    else:
                        self.photo_errors.append(r.status_code)
                except httpx.HTTPError:
                    self.photo_errors.append(0)
                self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    def _health(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    c.get(self.base + "/health")
                    self.health_s.append(time.monotonic() - t0)
                except httpx.HTTPError:
                    self.health_s.append(30.0)
                self.stop.wait(0.2)

    def __enter__(self) -> Background:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def mark(self) -> tuple[int, int, int]:
        return len(self.photo_s), len(self.photo_errors), len(self.health_s)

    def since(self, mark: tuple[int, int, int]) -> dict[str, Any]:
        photos, health = self.photo_s[mark[0] :], self.health_s[mark[2] :]
        return {
            "normal_p95_s": round(_p95(photos), 3) if photos else None,
            "normal_errors": self.photo_errors[mark[1] :],
            "health_p95_ms": round(_p95(health) * 1000, 1) if health else None,
            "health_max_ms": round(max(health) * 1000, 1) if health else None,
        }


def _p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.95 * len(values)))]


def post(base: str, data: bytes, params: dict[str, Any]) -> tuple[int, str | None, float]:
    t0 = time.monotonic()
    try:
        r = httpx.post(base + "/estimate", files={"file": ("x", data)}, params=params, timeout=120)
        code = r.json().get("code") if r.headers.get("content-type", "").startswith("application/json") else None
        return r.status_code, code, time.monotonic() - t0
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__, time.monotonic() - t0


def probe_files(base: str, pid: int, bg: Background, repeat: int) -> list[dict[str, Any]]:
    classes: dict[str, tuple[Callable[[], bytes], dict[str, Any]]] = {
        name: (make, params) for name, (make, params, *_rest) in CORPUS.items()
    }
    classes.update({name: (make, {}) for name, make in EXTRA.items()})
    rows = []
    for name, (make, params) in classes.items():
        data = make()
        mark, cpu0 = bg.mark(), process_tree_cpu_s(pid)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(post, [base] * repeat, [data] * repeat, [params] * repeat))
        cpu = (process_tree_cpu_s(pid) - cpu0) / repeat
        rows.append(
            {
                "class": name,
                "bytes": len(data),
                "status": sorted({a[0] for a in answers}),
                "code": sorted({str(a[1]) for a in answers}),
                "wall_s_max": round(max(a[2] for a in answers), 2),
                "cpu_s_per_file": round(cpu, 2),
                **bg.since(mark),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=60)


PART_HEAD = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
PART_TAIL = b"\r\n--b0undary--\r\n"


def _head(body_size: int) -> bytes:
    """A POST /estimate request head for a multipart body of ``body_size`` bytes (boundary ``b0undary``)."""
    return (
        "POST /estimate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        f"Content-Length: {body_size}\r\n\r\n"
    ).encode()


def slow_bodies(base: str, bg: Background, connections: int = 32, seconds: float = 10.0) -> dict[str, Any]:
    sockets = [_connect(base) for _ in range(connections)]
    mark = bg.mark()
    for s in sockets:
        s.sendall(_head(100_000) + PART_HEAD)
    closed_at: list[float] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for s in list(sockets):
            try:
                s.sendall(b"x")
            except OSError:
                closed_at.append(time.monotonic() - t0)
                sockets.remove(s)
        time.sleep(1.0)
    for s in sockets:
        s.close()
    return {
        "class": f"{connections} connections sending a byte a second for {seconds:g} s",
        "cut_off": len(closed_at),
        "cut_off_after_s_max": round(max(closed_at), 1) if closed_at else None,
        **bg.since(mark),
    }


def burst(base: str, bg: Background, clients: int = 200, size: int = 10 * 1024 * 1024) -> dict[str, Any]:
    body = PART_HEAD + b"\xff\xd8" + bytes(size) + PART_TAIL
    request = _head(len(body)) + body

    def one(_: int) -> str:
        try:
            with _connect(base) as s:
                s.sendall(request)
                answer = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                    if b"\r\n\r\n" in answer:
                        head_part, body = answer.split(b"\r\n\r\n", 1)
                        length = [
                            int(h.split(b":")[1])
                            for h in head_part.split(b"\r\n")
                            if h.lower().startswith(b"content-length")
                        ]
                        if length and len(body) >= length[0]:
                            break
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1") else "none"
            if status == "503":
                json.loads(answer.split(b"\r\n\r\n", 1)[1])
                return "503 readable"
            return status
        except (OSError, ValueError) as exc:
            return type(exc).__name__

    mark = bg.mark()
    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, range(clients)))
    counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    return {
        "class": f"{clients} clients at once, {size >> 20} MB each",
        "outcomes": counts,
        "wall_s": round(time.monotonic() - t0, 1),
        **bg.since(mark),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", action="append", default=[], help="DAA_KEY=VALUE for the server")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile.json"))
    args = p.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    with running_service(env) as (base, proc), Background(base) as bg:
        time.sleep(2)
        files = probe_files(base, proc.pid, bg, args.repeat)
        slow = slow_bodies(base, bg)
        print(json.dumps(slow), flush=True)
        flood = burst(base, bg)
        print(json.dumps(flood), flush=True)
        peaks = {pid: proc_status_kib(pid, "VmHWM") / 1024 for pid in process_tree(proc.pid)}
        overall = bg.since((0, 0, 0))
    result = {
        "env": env,
        "files": files,
        "slow_bodies": slow,
        "burst": flood,
        "peak_rss_mib_sum": round(sum(peaks.values())),
        "processes": len(peaks),
        "normal_client_overall": {**overall, "photos": len(bg.photo_s), "p50_s": round(statistics.median(bg.photo_s), 3)},
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("files",)}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
