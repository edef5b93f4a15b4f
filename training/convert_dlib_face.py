"""Convert dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to our encoder.

The .dat (public domain) ships in the PyPI package ``face-recognition-models``. dlib's Python API gives
descriptors, not weights, so the weights are read through dlib's C++ ``net_to_xml``: the program
``training/dlib_face_rec/net_to_xml.cpp`` declares the network type and writes every layer as XML (89 MB), which
is parsed (streamed) into :class:`model.encoders.dlib_face_resnet.DlibFaceResNetEncoder`'s state_dict.

Set up once, outside this project's venv (dlib is only a tool of the conversion, never a dependency):

    python -m venv /work/tools/dlibenv
    /work/tools/dlibenv/bin/pip install dlib-bin face-recognition-models==0.3.0 numpy pillow
    /work/tools/dlibenv/bin/pip download --no-deps --no-binary dlib dlib==20.0.1 -d /work/tools/dlibsrc

Then (g++ from Debian's ``g++`` package; the compile takes about a minute):

    python -m training.convert_dlib_face --dlib-python /work/tools/dlibenv/bin/python \\
        --dlib-src /work/tools/dlibsrc/dlib-20.0.1.tar.gz \\
        --make-check /work/tools/dlib_face_check.npz --images /work/shared/data/utkface/images \\
        --check /work/tools/dlib_face_check.npz --out /work/cache/dlib_face_rec_v1.pt

which runs, in a work folder (``--workdir``, default a temporary one):

    tar xzf dlib-20.0.1.tar.gz
    g++ -O1 -std=c++17 -DDLIB_NO_GUI_SUPPORT -DDLIB_DISABLE_ASSERTS -I dlib-20.0.1 \\
        training/dlib_face_rec/net_to_xml.cpp dlib-20.0.1/dlib/all/source.cpp -lpthread -o net_to_xml
    ./net_to_xml .../face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat dlib_face_rec_v1.xml

``--xml FILE`` skips the C++ step. ``--make-check NPZ`` has dlib (in ``--dlib-python``) align 150 x 150 chips from
face images with the 5-point landmark model (plus a few random-noise chips) and store its descriptors
(``compute_face_descriptor(chip)``, one jitter); ``--check NPZ`` compares the port with them and refuses to write
the result when the largest absolute difference exceeds ``--tol`` (1e-4). The saved file holds
``{"encoder": state_dict, "fc": 128 x 256 weight, "source": ..., "verified": {...}}``.

Layout of dlib's XML (checked against the descriptors): layers are listed from the loss down to the input;
``con`` params are the filters as [num_filters, k, nr, nc] (torch's OIHW) followed by the biases, and each ``con``
states its stride and padding; ``affine_con`` params are the per-channel scales then the shifts; ``fc_no_bias``
params are a num_inputs x num_outputs matrix (so torch's weight is its transpose).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.encoders.dlib_face_resnet import DlibFaceResNetEncoder
from model.inference import zero_denormals

CPP = Path(__file__).resolve().parent / "dlib_face_rec" / "net_to_xml.cpp"
DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"


# ----------------------------------------------------------------------------------------------- XML parsing


@dataclass
class DlibLayer:
    """One ``<layer>`` of dlib's XML: its kind (``con``, ``relu``, ``tag`` ...), attributes and parameters."""

    kind: str
    attrib: dict[str, str] = field(default_factory=dict)
    params: np.ndarray | None = None


def read_layers(path: str | Path) -> list[DlibLayer]:
    """The layers of a ``net_to_xml`` file in execution order (input first), streamed element by element."""
    layers: list[DlibLayer] = []
    current: DlibLayer | None = None
    for event, elem in ET.iterparse(str(path), events=("start", "end")):
        if event == "start":
            if elem.tag == "layer":
                current = DlibLayer(kind="")
                if elem.get("type") in ("tag", "skip"):
                    current.kind = elem.get("type", "")
                    current.attrib = {"id": elem.get("id", "")}
            continue
        if elem.tag == "layer":
            if current is None or not current.kind:
                raise ValueError(f"empty <layer idx={elem.get('idx')}> in {path}")
            layers.append(current)
            current = None
        elif elem.tag != "net" and current is not None:
            current.kind = elem.tag
            current.attrib = dict(elem.attrib)
            text = (elem.text or "").split()
            if text:
                current.params = np.array(text, dtype=np.float64).astype(np.float32)
        elem.clear()
    layers.reverse()
    return layers


def _int(layer: DlibLayer, name: str) -> int:
    return int(layer.attrib[name])


def _flush(a: np.ndarray) -> torch.Tensor:
    # Denormal weights slow every CPU forward pass and carry no information.
    return zero_denormals(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))


def layers_to_state_dict(layers: list[DlibLayer]) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    """(encoder state_dict, fc weight num_outputs x C, architecture facts) from dlib's layers, input first.

    Checks the structure it relies on: the stem ``con 7x7 s2 p0 - affine - relu - max_pool 3x3 s2 p0``; residual
    blocks of ``tag1, con, affine, relu, con, affine, [tag2, skip1, avg_pool 2x2 s2 p0,] add_prev, relu``; the
    global ``avg_pool`` and ``fc_no_bias`` head.
    """
    if not layers or layers[0].kind != "input_rgb_image_sized":
        raise ValueError("expected an input_rgb_image_sized layer first (after reversing)")
    inp = layers[0]
    mean = tuple(float(inp.attrib[c]) for c in "rgb")
    sd: dict[str, torch.Tensor] = {}
    kinds = [la.kind for la in layers]
    expect_stem = ["input_rgb_image_sized", "con", "affine_con", "relu", "max_pool"]
    if kinds[:5] != expect_stem:
        raise ValueError(f"unexpected stem {kinds[:5]}")
    in_channels = 3

    def put_conv(prefix: str, j: int, con: DlibLayer, aff: DlibLayer, k_in: int, stride: int, padding: int) -> int:
        name = f"{prefix}conv{j}"
        n, nr, nc = _int(con, "num_filters"), _int(con, "nr"), _int(con, "nc")
        if (_int(con, "stride_y"), _int(con, "stride_x")) != (stride, stride):
            raise ValueError(f"{name}: stride {con.attrib['stride_y']}x{con.attrib['stride_x']}, expected {stride}")
        if (_int(con, "padding_y"), _int(con, "padding_x")) != (padding, padding):
            raise ValueError(f"{name}: padding {con.attrib['padding_y']}x{con.attrib['padding_x']}, expected {padding}")
        if con.attrib.get("use_bias", "true") != "true" or con.attrib.get("use_relu", "false") != "false":
            raise ValueError(f"{name}: expected a conv with a bias and no fused relu")
        p = con.params
        if p is None or p.size != n * k_in * nr * nc + n:
            raise ValueError(f"{name}: {0 if p is None else p.size} params, expected {n * k_in * nr * nc + n}")
        sd[f"{name}.weight"] = _flush(p[: n * k_in * nr * nc].reshape(n, k_in, nr, nc))
        sd[f"{name}.bias"] = _flush(p[n * k_in * nr * nc :])
        g = aff.params
        if aff.kind != "affine_con" or g is None or g.size != 2 * n or aff.attrib.get("disabled") == "true":
            raise ValueError(f"{name}: expected an enabled affine_con with {2 * n} params after the conv")
        sd[f"{prefix}aff{j}.scale"] = _flush(g[:n])
        sd[f"{prefix}aff{j}.offset"] = _flush(g[n:])
        return n

    in_channels = put_conv("", 1, layers[1], layers[2], in_channels, 2, 0)
    stem = layers[1]
    if (_int(stem, "nr"), _int(stem, "nc")) != (7, 7):
        raise ValueError("expected a 7x7 stem")
    mp = layers[4]
    if [_int(mp, a) for a in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")] != [3, 3, 2, 2, 0, 0]:
        raise ValueError(f"unexpected max_pool {mp.attrib}")

    blocks: list[tuple[int, int, bool]] = []
    i = 5
    plain = ["tag", "con", "affine_con", "relu", "con", "affine_con", "add_prev", "relu"]
    down = ["tag", "con", "affine_con", "relu", "con", "affine_con", "tag", "skip", "avg_pool", "add_prev", "relu"]
    while kinds[i] == "tag":
        downsample = kinds[i : i + len(down)] == down
        if not downsample and kinds[i : i + len(plain)] != plain:
            raise ValueError(f"unexpected block layers at {i}: {kinds[i : i + len(down)]}")
        seq = layers[i : i + (len(down) if downsample else len(plain))]
        b = len(blocks)
        out = put_conv(f"blocks.{b}.", 1, seq[1], seq[2], in_channels, 2 if downsample else 1, 0 if downsample else 1)
        put_conv(f"blocks.{b}.", 2, seq[4], seq[5], out, 1, 1)
        if any((_int(c, "nr"), _int(c, "nc")) != (3, 3) for c in (seq[1], seq[4])):
            raise ValueError(f"block {b}: expected 3x3 convs")
        if downsample:
            tag1, tag2, skip, pool, add = seq[0], seq[6], seq[7], seq[8], seq[9]
            if skip.attrib["id"] != tag1.attrib["id"] or add.attrib["tag"] != tag2.attrib["id"]:
                raise ValueError(f"block {b}: the shortcut does not skip back to the block input")
            if [_int(pool, a) for a in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")] != [2, 2, 2, 2, 0, 0]:
                raise ValueError(f"block {b}: unexpected shortcut pool {pool.attrib}")
        elif seq[6].attrib["tag"] != seq[0].attrib["id"]:
            raise ValueError(f"block {b}: add_prev does not add the block input")
        blocks.append((in_channels, out, downsample))
        in_channels = out
        i += len(seq)

    head = layers[i:]
    if [la.kind for la in head] != ["avg_pool", "fc_no_bias", "loss_metric"] or _int(head[0], "nr") != 0:
        raise ValueError(f"unexpected head {[la.kind for la in head]}")
    n_out = _int(head[1], "num_outputs")
    w = head[1].params
    if w is None or w.size != in_channels * n_out:
        raise ValueError("fc_no_bias: wrong parameter count")
    fc = _flush(w.reshape(in_channels, n_out).T.copy())
    arch = {
        "mean_bytes": mean,
        "input_size": _int(inp, "nr"),
        "blocks": blocks,
        "out_channels": in_channels,
        "loss": dict(head[2].attrib),
    }
    return sd, fc, arch


def parse_xml(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    """(state_dict, fc weight, architecture) of a ``net_to_xml`` dump of the face-recognition network."""
    return layers_to_state_dict(read_layers(path))


# ----------------------------------------------------------------------------------------------- dlib side


def packaged_dat_path(dlib_python: str | None) -> Path:
    """The .dat inside ``face_recognition_models``: in this interpreter if installed here, else in dlib's."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "models" / DAT_NAME
    if dlib_python:
        code = "import face_recognition_models as f; print(f.face_recognition_model_location())"
        return Path(subprocess.run([dlib_python, "-c", code], check=True, capture_output=True, text=True).stdout.strip())
    raise SystemExit("pass --dat, or --dlib-python of a venv with face-recognition-models==0.3.0 installed")


def build_xml(dat: Path, dlib_src: Path, workdir: Path) -> Path:
    """Compile net_to_xml.cpp against dlib's C++ source (an unpacked sdist or its .tar.gz) and dump ``dat``."""
    if dlib_src.is_file():
        with tarfile.open(dlib_src) as tar:
            tar.extractall(workdir, filter="data")
        dlib_src = next(p for p in workdir.iterdir() if (p / "dlib" / "all" / "source.cpp").is_file())
    if not (dlib_src / "dlib" / "all" / "source.cpp").is_file():
        raise SystemExit(f"{dlib_src} is not dlib's source (pip download --no-deps --no-binary dlib dlib==20.0.1)")
    exe = workdir / "net_to_xml"
    cmd = [
        "g++",
        "-O1",
        "-std=c++17",
        "-DDLIB_NO_GUI_SUPPORT",
        "-DDLIB_DISABLE_ASSERTS",
        "-I",
        str(dlib_src),
        str(CPP),
        str(dlib_src / "dlib" / "all" / "source.cpp"),
        "-lpthread",
        "-o",
        str(exe),
    ]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    xml = workdir / "dlib_face_rec_v1.xml"
    subprocess.run([str(exe), str(dat), str(xml)], check=True)
    return xml


# Runs inside the dlib venv (numpy, pillow, dlib, face_recognition_models): aligned chips and dlib's descriptors.
CHECK_SCRIPT = r"""
import json, sys
import numpy as np, dlib, face_recognition_models as frm
from PIL import Image
args = json.loads(sys.argv[1])
rec = dlib.face_recognition_model_v1(args["dat"])
sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
chips, names = [], []
for path in sorted(args["images"])[: args["n_faces"]]:
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = img.shape[:2]
    box = dlib.rectangle(int(0.1 * w), int(0.1 * h), int(0.9 * w), int(0.9 * h))
    chips.append(np.asarray(dlib.get_face_chip(img, sp(img, box), size=150, padding=0.25)))
    names.append(path.rsplit("/", 1)[-1])
rng = np.random.default_rng(0)
for i in range(args["n_noise"]):
    chips.append(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8))
    names.append(f"noise{i}")
chips = np.ascontiguousarray(np.stack(chips))
desc = np.stack([np.asarray(rec.compute_face_descriptor(c)) for c in chips])
np.savez_compressed(args["out"], chips=chips, descriptors=desc, names=np.array(names),
                    dlib_version=np.array(dlib.__version__))
norms = np.linalg.norm(desc, axis=1)
print(f"{len(chips)} chips, descriptor norms {norms.min():.3f}..{norms.max():.3f}")
"""


def make_check_set(dlib_python: str, dat: Path, images: Path, out: Path, n_faces: int = 20, n_noise: int = 4) -> None:
    """Have dlib compute descriptors of ``n_faces`` aligned chips from ``images`` and ``n_noise`` noise chips."""
    files = sorted(str(p) for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    step = max(1, len(files) // n_faces)
    picked = files[::step][:n_faces]  # spread over the (age-sorted) file names
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = {"dat": str(dat), "images": picked, "n_faces": n_faces, "n_noise": n_noise, "out": str(out)}
    subprocess.run([dlib_python, "-c", CHECK_SCRIPT, json.dumps(spec)], check=True)


def check(encoder: DlibFaceResNetEncoder, fc: torch.Tensor, npz: Path, mean_bytes: tuple[float, ...]) -> dict[str, Any]:
    """Compare the port's descriptors (float32, from the uint8 chips) with dlib's on the chips in ``npz``."""
    data = np.load(npz)
    chips = torch.from_numpy(data["chips"]).permute(0, 3, 1, 2).float()
    ref = torch.from_numpy(data["descriptors"]).double()
    mean = torch.tensor(mean_bytes, dtype=torch.float32).view(1, 3, 1, 1)
    x = (chips - mean) / 256.0  # exactly input_rgb_image_sized's (pixel - avg) / 256
    with torch.no_grad():
        got = encoder.descriptor(x, fc, normalised=True).double()
    diff = (got - ref).abs()
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1)
    return {
        "n_chips": int(len(ref)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "min_cosine": float(cos.min()),
        "max_rel_diff": float((diff.max(1).values / ref.abs().max(1).values).max()),
        "descriptor_norm": [float(ref.norm(dim=1).min()), float(ref.norm(dim=1).max())],
        "dlib_version": str(data["dlib_version"]) if "dlib_version" in data else "",
        "check_set": str(npz),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--xml", type=Path, default=None, help="an existing net_to_xml dump (skips the C++ step)")
    parser.add_argument("--dat", type=Path, default=None, help=f"{DAT_NAME} (default: face_recognition_models's)")
    parser.add_argument("--dlib-python", default=None, help="python of a venv with dlib-bin and face-recognition-models")
    parser.add_argument("--dlib-src", type=Path, default=None, help="dlib's sdist (.tar.gz or unpacked) for the C++ step")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build and dump (default: a temporary one)")
    parser.add_argument("--make-check", type=Path, default=None, help="write dlib's chips and descriptors here first")
    parser.add_argument("--images", type=Path, default=None, help="face images for --make-check (e.g. UTKFace)")
    parser.add_argument("--check", type=Path, default=None, help="verify against this NPZ (from --make-check)")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest allowed |descriptor difference|")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    needs_dat = args.xml is None or args.make_check is not None
    dat = (args.dat or packaged_dat_path(args.dlib_python)) if needs_dat else args.dat
    tmp = None
    try:
        xml = args.xml
        if xml is None:
            if args.dlib_src is None:
                raise SystemExit("pass --xml, or --dlib-src (pip download --no-deps --no-binary dlib dlib==20.0.1)")
            workdir = args.workdir or Path(tmp := tempfile.mkdtemp(prefix="dlib_face_rec_"))
            workdir.mkdir(parents=True, exist_ok=True)
            xml = build_xml(dat, args.dlib_src, workdir)
        sd, fc, arch = parse_xml(xml)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    encoder = DlibFaceResNetEncoder(arch["input_size"]).eval()
    encoder.load_state_dict(sd)
    expected = tuple(float(np.float32(m)) for m in encoder.adapter.mean.flatten() * 255.0)
    if max(abs(a - b) for a, b in zip(arch["mean_bytes"], expected)) > 1e-3:
        raise SystemExit(f"input means {arch['mean_bytes']} differ from the encoder's {expected}")
    print(f"parsed {len(sd)} tensors, {sum(v.numel() for v in sd.values()):,} encoder parameters, fc {tuple(fc.shape)}")

    verified: dict[str, Any] = {}
    if args.make_check is not None:
        if args.dlib_python is None or args.images is None:
            raise SystemExit("--make-check needs --dlib-python and --images")
        make_check_set(args.dlib_python, dat, args.images, args.make_check)
    if args.check is not None:
        verified = check(encoder, fc, args.check, arch["mean_bytes"])
        print(json.dumps(verified, indent=1))
        if not verified["max_abs_diff"] < args.tol:
            raise SystemExit(f"max |descriptor diff| {verified['max_abs_diff']:.3e} >= {args.tol}: not writing it")
        verified["tolerance"] = args.tol
    else:
        print("warning: not verified against dlib (no --check)", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "encoder": sd,
            "fc": fc,
            "arch": arch,
            "verified": verified,
            "source": f"dlib {DAT_NAME} (face-recognition-models 0.3.0; public domain) via net_to_xml",
        },
        args.out,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
