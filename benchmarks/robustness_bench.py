"""Validation MAE of graphs on degraded crops: which image damage costs a model how much.

    python -m benchmarks.robustness_bench --cache cache/utkface150-yunet --split models/utkface-split-seed0.json \
        --graphs models/daa-faceres160-distilled-utkface.int8.onnx models/daa-dlibface150-distilled-utkface.int8.onnx

Each degradation is applied to the split's validation crops as the pipeline made them (so it damages the face and
what the crop holds around it, not the detection): Gaussian blur, JPEG at a low quality, darker light, low
resolution (the crop shrunk and enlarged back, bilinear), and blur with JPEG together. It separates what a model
loses to each from the rest of what differs in video frames (``benchmarks/video_bench.py``).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from model.onnx_estimator import OnnxEstimator
from training.evaluate import graph_predictions
from training.preprocess import load_cache


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(buf).convert("RGB")


def _lowres(im: Image.Image, side: int) -> Image.Image:
    return im.resize((side, side), Image.Resampling.BILINEAR).resize(im.size, Image.Resampling.BILINEAR)


DEGRADATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "clean": lambda im: im,
    "blur 1 px": lambda im: im.filter(ImageFilter.GaussianBlur(1.0)),
    "blur 2 px": lambda im: im.filter(ImageFilter.GaussianBlur(2.0)),
    "jpeg q30": lambda im: _jpeg(im, 30),
    "light 0.8": lambda im: ImageEnhance.Brightness(im).enhance(0.8),
    "low-res 75 px": lambda im: _lowres(im, 75),
    "low-res 50 px": lambda im: _lowres(im, 50),
    "blur 1 px + jpeg q30": lambda im: _jpeg(im.filter(ImageFilter.GaussianBlur(1.0)), 30),
}


def degrade(crops: np.ndarray, how: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(how(Image.fromarray(c)), dtype=np.uint8) for c in crops])


def run(cache_dir: Path, split: dict[str, list[str]], graphs: list[Path], limit: int | None = None) -> dict:
    cache = load_cache(cache_dir)
    index = {n: i for i, n in enumerate(cache.names)}
    val = np.array(sorted(index[n] for n in split["val"] if n in index))[:limit]
    crops, ages = np.asarray(cache.crops[val]), cache.ages[val].astype(np.float64)
    estimators = {str(g): OnnxEstimator(g, flip_tta=False) for g in graphs}
    for name, est in estimators.items():
        if est.crop_spec.size != crops.shape[1]:
            raise SystemExit(f"{name} reads {est.crop_spec.size} px crops, {cache_dir} holds {crops.shape[1]} px")
    results: dict[str, dict[str, float]] = {}
    for label, how in DEGRADATIONS.items():
        damaged = degrade(crops, how)
        results[label] = {
            name: round(float(np.abs(graph_predictions(est, damaged)[0] - ages).mean()), 3)
            for name, est in estimators.items()
        }
        print(label, results[label], flush=True)
    return {"images": int(len(val)), "mae": results}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="crop cache made with the graphs' crop")
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--graphs", type=Path, nargs="+", required=True, help="ONNX graphs (export-onnx or quantize)")
    p.add_argument("--limit", type=int, help="only the first N validation crops")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/robustness_bench.json"))
    args = p.parse_args(argv)
    result = run(args.cache, json.loads(args.split.read_text()), args.graphs, args.limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
