"""The port of FaceRes-deep (HSE MobileNet-v1): shapes, TF "SAME" padding, input adapter, the TF.js graph parser,
gradients, registration, and (when converted) the weights against the figures TF.js gave."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.encoders import create_encoder, list_encoders
from model.encoders.faceres import (
    BLOCKS,
    FACERES_MEAN_BGR,
    FaceResEncoder,
    SameConv2d,
    age_from_probs,
    load_faceres_weights,
    tf_same_padding,
)
from training.convert_faceres import decode_weights, graph_to_state_dict

CONVERTED = Path("/work/cache/faceres_deep.pt")
UTKFACE = Path("/work/shared/data/utkface/images")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize(
    "name,size,channels,out_size",
    [
        ("faceres", 224, 1024, 7),
        ("faceres", 160, 1024, 5),
        ("faceres", 128, 1024, 4),
        ("faceres", 112, 1024, 4),
        ("faceres_b11", 224, 512, 14),
        ("faceres_b11", 160, 512, 10),
        ("faceres_b11", 128, 512, 8),
        ("faceres_b11", 112, 512, 7),
    ],
)
def test_shapes(name: str, size: int, channels: int, out_size: int) -> None:
    enc = create_encoder(name, size).eval()
    assert (enc.input_size, enc.out_channels, enc.out_size) == (size, channels, out_size)
    assert enc.adapter.size == size
    with torch.no_grad():
        e = enc(torch.rand(2, 3, 128, 128))  # the service's crop, resized by the adapter
    assert e.shape == (2, channels, out_size, out_size)
    assert float(e.min()) >= 0.0 and float(e.max()) <= 6.0  # ReLU6


def test_registered() -> None:
    assert {"faceres", "faceres_b11"} <= set(list_encoders())
    enc = create_encoder("faceres")
    assert isinstance(enc, FaceResEncoder) and enc.input_size == 224 and enc.num_blocks == 13
    assert create_encoder("faceres_b11").num_blocks == 11
    with pytest.raises(ValueError, match="num_blocks"):
        FaceResEncoder(224, num_blocks=14)


# ------------------------------------------------------------------------------- TF "SAME" padding


def test_tf_same_padding_puts_the_odd_pixel_after() -> None:
    assert tf_same_padding(224, 3, 2) == (0, 1)  # even input, stride 2: bottom / right only
    assert tf_same_padding(7, 3, 2) == (1, 1)  # odd input, stride 2: symmetric
    assert tf_same_padding(112, 3, 1) == (1, 1)
    assert tf_same_padding(5, 1, 1) == (0, 0)
    assert tf_same_padding(6, 4, 2) == (1, 1)
    assert tf_same_padding(5, 4, 1) == (1, 2)


def _np_conv_same(x: np.ndarray, w: np.ndarray, stride: int, groups: int) -> np.ndarray:
    """TF's SAME convolution straight from its definition, in float64 loops: out = ceil(n / s) per dimension, input
    index ``o * s + k - floor(pad_total / 2)``, zero outside; ``w`` is O x (C / groups) x kh x kw."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    top = max((oh - 1) * stride + kh - h, 0) // 2
    left = max((ow - 1) * stride + kw - wd, 0) // 2
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                for a in range(kh):
                    for b in range(kw):
                        r, s = i * stride + a - top, j * stride + b - left
                        if 0 <= r < h and 0 <= s < wd:
                            y[:, oc, i, j] += x[:, g * cg : (g + 1) * cg, r, s] @ w[oc, :, a, b]
    return y


@pytest.mark.parametrize("size", [6, 7, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("depthwise", [False, True])
def test_same_conv_matches_a_numpy_reference(size: int, stride: int, depthwise: bool) -> None:
    torch.manual_seed(size + 10 * stride)
    c = 4
    conv = SameConv2d(c, c if depthwise else 3, 3, stride=stride, groups=c if depthwise else 1).double()
    x = torch.randn(2, c, size, size, dtype=torch.float64)
    assert conv.bias is not None
    want = (
        _np_conv_same(x.numpy(), conv.weight.detach().numpy(), stride, conv.groups)
        + conv.bias.detach().numpy()[None, :, None, None]
    )
    with torch.no_grad():
        got = conv(x)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    # and F.conv2d on an input padded explicitly by the TF formula
    t, b = tf_same_padding(size, 3, stride)
    with torch.no_grad():
        ref = F.conv2d(F.pad(x, (t, b, t, b)), conv.weight, conv.bias, stride, 0, 1, conv.groups)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_stride2_on_an_even_input_pads_only_bottom_and_right() -> None:
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1.0, 10.0).view(1, 1, 3, 3))
        x = torch.zeros(1, 1, 4, 4)
        x[0, 0, 0, 0] = 1.0
        y = conv(x)
    # TF: output (0, 0) reads input rows / columns 0..2, so the delta at (0, 0) meets the kernel's (0, 0) = 1;
    # a symmetric padding of 1 would give the kernel's centre (5).
    assert y.shape == (1, 1, 2, 2) and y[0, 0, 0, 0].item() == 1.0 and y.sum().item() == 1.0


# ------------------------------------------------------------------------------- input and heads


def test_adapter_gives_bgr_bytes_minus_caffe_means() -> None:
    enc = FaceResEncoder(224)
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1).expand(1, 3, 224, 224) / 255.0
    got = enc.adapter(rgb)[0, :, 0, 0]
    b, g, r = FACERES_MEAN_BGR
    torch.testing.assert_close(got, torch.tensor([30.0 - b, 20.0 - g, 10.0 - r]), rtol=0, atol=1e-4)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():  # forward = features of the normalised input
        manual = x.flip(1) * 255.0 - torch.tensor(FACERES_MEAN_BGR).view(1, 3, 1, 1)
        torch.testing.assert_close(enc.eval()(x), enc.features(manual), rtol=1e-5, atol=1e-4)


def test_age_rules() -> None:
    probs = torch.full((1, 100), 0.2 / 98)
    probs[0, 20], probs[0, 30] = 0.5, 0.3
    # upstream: 1 + (20 * 0.5 + 30 * 0.3) / 0.8
    assert age_from_probs(probs).item() == pytest.approx(1 + (20 * 0.5 + 30 * 0.3) / 0.8, rel=1e-6)
    assert age_from_probs(probs, "argmax").item() == 21.0
    mean = 1 + (probs[0] * torch.arange(100.0)).sum() / probs.sum()
    assert age_from_probs(probs, "mean").item() == pytest.approx(mean.item(), rel=1e-6)
    with pytest.raises(ValueError):
        age_from_probs(probs, "median")


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    enc = create_encoder("faceres", 112).train()
    x = torch.rand(2, 3, 128, 128, requires_grad=True)
    e = enc(x)
    (e * torch.randn_like(e)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- a TF.js graph like the package's


def _b64(s: str) -> dict[str, str]:
    return {"s": base64.b64encode(s.encode()).decode()}


def _graph(enc: FaceResEncoder, heads: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``enc`` and ``heads`` written as the package's TF.js graph (node names, ops, layouts)."""
    nodes: list[dict[str, Any]] = []
    weights: list[tuple[str, np.ndarray]] = []

    def const(name: str, a: np.ndarray) -> str:
        nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}})
        weights.append((name, np.asarray(a)))
        return name

    def op(name: str, kind: str, inputs: list[str], **attr: Any) -> str:
        nodes.append({"name": name, "op": kind, "input": inputs, "attr": attr})
        return name

    def conv(name: str, kind: str, x: str, k: str, stride: int) -> str:
        strides = {"list": {"i": ["1", str(stride), str(stride), "1"]}}
        ones = {"list": {"i": ["1", "1", "1", "1"]}}
        return op(
            name, kind, [x, k], padding=_b64("SAME"), data_format=_b64("NHWC"), strides=strides, dilations=ones,
            explicit_paddings={"list": {}},
        )  # fmt: skip

    def relu6(prefix: str, x: str) -> str:
        const(f"{prefix}/Cast", np.array(6.0, dtype=np.float32))
        const(f"{prefix}/Const_1", np.array(0.0, dtype=np.float32))
        op(f"{prefix}/Relu", "Relu", [x])
        op(f"{prefix}/clip_by_value/Minimum", "Minimum", [f"{prefix}/Relu", f"{prefix}/Cast"])
        return op(f"{prefix}/clip_by_value", "Maximum", [f"{prefix}/clip_by_value/Minimum", f"{prefix}/Const_1"])

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().astype(np.float32)

    sd = {k: np_(v) for k, v in enc.state_dict().items()}
    dim = [{"size": s} for s in ("-1", "224", "224", "3")]
    op("input_1", "Placeholder", [], dtype={"type": "DT_FLOAT"}, shape={"shape": {"dim": dim}})
    k = const("conv1/convolution/merged_input", sd["conv1.weight"].transpose(2, 3, 1, 0))
    x = conv("conv1_bn/batchnorm_1/mul_1", "Conv2D", "input_1", k, 2)
    x = op("conv1_bn/batchnorm_1/add_1", "Add", [x, const("conv1_bn/batchnorm_1/sub", sd["conv1.bias"])])
    x = relu6("conv1_relu", x)
    for i, (_, stride) in enumerate(BLOCKS, start=1):
        p = f"blocks.{i - 1}."
        k = const(f"conv_dw_{i}/depthwise_kernel", sd[p + "dw.weight"][:, 0].transpose(1, 2, 0)[..., None])
        x = conv(f"conv_dw_{i}/depthwise", "DepthwiseConv2dNative", x, k, stride)
        bn = f"conv_dw_{i}_bn/batchnorm_1"
        x = op(f"{bn}/mul_1", "Mul", [x, const(f"{bn}/mul", sd[p + "dw_bn.scale"])])
        x = op(f"{bn}/add_1", "Add", [x, const(f"{bn}/sub", sd[p + "dw_bn.offset"])])
        x = relu6(f"conv_dw_{i}_relu", x)
        k = const(f"conv_pw_{i}/convolution/merged_input", sd[p + "pw.weight"][:, :, 0, 0].T[None, None])
        bn = f"conv_pw_{i}_bn/batchnorm_1"
        x = conv(f"{bn}/mul_1", "Conv2D", x, k, 1)
        x = op(f"{bn}/add_1", "Add", [x, const(f"{bn}/sub", sd[p + "pw.bias"])])
        x = relu6(f"conv_pw_{i}_relu", x)
    nodes.append({"name": "global_pooling/Mean/reduction_indices", "op": "Const", "attr": {}})
    weights.append(("global_pooling/Mean/reduction_indices", np.array([1, 2], dtype=np.int32)))
    x = op("global_pooling/Mean", "Mean", [x, "global_pooling/Mean/reduction_indices"], keep_dims={"b": False})
    for layer, src, fused in (
        ("feats", x, ["BiasAdd", "Relu"]),
        ("age_pred", "feats/Relu", ["BiasAdd"]),
        ("gender_pred", "feats/Relu", ["BiasAdd"]),
    ):
        kk = const(f"{layer}/kernel", np_(heads[f"{layer}.weight"]).T)
        bb = const(f"{layer}/bias", np_(heads[f"{layer}.bias"]))
        name = "feats/Relu" if layer == "feats" else f"{layer}/BiasAdd"
        fused_ops = {"list": {"s": [_b64(f)["s"] for f in fused]}}
        op(name, "_FusedMatMul", [src, kk, bb], fused_ops=fused_ops, transpose_a={"b": False}, transpose_b={"b": False})
    op("age_pred/Softmax", "Softmax", ["age_pred/BiasAdd"])
    op("gender_pred/Sigmoid", "Sigmoid", ["gender_pred/BiasAdd"])
    manifest = [
        {"name": n, "shape": list(a.shape), "dtype": "int32" if a.dtype == np.int32 else "float32"} for n, a in weights
    ]
    data = b"".join(a.astype("<i4" if a.dtype == np.int32 else "<f4").tobytes() for _, a in weights)
    outputs = {f"{n}:0": {"name": f"{n}:0"} for n in ("age_pred/Softmax", "gender_pred/Sigmoid", "global_pooling/Mean")}
    graph = {
        "format": "graph-model",
        "signature": {"outputs": outputs},
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["w.bin"], "weights": manifest}],
    }
    return graph, {"w.bin": data}


def _random_encoder_and_heads() -> tuple[FaceResEncoder, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    enc = FaceResEncoder(224).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0.0, 0.1)
    heads = {
        "feats.weight": torch.randn(256, 1024),
        "feats.bias": torch.randn(256),
        "age_pred.weight": torch.randn(100, 256),
        "age_pred.bias": torch.randn(100),
        "gender_pred.weight": torch.randn(1, 256),
        "gender_pred.bias": torch.randn(1),
    }
    return enc, heads


def test_graph_parser_round_trips_the_network() -> None:
    src, heads = _random_encoder_and_heads()
    graph, shards = _graph(src, heads)
    sd, parsed_heads, arch = graph_to_state_dict(graph, decode_weights(graph, shards))
    dst = FaceResEncoder(224).eval()
    dst.load_state_dict(sd)  # strict: every key and shape matches
    for k, v in src.state_dict().items():
        assert torch.equal(sd[k], v), k
    for k, v in heads.items():
        assert torch.equal(parsed_heads[k], v), k
    assert arch["strides"] == [s for _, s in BLOCKS] and arch["input_size"] == 224


@pytest.mark.parametrize(
    "node,field,value,match",
    [
        ("conv_dw_2/depthwise", "strides", {"list": {"i": ["1", "1", "1", "1"]}}, "stride"),
        ("conv_dw_4/depthwise", "padding", _b64("VALID"), "padding"),
        ("conv_pw_3_bn/batchnorm_1/mul_1", "data_format", _b64("NCHW"), "NCHW"),
    ],
)
def test_graph_parser_rejects_what_the_port_does_not_do(node: str, field: str, value: Any, match: str) -> None:
    src, heads = _random_encoder_and_heads()
    graph, shards = _graph(src, heads)
    weights = decode_weights(graph, shards)
    bad = copy.deepcopy(graph)
    next(n for n in bad["modelTopology"]["node"] if n["name"] == node)["attr"][field] = value
    with pytest.raises(ValueError, match=match):
        graph_to_state_dict(bad, weights)
    extra = copy.deepcopy(graph)
    extra["modelTopology"]["node"].append({"name": "extra/Tanh", "op": "Tanh", "input": ["feats/Relu"], "attr": {}})
    with pytest.raises(ValueError, match="does not implement"):
        graph_to_state_dict(extra, weights)
    fp16 = copy.deepcopy(graph)
    fp16["weightsManifest"][0]["weights"][0]["dtype"] = "float16"
    with pytest.raises(ValueError, match="float32"):
        decode_weights(fp16, shards)


# ------------------------------------------------------------------------------- the converted weights


@pytest.mark.skipif(
    not CONVERTED.exists(), reason=f"needs {CONVERTED} (python -m training.convert_faceres, see its docstring)"
)
def test_converted_weights() -> None:
    saved = torch.load(CONVERTED, map_location="cpu", weights_only=True)
    assert saved["source"]["tarball_sha256"] and saved["source"]["version"] == "3.0.4"
    verified = saved["verified"]
    assert verified and verified["max_abs_diff"] < verified["tolerance"] <= 1e-3
    enc = FaceResEncoder(224).eval()
    heads = load_faceres_weights(enc, CONVERTED)
    short = FaceResEncoder(224, num_blocks=11)
    load_faceres_weights(short, CONVERTED)  # a truncated trunk takes the blocks it has
    assert torch.equal(short.state_dict()["blocks.10.pw.weight"], enc.state_dict()["blocks.10.pw.weight"])
    with torch.no_grad():
        out = enc.shipped_outputs(torch.rand(2, 3, 224, 224), heads)
    torch.testing.assert_close(out["age_probs"].sum(1), torch.ones(2))
    assert out["pooled"].shape == (2, 1024) and out["gender"].shape == (2,)
    names = [n for n in verified["images"] if not n.startswith("noise")]
    if not (UTKFACE.is_dir() and all((UTKFACE / n).exists() for n in names)):
        pytest.skip(f"the check's face images are not in {UTKFACE}")
    from PIL import Image

    x = torch.stack(
        [
            torch.from_numpy(np.asarray(Image.open(UTKFACE / n).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
            for n in names
        ]
    )
    with torch.no_grad():
        ages = enc.shipped_age(x, heads)
    want = torch.tensor(verified["224px"]["age_years_top2"]["tfjs_ages"][: len(names)], dtype=torch.float32)
    torch.testing.assert_close(ages, want, rtol=0, atol=0.006)  # TF.js's ages, stored rounded to 0.01
