"""Closed-loop HTTP load against a running service: N requests from C concurrent clients, latency and memory."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter

import httpx

from testkit import proc_status_kib


def rss_kib(pid: int) -> int:
    return proc_status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return proc_status_kib(pid, "VmHWM")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_load(
    base: str,
    photos: list[bytes],
    requests: int,
    concurrency: int,
    pid: int | None = None,
    rss_marks: tuple[int, ...] = (),
    params: dict | None = None,
    timeout: float = 120.0,
) -> dict:
    """Send ``requests`` POST /estimate calls, cycling through ``photos``; returns statuses, latencies (ms),
    throughput and the server's RSS (KiB) when the request counter passes each mark."""
    lock = threading.Lock()
    counter = {"next": 0, "done": 0}
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    rss: dict[int, int] = {}

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=timeout) as client:
            while True:
                with lock:
                    i = counter["next"]
                    if i >= requests:
                        return
                    counter["next"] += 1
                data = photos[i % len(photos)]
                t0 = time.perf_counter()
                try:
                    status = client.post(
                        "/estimate", files={"file": ("p.jpg", data, "image/jpeg")}, params=params or {}
                    ).status_code
                except httpx.HTTPError:
                    status = -1
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    statuses[status] += 1
                    latencies.append(ms)
                    counter["done"] += 1
                    if pid is not None and counter["done"] in rss_marks:
                        rss[counter["done"]] = rss_kib(pid)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if pid is not None:
        rss[requests] = rss_kib(pid)
    ok = [ms for ms in latencies]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "statuses": dict(statuses),
        "images_per_s": round(requests / wall, 2),
        "wall_s": round(wall, 1),
        "p50_ms": round(percentile(ok, 50), 1),
        "p95_ms": round(percentile(ok, 95), 1),
        "p99_ms": round(percentile(ok, 99), 1),
        "mean_ms": round(statistics.fmean(ok), 1),
        "rss_kib": rss,
        "peak_rss_kib": peak_rss_kib(pid) if pid is not None else None,
    }
