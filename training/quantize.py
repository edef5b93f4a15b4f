"""An exported graph with its encoder in int8, for CPUs: ONNX Runtime static quantisation, the range refitted.

    python -m training quantize --graph models/daa-faceres160-distilled-utkface.onnx \
        --cache cache/utkface150-yunet --split models/utkface-split-seed0.json \
        --out models/daa-faceres160-distilled-utkface.int8.onnx

The encoder's convolutions (the graph's ``/encoder/`` Conv nodes: nearly all of its arithmetic) but its stem (the
first, which reads the normalised pixels) and its depthwise ones, and the AgeDecoder's convolution (run once per
face on the normalised and the raw feature map, Eq. 7 factorised), are quantised QDQ, weights int8 per output
channel, activations uint8 calibrated on ``--calibrate`` crops of the split's *train* part at the 99.999th
percentile of each tensor (``--calibration minmax``: at its extremes). The binary code mapping, the DAA
operation and the rest of the AgeDecoder stay float, so every reference's delta is combined in float.
Quantisation moves each face's age and spread a little, so the 95% range is refitted on the split's *validation*
crops run through the int8 graph (``model/ranges.py``), and the graph's metadata records what was measured there
(float and int8 MAE, the largest age difference).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
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


# The 160 px FaceRes student, one face per call, one thread, 15 interleaved rounds (ad-hoc timing of the ONNX
# Runtime session, 2026-12-02): every encoder convolution but the stem in int8 4.94 ms; the depthwise ones float
# too 4.66; the decoder's convolution in int8 as well 4.05 (the default dlibface150 graph: 3.83). Validation MAE
# 4.8722, 4.8791 and 4.8726 against 4.7899 in float: ONNX Runtime's int8 depthwise kernel is slower than its float
# one here, and the decoder's convolution loses nothing to int8.


@dataclass(frozen=True)
class Selection:
    """Which convolutions go int8: the encoder's, and optionally its stem and depthwise ones, and the decoder's."""

    stem: bool = False
    depthwise: bool = False
    decoder: bool = True

    def convolutions(self, model: onnx.ModelProto) -> list[str]:
        """The Conv nodes to quantise, in graph order."""
        encoder = [n for n in model.graph.node if n.op_type == "Conv" and "/encoder/" in n.name]
        chosen = [n.name for i, n in enumerate(encoder) if (i > 0 or self.stem) and (self.depthwise or _group(n) == 1)]
        # a graph exported before W * 1 was folded in convolves a ConstantOfShape of ones too: not worth int8
        ones = {o for n in model.graph.node if n.op_type == "ConstantOfShape" for o in n.output}
        decoder = [
            n.name for n in model.graph.node if n.op_type == "Conv" and "/encoder/" not in n.name and n.input[0] not in ones
        ]
        return chosen + (decoder if self.decoder else [])

    def describe(self) -> dict[str, str]:
        return {
            "stem": "int8" if self.stem else "float",
            "depthwise": "int8" if self.depthwise else "float",
            "decoder_conv": "int8" if self.decoder else "float",
        }


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _batches(crops: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    for i in range(0, len(crops), CALIBRATION_BATCH):
        yield {"crops": np.ascontiguousarray(crops[i : i + CALIBRATION_BATCH], dtype=np.uint8)}


def quantise_encoder(
    graph: Path,
    calibration: np.ndarray,
    out: Path,
    method: str = DEFAULT_CALIBRATION,
    selection: Selection = Selection(),
) -> int:
    """Write ``graph`` with the ``selection``'s convolutions in int8 (metadata copied unchanged) to ``out``; returns
    how many were quantised. ``method``: how activation ranges are calibrated (:data:`CALIBRATIONS`)."""
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
    nodes = selection.convolutions(source)
    if not nodes:
        raise ValueError(f"{graph} has no convolutions to quantise")
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
    selection: Selection = Selection(),
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
        convolutions = quantise_encoder(graph, np.asarray(cache.crops[train]), staged, method, selection)
        pred_float, _ = graph_predictions(float_est, crops)
        pred, spread = graph_predictions(OnnxEstimator(staged, flip_tta=False), crops)
        ranges = fit_range_model(pred, ages, spread)
        metadata = dict(float_est.metadata)
        metadata["range_model"] = ranges.to_dict()
        figures = {
            "weights": "int8, per output channel",
            "activations": "uint8, calibrated",
            "convolutions": convolutions,
            **selection.describe(),
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
