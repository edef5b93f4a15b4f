"""AgeDecoder (Eq. 8) and its exact factorised form used for inference and training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AgeDecoder(nn.Module):
    """Conv3x3 to 64 channels + BN + ReLU, global average pool, Linear to one delta age."""

    def __init__(self, in_channels: int, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 1)

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        """BN, ReLU, GAP and Linear on conv outputs of shape N x 64 x h x w; returns N."""
        return self.fc(F.relu(self.bn(pre)).mean(dim=(2, 3))).squeeze(1)

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        """Direct form: one convolution per reference. ``delta`` is B x R x C x h x w; returns B x R."""
        b, r = delta.shape[:2]
        return self.head(self.conv(delta.flatten(0, 1))).view(b, r)

    def factorised(self, e: torch.Tensor, e_hat: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Exactly :meth:`forward` applied to delta_y = scale_y * e_hat - e + shift_y, with two convolutions per face.

        Eq. 7 rearranges to delta_y = (s_y - sigma) E_hat + t_y - mu = s_y E_hat - E + t_y, and the conv is linear,
        so conv(delta_y) = s_y W*E_hat + W*(-E) + t_y W*1 + b. W*1 is the conv of an all-ones map with the same zero
        padding, so borders stay exact. BN then sees the same pre-activations as the direct form, in training
        (batch statistics over B x R) as in eval. ``scale``/``shift`` have shape R (Eqs. 5 and 7).
        """
        b, r = e.shape[0], scale.shape[0]
        w, bias = self.conv.weight, self.conv.bias
        assert bias is not None
        pad = self.conv.padding
        both = F.conv2d(torch.cat([e_hat, -e]), w, padding=pad)  # one call: better GEMM use than two
        a, base = both[:b], both[b:] + bias.view(1, -1, 1, 1)
        ones = self._conv_of_ones(e)
        view = (1, r, 1, 1, 1)
        if self.training:
            pre = scale.view(view) * a.unsqueeze(1) + base.unsqueeze(1) + shift.view(view) * ones.unsqueeze(1)
            return self.head(pre.flatten(0, 1)).view(b, r)
        # Eval: fold BN's affine map into the three per-face maps, so the B x R x 64 x h x w tensor is built once
        # and then only rectified and pooled in place.
        bn = self.bn
        assert bn.running_var is not None and bn.running_mean is not None  # track_running_stats is on
        k = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, -1, 1, 1)
        c = bn.bias.view(1, -1, 1, 1) - bn.running_mean.view(1, -1, 1, 1) * k
        pre = (base * k + c).unsqueeze(1) + shift.view(view) * (ones * k).unsqueeze(1)
        pre.addcmul_(scale.view(view), (a * k).unsqueeze(1)).relu_()
        return self.fc(pre.mean(dim=(3, 4))).squeeze(-1)

    def _conv_of_ones(self, e: torch.Tensor) -> torch.Tensor:
        """W * 1 with zero padding: depends only on the weights and map size, so eval mode reuses it."""
        w = self.conv.weight
        key = (tuple(e.shape[1:]), e.dtype, e.device, w._version, w.data_ptr())
        cached = getattr(self, "_ones_cache", None)
        if not self.training and not torch.is_grad_enabled() and cached is not None and cached[0] == key:
            return cached[1]
        ones = F.conv2d(torch.ones_like(e[:1]), w, padding=self.conv.padding)
        if not self.training and not torch.is_grad_enabled():
            self._ones_cache = (key, ones)
        return ones
