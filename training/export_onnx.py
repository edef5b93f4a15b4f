"""The whole DAA network as one ONNX graph, for serving without torch (``model/onnx_estimator.py``), Triton,
OpenVINO or any ONNX runtime.

    python -m training export-onnx --checkpoint models/daa-dlibface150-distilled-utkface.pt   # writes ...onnx beside it

The graph takes the crops as the pipeline makes them (``crops``: N x S x S x 3 uint8, RGB, S the checkpoint's crop
size; dynamic N) and runs the encoder, the binary code mapping (S and T folded in as constants), the DAA operation,
the AgeDecoder and Eq. 9 for every one of the R references. Outputs: ``estimates`` (N x M x R: each member's
y - delta_y, M = 1 for one network), and for all references ``age`` (N), ``spread`` (N) and ``deltas`` (N x R, the
members' weighted mean). Every other reference interval and flip averaging are computed from ``estimates``
(:mod:`model.onnx_estimator`), exactly as the torch network computes them. The checkpoint's metadata travels in
the graph's metadata (``daa.*`` keys: name, version, config, crop, range model, member weights, licence).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from model.checkpoint import load_checkpoint
from model.ensemble import DAAEnsemble, crop_window, networks
from model.network import DAANet

OPSET = 20  # affine_grid (ensemble members read windows of the canvas) needs 20


class ServedGraph(nn.Module):
    """uint8 crops -> every member's per-reference estimates, and the pooled age, spread and deltas."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.members = networks(model)
        ensemble = model if isinstance(model, DAAEnsemble) else None
        self.canvas = ensemble.config.crop if ensemble else self.members[0].config.crop
        self.crops = [m.config.crop for m in self.members]
        self.weights = ensemble.config.member_weights() if ensemble else [1.0]

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = crops.permute(0, 3, 1, 2).float() / 255.0
        outs = [m(crop_window(x, self.canvas, c), interval=1) for m, c in zip(self.members, self.crops)]
        refs = outs[0].references.to(x.dtype)
        estimates = torch.stack([refs.unsqueeze(0) - o.deltas for o in outs], 1)  # N x M x R
        w = torch.tensor(self.weights, dtype=x.dtype).view(1, -1, 1) / refs.numel()
        age = (estimates * w).sum((1, 2))
        spread = (((estimates - age.view(-1, 1, 1)) ** 2) * w).sum((1, 2)).clamp_min(0).sqrt()
        deltas = sum(wm * o.deltas for wm, o in zip(self.weights, outs))
        assert isinstance(deltas, torch.Tensor)
        return estimates, age, spread, deltas


def metadata(model: Any, meta: dict[str, Any], graph: ServedGraph) -> dict[str, str]:
    kept = ("version", "licence", "range_model", "range_factor_95", "metrics", "split", "data", "code_version")
    keep = {k: meta[k] for k in kept if k in meta}
    return {
        "daa.name": model.config.name,
        "daa.version": str(meta.get("version", meta.get("code_version", "unknown"))),
        "daa.config": json.dumps(model.config.to_dict()),
        "daa.crop": json.dumps(graph.canvas.to_dict()),
        "daa.weights": json.dumps(graph.weights),
        "daa.num_references": str(graph.members[0].config.num_references),
        "daa.parameters": str(sum(p.numel() for p in model.parameters())),
        "daa.metadata": json.dumps(keep),
        "daa.licence": str(meta.get("licence", "")),
    }


def _antialiased_bilinear(g: Any, x: Any, output_size: Any, align_corners: Any, *scales: Any) -> Any:
    """``F.interpolate(mode="bilinear", antialias=True)`` (encoders resizing their crop, ensemble windows) as ONNX
    Resize with ``antialias`` (opset 18+), which the TorchScript exporter lacks: the same triangle filter widened by
    the reduction factor, half-pixel centres. ``check`` holds the result to the torch network."""
    from torch.onnx import symbolic_helper

    size = symbolic_helper._maybe_get_const(output_size, "is")
    # Enlarging, the widened filter is plain bilinear (torch ignores antialias then too), and ONNX Runtime's
    # antialias kernel is the slower one: FaceRes's 150 -> 160 px resize took 0.14 ms more per face with it.
    known = symbolic_helper._get_tensor_sizes(x) or []
    spatial = known[2:] if len(known) == 4 else []
    enlarging = len(spatial) == 2 and all(s is not None and int(s) <= int(o) for s, o in zip(spatial, size))
    batch_channels = g.op("Slice", g.op("Shape", x), g.op("Constant", value_t=torch.tensor([0])),
                          g.op("Constant", value_t=torch.tensor([2])))  # fmt: skip
    sizes = g.op("Concat", batch_channels, g.op("Constant", value_t=torch.tensor(list(size), dtype=torch.int64)), axis_i=0)
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op(
        "Resize", x, empty, empty, sizes, mode_s="linear", antialias_i=0 if enlarging else 1,
        coordinate_transformation_mode_s="half_pixel",
    )  # fmt: skip


def export_onnx(checkpoint: Path, out: Path | None = None) -> Path:
    """Write ``checkpoint`` as one ONNX graph (default: beside it, ``.onnx``); returns the path."""
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _antialiased_bilinear, OPSET)
    model, meta = load_checkpoint(checkpoint, map_location="cpu")
    graph = ServedGraph(model)
    size = graph.canvas.size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    buf = io.BytesIO()
    with torch.no_grad():
        # One run first fills each AgeDecoder's W * 1 map (it depends only on the weights and the map size), so
        # the trace records it as a constant instead of a convolution of ones computed on every call.
        graph(example)
        torch.onnx.export(
            graph, (example,), buf,  # type: ignore[arg-type]  # (a buffer works)
            dynamo=False, opset_version=OPSET, input_names=["crops"],
            output_names=["estimates", "age", "spread", "deltas"],
            dynamic_axes={k: {0: "faces"} for k in ("crops", "estimates", "age", "spread", "deltas")},
        )  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in metadata(model, meta, graph).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"DAA age estimator {model.config.name} (Chen et al., CVPR 2023); crops N x {size} x {size} x 3 uint8"
    out = out or checkpoint.with_suffix(".onnx")
    onnx.save(proto, str(out))
    return out


def check(checkpoint: Path, onnx_path: Path, crops: np.ndarray) -> float:
    """The largest age difference between the exported graph and the torch network on ``crops``."""
    import onnxruntime as ort

    model, _ = load_checkpoint(checkpoint, map_location="cpu")
    with torch.no_grad():
        ref = model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0).age.numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["age"], {"crops": crops})[0]
    return float(np.abs(got - ref).max())


__all__ = ["DAANet", "ServedGraph", "check", "export_onnx"]
