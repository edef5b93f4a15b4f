"""What int8 costs and saves: a checkpoint's encoder quantised with ONNX Runtime, against the float one it serves.

    python -m benchmarks.quantize_bench --checkpoint models/daa-dlibface150-distilled-utkface.pt \
        --cache cache/utkface150-yunet --split models/utkface-split-seed0.json [--calibrate 256] [--rounds 40]

The encoder's convolutional body (what ``model/onnx_runtime.py`` runs on CPU) is exported as the service exports
it, then statically quantised (QDQ, int8 weights per channel, uint8 activations calibrated on ``--calibrate``
crops of the split's *train* part, ``onnxruntime.quantization``). Both run inside the same served network (the DAA
head stays float) on the split's *validation* crops: MAE, and the largest age difference between the two. Time
per face of the whole model call at one face per call, one thread, interleaved (A B A B), medians.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from model.ensemble import networks
from model.estimator import Estimator
from training.preprocess import load_cache


def body_onnx(encoder: torch.nn.Module, size: int) -> bytes:
    body = copy.deepcopy(encoder).eval()
    body.adapter = torch.nn.Identity()
    buf = io.BytesIO()
    torch.onnx.export(
        body, (torch.zeros(2, 3, size, size),), buf, dynamo=False, input_names=["input0"], output_names=["output0"],
        dynamic_axes={"input0": {0: "batch"}, "output0": {0: "batch"}}, opset_version=17,
    )  # fmt: skip
    return buf.getvalue()


def quantised(model: bytes, calibration: np.ndarray, adapter: Any) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(range(0, len(calibration), 16))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.items, None)
            if i is None:
                return None
            x = torch.from_numpy(calibration[i : i + 16]).permute(0, 3, 1, 2).float() / 255.0
            return {"input0": adapter(x).numpy()}

    folder = Path("runs/quantize")
    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / "float.onnx", folder / "int8.onnx"
    src.write_bytes(model)
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return dst.read_bytes()


def session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def evaluate(est: Estimator, crops: np.ndarray, ages: np.ndarray) -> tuple[float, np.ndarray]:
    pred = np.array([r.age for i in range(0, len(crops), 64) for r in est.estimate(np.asarray(crops[i : i + 64]), 1)])
    return float(np.abs(pred - ages).mean()), pred


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True, help="crop cache made with the checkpoint's crop")
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--calibrate", type=int, default=256, help="train crops to calibrate the activations on")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quantize_bench.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cache = load_cache(args.cache)
    split = json.loads(args.split.read_text())
    index = {n: i for i, n in enumerate(cache.names)}
    rng = np.random.default_rng(0)
    train = np.sort(rng.permutation([index[n] for n in split["train"] if n in index])[: args.calibrate])
    val = np.array(sorted(index[n] for n in split["val"] if n in index))
    crops, ages = np.asarray(cache.crops[val]), cache.ages[val]

    est = Estimator(args.checkpoint, "cpu", runtime="onnxruntime", threads=1)
    torch_est = Estimator(args.checkpoint, "cpu", runtime="torch", threads=1)
    nets, torch_nets = networks(est.model), networks(torch_est.model)
    floats = [n.encoder.body.session for n in nets]
    int8s = []
    for tnet in torch_nets:
        model = body_onnx(tnet.encoder, tnet.encoder.adapter.size)
        int8s.append(session(quantised(model, np.asarray(cache.crops[train]), tnet.encoder.adapter)))

    def use(sessions: list[ort.InferenceSession]) -> None:
        for net, s in zip(nets, sessions):
            net.encoder.body.session = s

    use(floats)
    mae_float, pred_float = evaluate(est, crops, ages)
    use(int8s)
    mae_int8, pred_int8 = evaluate(est, crops, ages)
    one = crops[:1]
    times: dict[str, list[float]] = {"float": [], "int8": []}
    for _ in range(args.rounds + 1):
        for name, sessions in (("float", floats), ("int8", int8s)):
            use(sessions)
            t0 = time.perf_counter()
            est.estimate(one, 1)
            times[name].append((time.perf_counter() - t0) * 1000)
    ms = {k: round(statistics.median(v[1:]), 2) for k, v in times.items()}
    result = {
        "checkpoint": str(args.checkpoint),
        "val_images": len(val),
        "calibration_crops": len(train),
        "val_mae_float": round(mae_float, 4),
        "val_mae_int8": round(mae_int8, 4),
        "max_age_difference": round(float(np.abs(pred_float - pred_int8).max()), 3),
        "ms_per_face_float": ms["float"],
        "ms_per_face_int8": ms["int8"],
        "speed_up": round(ms["float"] / ms["int8"], 3),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
