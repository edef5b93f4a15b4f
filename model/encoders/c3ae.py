"""C3AE-plain FaceEncoder (Zhang et al., CVPR 2019, single-scale "plain" variant), E = 32 x 8 x 8.

The 128 px crop is resized to 64 px (C3AE's input size); three conv-BN-ReLU-SE-avgpool stages halve it to
32, 16 and 8; a fourth 3x3 stage and a 1x1 conv keep 8 x 8. Convolutions are 'same' padded (the original uses
'valid' padding and ends at 4 x 4) so that E is 8 x 8 as in the paper's section 4.2. The squeeze-excitation
blocks follow the public C3AE implementation.
"""

from __future__ import annotations

import torch
from torch import nn

from model.encoders.common import InputAdapter
from model.encoders.registry import FaceEncoder, register_encoder


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class C3AEBlock(nn.Module):
    """Conv3x3 - BN - ReLU - SE, then 2x2 average pooling when ``pool``."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(out_channels)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.se(self.relu(self.bn(self.conv(x)))))


class C3AEEncoder(FaceEncoder):
    out_channels = 32

    def __init__(self, input_size: int = 64, width: int = 32) -> None:
        super().__init__()
        self.input_size = input_size
        self.out_size = input_size // 8
        self.adapter = InputAdapter(input_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.blocks = nn.Sequential(
            C3AEBlock(3, width, pool=True),
            C3AEBlock(width, width, pool=True),
            C3AEBlock(width, width, pool=True),
            C3AEBlock(width, width, pool=False),
        )
        self.head = nn.Sequential(
            nn.Conv2d(width, self.out_channels, 1, bias=False), nn.BatchNorm2d(self.out_channels), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.adapter(x)))


@register_encoder("c3ae")
def build_c3ae(input_size: int | None = None) -> FaceEncoder:
    return C3AEEncoder(input_size or 64)
