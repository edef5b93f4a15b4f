"""The assembled DAA network: FaceEncoder -> DAA -> AgeDecoder -> Eq. 9 (``model.factory`` builds it from a config)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.config import ModelConfig
from model.daa import BinaryCodeMapping, channel_stats, daa, global_stats, reference_ages
from model.decoder import AgeDecoder
from model.encoders import create_encoder


@dataclass
class DAAOutput:
    """One forward pass. ``deltas[b, i]`` is the delta age to ``references[i]``; age = mean(y - delta_y) (Eq. 9).

    ``spread`` is the standard deviation of (y - delta_y) over the references: how much the per-reference
    estimates disagree, reported as the per-face uncertainty.
    """

    age: torch.Tensor  # B
    deltas: torch.Tensor  # B x R
    references: torch.Tensor  # R
    spread: torch.Tensor  # B


class DAANet(nn.Module):
    """FaceEncoder -> DAA (binary code mapping or templates) -> AgeDecoder -> Eq. 9.

    Input: B x 3 x 128 x 128 RGB crops in [0, 1] (from :func:`model.faces.crop_face`, divided by 255).
    """

    templates: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = create_encoder(config.encoder, config.encoder_input_size)
        channels = self.encoder.out_channels
        self.decoder = AgeDecoder(channels, config.decoder_channels)
        if config.daa_mode == "binary":
            self.mapping = BinaryCodeMapping(config.num_references, config.code_bits, config.mapping_hidden)
        if config.daa_mode.startswith("template"):
            size = config.crop.size
            # One template image per reference age (Table 5's baselines); set from training data by the trainer.
            self.register_buffer("templates", torch.zeros(config.num_references, 3, size, size, dtype=torch.uint8))
        with torch.no_grad():
            # Start at the mean training age: mean(y - delta) = mean(y) - bias when the head's weights are small.
            mean_ref = (config.num_references - 1) / 2.0
            self.decoder.fc.bias.fill_(config.init_age if config.daa_mode == "none" else mean_ref - config.init_age)

    def set_templates(self, images: torch.Tensor) -> None:
        """Template crops, one per reference age: R x 3 x S x S uint8."""
        if not hasattr(self, "templates"):
            raise ValueError(f"daa_mode {self.config.daa_mode!r} takes no templates")
        if images.shape != self.templates.shape:
            raise ValueError(f"templates must be {tuple(self.templates.shape)}, got {tuple(images.shape)}")
        self.templates.copy_(images)

    def style(self, refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) per reference: (S, T) from the mapping, or template (sigma, mu) for Eqs. 5 and 3."""
        if self.config.daa_mode == "binary":
            return self.mapping(refs)
        e_t = self.encoder(self.templates[refs].float() / 255.0)
        if self.config.daa_mode == "template_multi":
            mu, sigma = global_stats(e_t, self.config.eps)
        else:
            mu, sigma = (v.flatten(1) for v in channel_stats(e_t, self.config.eps))
        return sigma, mu

    def forward(self, x: torch.Tensor, interval: int = 1, factorised: bool = True) -> DAAOutput:
        refs = reference_ages(self.config.num_references, interval).to(x.device)
        e = self.encoder(x)
        if self.config.daa_mode == "none":
            age = self.decoder(e.unsqueeze(1)).squeeze(1)
            deltas = refs.to(age.dtype).unsqueeze(0) - age.unsqueeze(1)
            return DAAOutput(age, deltas, refs, torch.zeros_like(age))
        scale, shift = self.style(refs)
        if factorised and scale.dim() == 1:
            mu, sigma = channel_stats(e, self.config.eps)
            deltas = self.decoder.factorised(e, (e - mu) / sigma, scale, shift)
        else:
            deltas = self.decoder(daa(e, scale, shift, self.config.eps))
        estimates = refs.to(deltas.dtype).unsqueeze(0) - deltas
        return DAAOutput(estimates.mean(1), deltas, refs, estimates.std(1, unbiased=False))
