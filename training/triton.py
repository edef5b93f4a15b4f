"""A Triton Inference Server model repository for an exported DAA graph (``python -m training export-onnx``).

    python -m training triton --graph models/daa-dlibface150-distilled-utkface.onnx --out model_repository
    tritonserver --model-repository=$PWD/model_repository     # (Triton itself is not run by this project)

writes ``model_repository/<name>/1/model.onnx`` and ``model_repository/<name>/config.pbtxt``: the ONNX Runtime
backend, dynamic batching over faces, the input and outputs as the graph declares them (batch dimension left to
Triton). A client sends uint8 crops made by :func:`model.faces.crop_face` with the graph's crop spec (in its
``daa.crop`` metadata) and computes Eq. 9 at any reference interval from ``estimates`` as
:mod:`model.onnx_estimator` does.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

TRITON_TYPES = {
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(float)": "TYPE_FP32",
    "tensor(int64)": "TYPE_INT64",
}


def _tensor(name: str, kind: str, shape: list[Any]) -> str:
    dims = [int(d) for d in shape[1:]]  # the first dimension is the batch Triton forms
    text = (
        f'  {{\n    name: "{name}"\n    data_type: {TRITON_TYPES[kind]}\n    dims: [ {", ".join(map(str, dims or [1]))} ]\n'
    )
    if not dims:  # one value per face: Triton's dims need a size, the graph gives none
        text += "    reshape: { shape: [ ] }\n"
    return text + "  }"


def config_pbtxt(graph: Path, name: str, max_batch_size: int = 64, queue_delay_us: int = 1000) -> str:
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    inputs = ",\n".join(_tensor(i.name, i.type, i.shape) for i in session.get_inputs())
    outputs = ",\n".join(_tensor(o.name, o.type, o.shape) for o in session.get_outputs())
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
        "instance_group [\n  {\n    kind: KIND_AUTO\n  }\n]\n"
    )


def write_repository(graph: Path, out: Path, max_batch_size: int = 64) -> Path:
    import onnxruntime as ort

    props = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", props.get("daa.name") or graph.stem)
    folder = out / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(graph, folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(config_pbtxt(graph, name, max_batch_size))
    (folder / "daa.json").write_text(json.dumps({k: v for k, v in props.items() if k.startswith("daa.")}, indent=1))
    return folder
