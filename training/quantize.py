"""An exported graph with its encoder in int8, for CPUs: ONNX Runtime static quantisation, the range refitted.

    python -m training quantize --graph models/daa-dlibface150-distilled-utkface.onnx \
        --cache cache/utkface150-yunet --split models/utkface-split-seed0.json \
        --out models/daa-dlibface150-distilled-utkface.int8.onnx

The encoder's convolutions (the graph's ``/encoder/`` Conv nodes: nearly all of its arithmetic) but its stem (the
first, which reads the normalised pixels) are quantised QDQ, weights int8 per output channel, activations uint8
calibrated on ``--calibrate`` crops of the split's *train* part at the 99.999th percentile of each tensor
(``--calibration minmax``: at its extremes); the binary code mapping, the DAA operation and the AgeDecoder stay
float, so every reference's delta is still computed in float from int8 features. Quantisation moves each face's
age and spread a little, so the 95% range is refitted on the split's *validation* crops run through the int8
graph (``model/ranges.py``), and the graph's metadata records what was measured there (float and int8 MAE, the
largest age difference).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from model.onnx_estimator import OnnxEstimator
from model.ranges import fit_range_model, range_report
from training.evaluate import graph_predictions
from training.preprocess import CropCache

CALIBRATION_BATCH = 16
# FaceRes-deep at 160 px (a MobileNet: 13 depthwise convolutions), 800 validation faces: float MAE 3.529; every
# convolution in int8 with min-max ranges 4.23 (one face moved 17.8 years on the whole split); the stem kept float
# 3.61; the stem float and percentile ranges 3.519, 1.32x faster than float. The dlib ResNet barely cared (+0.01).
# Each --calibration choice and the onnxruntime.quantization.CalibrationMethod it names (imported with ONNX
# Runtime's quantisation, only when a graph is quantised); the first is the default.
CALIBRATIONS = {"percentile": "Percentile", "minmax": "MinMax"}
DEFAULT_CALIBRATION = next(iter(CALIBRATIONS))


def encoder_convolutions(model: onnx.ModelProto, stem: bool = False) -> list[str]:
    """The encoder's convolutions to quantise, in graph order; the first (the stem) only if ``stem``."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv" and "/encoder/" in n.name]
    return convs if stem else convs[1:]


def _batches(crops: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    for i in range(0, len(crops), CALIBRATION_BATCH):
        yield {"crops": np.ascontiguousarray(crops[i : i + CALIBRATION_BATCH], dtype=np.uint8)}


def quantise_encoder(
    graph: Path, calibration: np.ndarray, out: Path, method: str = DEFAULT_CALIBRATION, stem: bool = False
) -> int:
    """Write ``graph`` with its encoder's convolutions in int8 (metadata copied unchanged) to ``out``; returns how
    many convolutions were quantised. ``method``: how activation ranges are calibrated (:data:`CALIBRATIONS`);
    ``stem``: quantise the first convolution too."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if method not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {list(CALIBRATIONS)}, got {method!r}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    source = onnx.load(str(graph))
    nodes = encoder_convolutions(source, stem)
    if not nodes:
        raise ValueError(f"{graph} has no encoder convolutions to quantise")
    quantize_static(
        str(graph), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
        calibrate_method=CalibrationMethod[CALIBRATIONS[method]],
    )  # fmt: skip
    set_metadata(out, {p.key: p.value for p in source.metadata_props}, keep=False)
    return len(nodes)


def set_metadata(path: Path, props: dict[str, str], keep: bool = True) -> None:
    """Write ``props`` into the graph's metadata, over its own (``keep``) or instead of them."""
    model = onnx.load(str(path))
    merged = {p.key: p.value for p in model.metadata_props} if keep else {}
    merged.update(props)
    del model.metadata_props[:]
    for key, value in merged.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def quantise(
    graph: Path,
    cache: CropCache,
    split: dict[str, list[str]],
    out: Path,
    calibrate: int = 256,
    seed: int = 0,
    method: str = DEFAULT_CALIBRATION,
    stem: bool = False,
) -> dict[str, Any]:
    """Quantise, refit the range on validation, record the figures in the graph; returns them. ``cache``: crops
    made with the graph's crop (``training/__main__.py`` checks that)."""
    index = {n: i for i, n in enumerate(cache.names)}
    rng = np.random.default_rng(seed)
    train = np.sort(rng.permutation([index[n] for n in split["train"] if n in index])[:calibrate])
    val = np.array(sorted(index[n] for n in split["val"] if n in index))
    crops, ages = np.asarray(cache.crops[val]), cache.ages[val].astype(np.float64)
    float_est = OnnxEstimator(graph, flip_tta=False)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "int8.onnx"
        convolutions = quantise_encoder(graph, np.asarray(cache.crops[train]), staged, method, stem)
        pred_float, _ = graph_predictions(float_est, crops)
        pred, spread = graph_predictions(OnnxEstimator(staged, flip_tta=False), crops)
        ranges = fit_range_model(pred, ages, spread)
        metadata = dict(float_est.metadata)
        metadata["range_model"] = ranges.to_dict()
        figures = {
            "weights": "int8, per output channel",
            "activations": "uint8, calibrated",
            "convolutions": convolutions,
            "stem": "int8" if stem else "float",
            "calibration": method,
            "calibration_crops": int(len(train)),
            "val_images": int(len(val)),
            "val_mae_float": round(float(np.abs(pred_float - ages).mean()), 4),
            "val_mae_int8": round(float(np.abs(pred - ages).mean()), 4),
            "max_age_difference": round(float(np.abs(pred - pred_float).max()), 3),
            "val_range": range_report(ranges, pred, ages, spread),
        }
        metadata["quantisation"] = figures
        version = str(float_est.metadata.get("version", "unknown"))
        metadata["version"] = f"{version}+int8"
        updates = {"daa.metadata": json.dumps(metadata), "daa.version": metadata["version"]}
        set_metadata(staged, {**updates, "daa.quantisation": json.dumps(figures)})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(staged.read_bytes())
    return figures
