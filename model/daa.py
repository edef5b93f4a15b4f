"""The binary code mapping (section 3.3) and the Delta Age AdaIN operation (Eqs. 3, 5 and 7)."""

from __future__ import annotations

import torch
from torch import nn


def reference_ages(num_references: int = 100, interval: int = 1) -> torch.Tensor:
    """Reference ages sampled every ``interval`` years (Table 7): ``[0, k, 2k, ...] < num_references``."""
    if interval < 1:
        raise ValueError(f"reference interval must be >= 1, got {interval}")
    return torch.arange(0, num_references, interval)


def binary_codes(num_references: int = 100, bits: int = 8) -> torch.Tensor:
    """z_y = bin(y + 1) for y = 0..num_references-1, most significant bit first, normalised from {0, 1} to {-1, 1}."""
    values = torch.arange(1, num_references + 1).unsqueeze(1)
    weights = 2 ** torch.arange(bits - 1, -1, -1).unsqueeze(0)
    bits_01 = (values.bitwise_and(weights) > 0).float()
    return bits_01 * 2.0 - 1.0


class BinaryCodeMapping(nn.Module):
    """MLP 8-16-32-2 (ReLU, ReLU, identity) turning each reference age's code into (s_y, t_y)."""

    codes: torch.Tensor

    def __init__(self, num_references: int = 100, bits: int = 8, hidden: tuple[int, ...] | list[int] = (16, 32)) -> None:
        super().__init__()
        self.register_buffer("codes", binary_codes(num_references, bits), persistent=False)
        layers: list[nn.Module] = []
        width = bits
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, 2))
        self.mlp = nn.Sequential(*layers)

    def forward(self, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S and T for the given reference ages (each shape R)."""
        st = self.mlp(self.codes[references])
        return st[:, 0], st[:, 1]


def channel_stats(e: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and sqrt(biased variance + eps) over h x w (section 3.2); each B x C x 1 x 1."""
    mu = e.mean(dim=(2, 3), keepdim=True)
    sigma = torch.sqrt(e.var(dim=(2, 3), keepdim=True, unbiased=False) + eps)
    return mu, sigma


def global_stats(e: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over C x h x w (Eq. 4); each B."""
    flat = e.flatten(1)
    return flat.mean(1), torch.sqrt(flat.var(1, unbiased=False) + eps)


def daa(e: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """delta_c(x, y) = (scale_y - sigma_c(x)) * (E_c - mu_c(x)) / sigma_c(x) + shift_y - mu_c(x).

    ``scale``/``shift`` of shape R give Eq. 7 (s_y, t_y) or Eq. 5 (template sigma_y, mu_y); of shape R x C they
    give Eq. 3 (per-channel template statistics). Returns B x R x C x h x w.
    """
    mu, sigma = channel_stats(e, eps)
    e_hat = (e - mu) / sigma
    if scale.dim() == 1:
        scale, shift = scale.view(1, -1, 1, 1, 1), shift.view(1, -1, 1, 1, 1)
    else:
        scale, shift = scale[None, :, :, None, None], shift[None, :, :, None, None]
    return (scale - sigma.unsqueeze(1)) * e_hat.unsqueeze(1) + shift - mu.unsqueeze(1)
