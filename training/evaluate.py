"""Evaluate a checkpoint: MAE, CA(3/5/7) and MAE per decade, for one or more reference intervals (Table 7)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.checkpoint import load_checkpoint
from model.inference import predict, resolve_device, zero_denormal_weights
from model.ranges import RangeModel, range_report
from training.metrics import age_metrics, range_coverage
from training.preprocess import CropCache

if TYPE_CHECKING:
    from model.onnx_estimator import OnnxEstimator


def uncertainty_metrics(
    pred: np.ndarray, spread: np.ndarray, true: np.ndarray, range_model: RangeModel | None = None
) -> dict:
    """How honest the spread is: the rank correlation between spread and absolute error; the coverage of
    age +- 1.96 spread (a diagnostic of the spread alone); and, where the checkpoint has one, the coverage and width
    of the age range the service answers (its range model), overall and per decade."""
    err = np.abs(pred - true)
    if len(err) < 2:
        return {}
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    corr = float(np.corrcoef(rank(spread), rank(err))[0, 1]) if spread.std() > 0 else 0.0
    out: dict = {
        "mean_spread": round(float(spread.mean()), 3),
        "spread_1.96_coverage": round(range_coverage(pred, true, spread, 1.96), 4),
        "spearman_spread_vs_error": round(corr, 3),
    }
    if range_model is not None:
        out["service_age_range"] = range_report(range_model, pred, true, spread)
    return out


def evaluate(
    checkpoint: Path,
    data: CropCache,
    intervals: list[int],
    device: str = "auto",
    flip: bool = False,
    batch_size: int = 256,
    payload: dict | None = None,
) -> dict:
    """``payload``: the checkpoint as :func:`model.checkpoint.read_checkpoint` returned it, if already read."""
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, map_location=dev, payload=payload)
    zero_denormal_weights(model)
    ranges = RangeModel.from_dict(meta["range_model"]) if isinstance(meta.get("range_model"), dict) else None

    def run(interval: int) -> tuple[np.ndarray, np.ndarray]:
        return predict(model, data.crops, dev, batch_size, interval=interval, flip=flip)

    return _report(checkpoint, model.config.to_dict(), meta, ranges, data, intervals, flip, run)


def evaluate_graph(graph: Path, data: CropCache, intervals: list[int], flip: bool = False, batch_size: int = 64) -> dict:
    """:func:`evaluate` for an exported ONNX graph (e.g. a ``training quantize`` one), served as the service serves
    it (:class:`model.onnx_estimator.OnnxEstimator`, its own range model)."""
    from model.onnx_estimator import OnnxEstimator

    est = OnnxEstimator(graph, flip_tta=flip)

    def run(interval: int) -> tuple[np.ndarray, np.ndarray]:
        return graph_predictions(est, data.crops, interval, batch_size)

    return _report(graph, est.config.to_dict(), est.metadata, est.range_model, data, intervals, flip, run)


def graph_predictions(
    est: OnnxEstimator, crops: np.ndarray, interval: int = 1, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Ages and spreads of ``crops`` (N x S x S x 3 uint8, may be memory-mapped) from a graph, a batch at a time."""
    chunks = (np.asarray(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size))
    out = [r for chunk in chunks for r in est.estimate(chunk, interval)]
    return np.array([r.age for r in out]), np.array([r.spread for r in out])


def _report(
    checkpoint: Path,
    config: dict,
    meta: dict,
    ranges: RangeModel | None,
    data: CropCache,
    intervals: list[int],
    flip: bool,
    run: Callable[[int], tuple[np.ndarray, np.ndarray]],
) -> dict:
    """The evaluation report of any model: ``run(interval)`` gives its ages and spreads on ``data.crops``."""
    report: dict = {
        "checkpoint": str(checkpoint),
        "model": config,
        "images": len(data),
        "no_face_fallbacks": int((~data.detected).sum()),
        "flip_tta": flip,
        "results": {},
    }
    for k in intervals:
        t0 = time.time()
        pred, spread = run(k)
        res = age_metrics(pred, data.ages)
        res["uncertainty"] = uncertainty_metrics(pred, spread, data.ages, ranges)
        res["seconds"] = round(time.time() - t0, 1)
        report["results"][str(k)] = res
        if k == intervals[0]:
            report["predictions"] = {
                "names": data.names,
                "true": data.ages.tolist(),
                "pred": np.round(pred, 3).tolist(),
                "spread": np.round(spread, 4).tolist(),
            }
        print(
            f"interval {k:>2}: MAE {res['mae']:.3f}  CA3 {res['ca3']:.1f}  CA5 {res['ca5']:.1f}  CA7 {res['ca7']:.1f}",
            flush=True,
        )
    report["training_metadata"] = {k: v for k, v in meta.items() if k != "split"}
    return report


def write_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
