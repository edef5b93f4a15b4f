"""``build_model(config)``: the network a stored config describes, one DAA network or an ensemble of them."""

from __future__ import annotations

from typing import Any

from torch import nn

from model.config import ModelConfig
from model.ensemble import DAAEnsemble, EnsembleConfig
from model.network import DAANet

DAAModel = DAANet | DAAEnsemble


def parse_config(config: dict[str, Any]) -> ModelConfig | EnsembleConfig:
    """A stored config: an ensemble's (a dict with ``members``) or one network's."""
    return EnsembleConfig.from_dict(config) if "members" in config else ModelConfig.from_dict(config)


def build_model(config: ModelConfig | EnsembleConfig | dict[str, Any]) -> DAAModel:
    """A :class:`DAANet`, or a :class:`DAAEnsemble` for an ensemble config (a dict with ``members``)."""
    if isinstance(config, dict):
        config = parse_config(config)
    return DAAEnsemble(config) if isinstance(config, EnsembleConfig) else DAANet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
