"""Batch augmentation on tensors (paper 4.2: flip, scale, rotation, translation), on whatever device holds the batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    flip: float = 0.5
    scale: tuple[float, float] = (0.9, 1.1)
    rotation_deg: float = 10.0
    translate: float = 0.05  # fraction of the crop side


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random similarity transform (and flip) per image, applied with a single grid_sample. x: B x 3 x H x W."""
    b = x.shape[0]
    dev = x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator, device=generator.device if generator else dev).to(dev) * (hi - lo) + lo

    angle = uniform(-cfg.rotation_deg, cfg.rotation_deg) * math.pi / 180
    scale = uniform(*cfg.scale)
    tx, ty = uniform(-cfg.translate, cfg.translate) * 2, uniform(-cfg.translate, cfg.translate) * 2
    flip = torch.where(uniform(0, 1) < cfg.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
