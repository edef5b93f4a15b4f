"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a FaceEncoder.

The network (public domain weights, shipped by the PyPI package ``face-recognition-models``) maps an aligned
150 x 150 RGB face chip to a 128-D identity descriptor. It is a ResNet with 29 convolutions:

* stem: 7x7 stride-2 conv (32 filters, no padding), affine, relu, 3x3 stride-2 max-pool (no padding);
* ``alevel4``: 3 residual blocks of 32 channels; ``alevel3``: a downsampling block then 3 blocks of 64;
  ``alevel2`` and ``alevel1``: a downsampling block then 2 blocks of 128 / 256; ``alevel0``: one downsampling
  block of 256;
* head: global average pool, ``fc_no_bias`` 256 -> 128 (no L2 normalisation: dlib's ``loss_metric`` returns the
  fc output as is).

A block is ``conv3x3(stride) - affine - relu - conv3x3 - affine`` plus the shortcut, then relu. Every conv has a
bias; every affine is a per-channel scale and shift (batch norm folded by dlib). A downsampling block's first
conv has stride 2 and *no* padding, and its shortcut is a 2x2 stride-2 average pool of the block input. dlib's
``add_prev`` adds tensors of different shapes by zero-padding the smaller one at the end of each dimension: the
shortcut gains zero channels, and the main path (one pixel smaller on even inputs) gains a zero row and column
at the bottom and right. So at 150 px the last map is 256 x 2 x 2, of which only the top-left pixel sees the last
block's convolutions.

Input: dlib's ``input_rgb_image_sized<150>`` computes ``(pixel - mean) / 256`` per channel with the byte means
(122.782, 117.001, 104.298), the same as the dlib age network. ``training/convert_dlib_face.py`` converts the
.dat (via dlib's ``net_to_xml``) into this module's state_dict and verifies it against dlib's descriptors.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.common import InputAdapter
from model.encoders.dlib_resnet import Affine, DlibBlock
from model.encoders.registry import FaceEncoder, register_encoder

# input_rgb_image_sized's per-channel byte means (the .dat stores them as these float32 values).
DLIB_FACE_MEAN_BYTES = (122.782, 117.001, 104.298)

# (channels as a multiple of the base width, number of blocks) per level, input to output; the first block of
# every level but alevel4 downsamples.
LEVELS = ((1, 3), (2, 4), (4, 3), (8, 3), (8, 1))


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, each tensor zero-padded at the end of C, H and W."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


# A block is the dlib age network's: conv3x3(stride) - affine - relu - conv3x3 - affine plus the shortcut, whose
# zero-padding (channels after, main path right and bottom) is what add_prev does for these shapes.
FaceBlock = DlibBlock


class DlibFaceResNetEncoder(FaceEncoder):
    """The face-recognition trunk up to its last convolutional map E (before the global pool and the fc 128).

    ``width`` is the stem's channel count (32 in dlib's model; smaller only for tests). ``last_level`` = 1 stops
    after ``alevel1`` (256 x 4 x 4 at 150 px, 256 x 3 x 3 at 128 and 112) instead of ``alevel0`` (256 x 2 x 2 at
    150, 256 x 1 x 1 at 128 and 112); such a module loads the converted weights with :func:`load_dlib_face_weights`.
    """

    def __init__(self, input_size: int = 150, width: int = 32, last_level: int = 0) -> None:
        super().__init__()
        if last_level not in (0, 1):
            raise ValueError(f"last_level must be 0 or 1, got {last_level}")
        self.input_size = input_size
        r, g, b = DLIB_FACE_MEAN_BYTES
        self.adapter = InputAdapter(input_size, (r / 255.0, g / 255.0, b / 255.0), (256 / 255.0,) * 3)
        self.conv1 = nn.Conv2d(3, width, 7, stride=2)
        self.aff1 = Affine(width)
        blocks: list[nn.Module] = []
        channels = width
        for level, (mult, count) in enumerate(LEVELS[: len(LEVELS) - last_level]):
            for i in range(count):
                blocks.append(FaceBlock(channels, width * mult, downsample=level > 0 and i == 0))
                channels = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = channels
        try:
            with torch.no_grad():
                self.out_size = int(self.features(torch.zeros(1, 3, input_size, input_size)).shape[-1])
        except RuntimeError as e:
            raise ValueError(f"input_size {input_size} is too small for dlib's face-recognition ResNet") from e

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk on an already resized and normalised input ((pixel - mean) / 256, as dlib feeds it)."""
        return self.blocks(F.max_pool2d(F.relu(self.aff1(self.conv1(x))), 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.adapter(x))

    def descriptor(self, x: torch.Tensor, fc_weight: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """dlib's 128-D face descriptor: global average pool of E, then ``fc_no_bias`` (``fc_weight``: 128 x C).

        ``x`` is in [0, 1] like :meth:`forward` (or already normalised with ``normalised=True``). dlib does not
        L2-normalise the descriptor, and neither does this. Only meaningful for the full network (last_level 0).
        """
        e = self.features(x) if normalised else self(x)
        return e.mean((2, 3)) @ fc_weight.to(e.dtype).T


def load_dlib_face_weights(encoder: DlibFaceResNetEncoder, path: str | Path) -> torch.Tensor:
    """Load a file written by ``training/convert_dlib_face.py`` into ``encoder``; returns the fc weight (128 x C).

    A truncated encoder (``last_level`` = 1) takes the weights of the blocks it has.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    own = encoder.state_dict()
    sd = {k: v for k, v in saved["encoder"].items() if k in own}
    encoder.load_state_dict(sd, strict=True)
    return saved["fc"]


@register_encoder("dlib_face_resnet")
def build_dlib_face_resnet(input_size: int | None = None) -> FaceEncoder:
    return DlibFaceResNetEncoder(input_size or 150)


@register_encoder("dlib_face_resnet_l1")
def build_dlib_face_resnet_l1(input_size: int | None = None) -> FaceEncoder:
    """The trunk without its last level: E = 256 x 3 x 3 at 112-128 px, where the full trunk's E is 1 x 1 (and
    DAA's per-channel statistics would be degenerate)."""
    return DlibFaceResNetEncoder(input_size or 128, last_level=1)
