"""Input handling shared by encoders: resize the 128 px crop to the encoder's size, then normalise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InputAdapter(nn.Module):
    """Resizes (antialiased bilinear) and normalises ``(x - mean) / std`` per channel, x in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std
