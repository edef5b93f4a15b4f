"""End-to-end service benchmark: images/s and latency p50/p95/p99 at 1, 4 and 16 concurrent clients, for photos
from 200x200 to 1920x1080, with cross-request batching on and off, and the server's peak memory.

    python -m benchmarks.service_bench [--requests 48] [--utkface DIR]

Two real uvicorn servers run side by side (batching on: max batch 32, no wait, so faces that queue while the
model is busy share its next call; off: max batch 1)
and are measured alternately, because this machine's speed drifts. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from benchmarks.load import run_load
from benchmarks.photos import benchmark_photos
from testkit import running_service

CONFIGS = {
    "batching": {"DAA_MAX_BATCH_SIZE": "32", "DAA_MAX_WAIT_MS": "0"},
    "no-batching": {"DAA_MAX_BATCH_SIZE": "1", "DAA_MAX_WAIT_MS": "0"},
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=48, help="requests per cell")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--sizes", default="200x200,512x512,1280x720,1920x1080")
    p.add_argument("--utkface", type=Path, help="200x200 UTKFace chips instead of the fixture portrait")
    p.add_argument("--threads", default=None, help="DAA_THREADS for both servers")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/service_bench.json"))
    args = p.parse_args(argv)
    photos = benchmark_photos(args.utkface)
    rows = []
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, env in CONFIGS.items():
            env = dict(env, **({"DAA_THREADS": args.threads} if args.threads else {}))
            servers[name] = stack.enter_context(running_service(env))
        for base, _ in servers.values():  # warm-up
            run_load(base, photos["200x200"][:1], 4, 1)
        print(f"{'photos':<10} {'conc':>4} {'mode':<12} {'img/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for size in args.sizes.split(","):
            for conc in (int(c) for c in args.concurrency.split(",")):
                for name, (base, proc) in servers.items():
                    r = run_load(base, photos[size], args.requests, conc, pid=proc.pid)
                    r.update(photos=size, mode=name)
                    rows.append(r)
                    bad = {s: n for s, n in r["statuses"].items() if s != 200}
                    print(
                        f"{size:<10} {conc:>4} {name:<12} {r['images_per_s']:>7.2f} {r['p50_ms']:>8.1f} "
                        f"{r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f}" + (f"  non-200: {bad}" if bad else ""),
                        flush=True,
                    )
        peaks = {name: rows[-1 if name == "no-batching" else -2]["peak_rss_kib"] for name in servers}
    print("peak RSS (MiB): " + ", ".join(f"{k} {v / 1024:.0f}" for k, v in peaks.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "peak_rss_kib": peaks}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
