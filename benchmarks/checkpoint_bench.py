"""Per-face model time of served checkpoints: the :class:`model.estimator.Estimator` exactly as the service builds
it (runtime, flip setting, denormal-free weights), from crops to ages, side by side.

    python -m benchmarks.checkpoint_bench --checkpoints models/a.pt models/b.pt [--batches 1,8] [--threads 1]

Checkpoints are interleaved within every round (a, b, a, b, ...) and medians reported, with each one's ratio to
the first checkpoint's median taken round by round, because this kind of machine's speed drifts within a minute.
Detection and decoding are not included: ``benchmarks/peer_bench.py`` measures the whole pipeline.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from model.estimator import Estimator


def bench(estimators: dict[str, Estimator], batch: int, min_seconds: float, min_rounds: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    crops = {
        k: rng.integers(0, 256, (batch, e.crop_spec.size, e.crop_spec.size, 3), dtype=np.uint8)
        for k, e in estimators.items()
    }
    for k, e in estimators.items():  # warm-up: first calls build kernels and caches
        e.estimate(crops[k], 1)
        e.estimate(crops[k], 1)
    times: dict[str, list[float]] = {k: [] for k in estimators}
    start, rounds = time.perf_counter(), 0
    while rounds < min_rounds or time.perf_counter() - start < min_seconds:
        for k, e in estimators.items():
            t0 = time.perf_counter()
            e.estimate(crops[k], 1)
            times[k].append((time.perf_counter() - t0) / batch * 1000)
        rounds += 1
    first = next(iter(times))
    return {
        k: {
            "ms_per_face": round(statistics.median(v), 3),
            "ratio_to_first": round(statistics.median([a / b for a, b in zip(v, times[first])]), 3),
            "rounds": rounds,
        }
        for k, v in times.items()
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=Path, nargs="+", required=True)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--runtime", default="auto", help="as DAA_RUNTIME: auto, torch or onnxruntime")
    p.add_argument("--flip", action="store_true", help="as DAA_FLIP_TTA=true")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (the service's default: 1)")
    p.add_argument("--seconds", type=float, default=10.0, help="minimum measuring time per batch size")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/checkpoint_bench.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    estimators = {str(c): Estimator(c, "cpu", args.flip, args.runtime, threads=args.threads) for c in args.checkpoints}
    where = f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
    print(f"machine: {where}; runtime {next(iter(estimators.values())).runtime}; flip {args.flip}")
    print(f"{'checkpoint':<48} {'params':>10} {'batch':>5} {'ms/face':>8} {'x first':>8}")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for k, r in bench(estimators, batch, args.seconds, args.rounds).items():
            rows.append({"checkpoint": k, "parameters": estimators[k].parameters, "batch": batch, **r})
            print(
                f"{k:<48} {estimators[k].parameters:>10,} {batch:>5} {r['ms_per_face']:>8.2f} {r['ratio_to_first']:>7.2f}x",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": where, "flip": args.flip, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
