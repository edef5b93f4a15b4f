"""Per-face latency of the encoder, the direct DAA head and the factorised DAA head.

    python -m benchmarks.model_bench [--batches 1,8,32] [--encoders resnet18,c3ae,dlib_resnet] [--device cpu]

On CPU, with ONNX Runtime installed, the encoder also runs as the service runs it there (``OrtEncoder``).
Variants are interleaved (encoder, direct, factorised, encoder, ...) and medians reported, because this kind of
machine's speed drifts within a minute; the head speed-up is the ratio of medians measured side by side.
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from model.config import ModelConfig
from model.daa import channel_stats, daa, reference_ages
from model.factory import build_model
from model.onnx_runtime import OrtEncoder, onnxruntime_available


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(encoder: str, batch: int, device: torch.device, repeats: int, min_seconds: float) -> dict:
    model = build_model(ModelConfig(encoder=encoder)).to(device).eval()
    x = torch.rand(batch, 3, 128, 128, device=device)
    refs = reference_ages(100, 1).to(device)
    with torch.inference_mode():
        e = model.encoder(x)
        s, t = model.mapping(refs)
        mu, sigma = channel_stats(e, model.config.eps)
        e_hat = (e - mu) / sigma
        variants = {
            "encoder": lambda: model.encoder(x),
            "direct_head": lambda: model.decoder(daa(e, s, t, model.config.eps)),
            "factorised_head": lambda: model.decoder.factorised(e, e_hat, s, t),
        }
        if device.type == "cpu" and onnxruntime_available():
            ort_encoder = OrtEncoder(model.encoder)
            variants["encoder_onnxruntime"] = lambda: ort_encoder(x)
        for fn in variants.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        start = time.perf_counter()
        rounds = 0
        while rounds < repeats or time.perf_counter() - start < min_seconds:
            for name, fn in variants.items():
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append((time.perf_counter() - t0) / batch * 1000)
            rounds += 1
            if rounds >= 200:
                break
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [d / f for d, f in zip(times["direct_head"], times["factorised_head"])]
    out = {
        "encoder": encoder,
        "batch": batch,
        "rounds": rounds,
        **{f"{k}_ms_per_face": round(v, 4) for k, v in med.items()},
        "head_speedup": round(statistics.median(ratios), 1),
    }
    if "encoder_onnxruntime" in times:
        out["onnxruntime_encoder_speedup"] = round(
            statistics.median([a / b for a, b in zip(times["encoder"], times["encoder_onnxruntime"])]), 2
        )
    return out


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--encoders", default="resnet18,c3ae,dlib_resnet")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/model_bench.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_flush_denormal(True)
    rows = []
    print(f"machine: {machine(device)}; torch {torch.__version__}")
    print(
        f"{'encoder':<12} {'batch':>5} {'encoder ms':>11} {'direct ms':>10} {'factorised ms':>14} {'speed-up':>9} "
        f"{'ORT encoder ms':>15} {'ORT speed-up':>13}"
    )
    for enc in args.encoders.split(","):
        for b in (int(v) for v in args.batches.split(",")):
            r = bench(enc, b, device, args.repeats, args.min_seconds)
            rows.append(r)
            print(
                f"{enc:<12} {b:>5} {r['encoder_ms_per_face']:>11.3f} {r['direct_head_ms_per_face']:>10.3f} "
                f"{r['factorised_head_ms_per_face']:>14.3f} {r['head_speedup']:>8.1f}x "
                f"{r.get('encoder_onnxruntime_ms_per_face', float('nan')):>15.3f} "
                f"{r.get('onnxruntime_encoder_speedup', float('nan')):>12.2f}x",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": machine(device), "device": str(device), "torch": torch.__version__, "per_face_ms": rows}, indent=1
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
