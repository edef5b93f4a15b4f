"""The port of dlib's face-recognition ResNet: shapes, the net_to_xml parser, and (when converted) dlib equivalence."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from model.encoders import create_encoder
from model.encoders.dlib_face_resnet import DlibFaceResNetEncoder, add_prev, load_dlib_face_weights
from training.convert_dlib_face import check, parse_xml

# The conversion's own output and dlib's descriptors (python -m training.convert_dlib_face, see its docstring):
# dlib is a tool of the conversion only (compiled from source, ~1 min of g++, an 89 MB XML), so the check runs
# where a developer made them and says where: DAA_DLIB_FACE_CONVERTED=... DAA_DLIB_FACE_CHECK_SET=... pytest.
CONVERTED = Path(os.environ.get("DAA_DLIB_FACE_CONVERTED", "cache/dlib_face_rec_v1.pt"))
CHECK_SET = Path(os.environ.get("DAA_DLIB_FACE_CHECK_SET", "cache/dlib_face_check.npz"))


@pytest.mark.parametrize("size,out_size,last_level", [(150, 2, 0), (112, 1, 0), (150, 4, 1), (112, 3, 1)])
def test_shapes(size: int, out_size: int, last_level: int) -> None:
    enc = DlibFaceResNetEncoder(size, last_level=last_level).eval()
    assert (enc.input_size, enc.out_size, enc.out_channels) == (size, out_size, 256)
    with torch.no_grad():
        e = enc(torch.rand(2, 3, 128, 128))  # the service's crop, resized by the adapter
    assert e.shape == (2, 256, out_size, out_size)


def test_registered_with_dlib_input_normalisation() -> None:
    enc = create_encoder("dlib_face_resnet")
    assert enc.input_size == 150 and enc.out_size == 2
    pixels = torch.tensor([0.0, 128.0, 255.0]).view(1, 3, 1, 1).expand(1, 3, 150, 150)
    got = enc.adapter(pixels / 255.0)[0, :, 0, 0]
    want = (torch.tensor([0.0, 128.0, 255.0]) - torch.tensor([122.782, 117.001, 104.298])) / 256.0
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="too small"):
        DlibFaceResNetEncoder(64)


def test_add_prev_zero_pads_the_smaller_summand_at_the_end() -> None:
    main = torch.ones(1, 4, 1, 1)
    shortcut = torch.full((1, 2, 2, 2), 10.0)
    out = add_prev(main, shortcut)
    want = torch.zeros(1, 4, 2, 2)
    want[:, :2] = 10.0
    want[:, :, 0, 0] += 1.0
    assert torch.equal(out, want)


# ------------------------------------------------------------------------------- a tiny dlib-style XML


def _values(a: torch.Tensor, per_line: int = 1) -> str:
    flat = [f"{v:.9g}" for v in a.flatten().tolist()]
    return "\n".join(" ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)) + "\n"


def _dlib_xml(enc: DlibFaceResNetEncoder, fc: torch.Tensor) -> str:
    """``enc`` written as dlib's net_to_xml writes the face-recognition network (listed loss first)."""

    def con(conv: torch.nn.Conv2d) -> str:
        s, p = conv.stride[0], conv.padding[0]
        head = (
            f"<con num_filters='{conv.out_channels}' nr='{conv.kernel_size[0]}' nc='{conv.kernel_size[1]}' "
            f"stride_y='{s}' stride_x='{s}' padding_y='{p}' padding_x='{p}' learning_rate_mult='1' "
            "weight_decay_mult='1' bias_learning_rate_mult='1' bias_weight_decay_mult='0' use_bias='true' "
            "use_relu='false'>\n"
        )
        return head + _values(torch.cat([conv.weight.flatten(), conv.bias])) + "</con>\n"

    def affine(aff: torch.nn.Module) -> str:
        return "<affine_con>\n" + _values(torch.cat([aff.scale, aff.offset])) + "</affine_con>\n"

    relu = "<relu/>\n"
    layers: list[str] = [
        "<input_rgb_image_sized r='122.781998' g='117.000999' b='104.297997' nr='150' nc='150'/>\n",
        con(enc.conv1),
        affine(enc.aff1),
        relu,
        "<max_pool nr='3' nc='3' stride_y='2' stride_x='2' padding_y='0' padding_x='0'/>\n",
    ]
    for blk in enc.blocks:
        layers += ["tag 1", con(blk.conv1), affine(blk.aff1), relu, con(blk.conv2), affine(blk.aff2)]
        if blk.downsample:
            layers += [
                "tag 2",
                "skip 1",
                "<avg_pool nr='2' nc='2' stride_y='2' stride_x='2' padding_y='0' padding_x='0'/>\n",
                "<add_prev tag='2'/>\n",
            ]
        else:
            layers += ["<add_prev tag='1'/>\n"]
        layers.append(relu)
    layers += [
        "<avg_pool nr='0' nc='0' stride_y='1' stride_x='1' padding_y='0' padding_x='0'/>\n",
        f"<fc_no_bias num_outputs='{fc.shape[0]}' learning_rate_mult='1' weight_decay_mult='1'>\n"
        + _values(fc.T, per_line=fc.shape[0])
        + "</fc_no_bias>\n",
        "<loss_metric margin='0.0399999991' distance_threshold='0.600000024'/>\n",
    ]
    out = ["<net>\n"]
    for idx, body in enumerate(reversed(layers)):
        if body.startswith(("tag ", "skip ")):
            kind, tag = body.split()
            out.append(f"<layer idx='{idx}' type='{kind}' id='{tag}'/>\n")
        else:
            kind = "loss" if idx == 0 else "input" if idx == len(layers) - 1 else "comp"
            out.append(f"<layer idx='{idx}' type='{kind}'>\n{body}</layer>\n")
    return "".join(out) + "</net>\n"


def test_xml_parser_round_trips_a_tiny_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = DlibFaceResNetEncoder(112, width=2).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
        src.conv1.weight[0, 0, 0, 0] = 1e-38  # a denormal: flushed to zero by the parser
    fc = torch.randn(5, src.out_channels)
    path = tmp_path / "tiny.xml"
    path.write_text(_dlib_xml(src, fc))

    sd, fc_parsed, arch = parse_xml(path)
    dst = DlibFaceResNetEncoder(112, width=2).eval()
    dst.load_state_dict(sd)  # strict: every key and shape matches
    assert dst.conv1.weight[0, 0, 0, 0] == 0.0
    with torch.no_grad():
        src.conv1.weight[0, 0, 0, 0] = 0.0
    for k, v in src.state_dict().items():
        assert torch.equal(sd[k], v), k
    assert torch.equal(fc_parsed, fc)
    assert arch["out_channels"] == 16 and arch["input_size"] == 150
    assert [b[2] for b in arch["blocks"]] == [False] * 3 + [True, False, False, False] + [True, False, False] * 2 + [True]
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(dst.descriptor(x, fc_parsed), src.descriptor(x, fc))


def test_xml_parser_rejects_an_unexpected_stride(tmp_path: Path) -> None:
    src = DlibFaceResNetEncoder(112, width=2)
    text = _dlib_xml(src, torch.zeros(3, src.out_channels))
    path = tmp_path / "bad.xml"
    path.write_text(
        text.replace(
            "stride_y='2' stride_x='2' padding_y='0' padding_x='0' learning",
            "stride_y='1' stride_x='1' padding_y='0' padding_x='0' learning",
            1,
        )
    )
    with pytest.raises(ValueError, match="stride"):
        parse_xml(path)


# ------------------------------------------------------------------------------- equivalence with dlib


@pytest.mark.skipif(
    not (CONVERTED.exists() and CHECK_SET.exists()),
    reason=f"needs {CONVERTED} and {CHECK_SET} (python -m training.convert_dlib_face, see its docstring)",
)
def test_descriptors_match_dlib() -> None:
    enc = DlibFaceResNetEncoder(150).eval()
    fc = load_dlib_face_weights(enc, CONVERTED)
    saved = torch.load(CONVERTED, map_location="cpu", weights_only=True)
    figures = check(enc, fc, CHECK_SET, saved["arch"]["mean_bytes"])
    assert figures["max_abs_diff"] < 1e-4 and figures["min_cosine"] > 0.99999
    # The [0, 1] path through the adapter (no resize at 150 px) gives the same descriptors.
    chips = torch.from_numpy(np.load(CHECK_SET)["chips"][:4]).permute(0, 3, 1, 2).float() / 255.0
    ref = torch.from_numpy(np.load(CHECK_SET)["descriptors"][:4]).float()
    with torch.no_grad():
        torch.testing.assert_close(enc.descriptor(chips, fc), ref, atol=1e-4, rtol=0)
    # A truncated trunk takes the weights of the blocks it has.
    short = DlibFaceResNetEncoder(150, last_level=1)
    load_dlib_face_weights(short, CONVERTED)
    assert torch.equal(short.blocks[-1].conv2.weight, enc.blocks[-2].conv2.weight)
