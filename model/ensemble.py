"""Several DAA networks behind one forward pass, their per-reference estimates pooled (a prediction ensemble).

Why: on UTKFace two networks fine-tuned from the same initialisation with different recipes err differently
enough that averaging them cut validation MAE by ~0.1 year, more than any single-network change we measured
(models/MODEL_CARD.md). An ensemble is stored as one checkpoint: the config lists the members' configs and the
state_dict holds ``members.<i>.*``; it loads, serves and evaluates like one network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.config import CropSpec, ModelConfig
from model.network import DAANet, DAAOutput


@dataclass
class EnsembleConfig:
    """Member configs; every member must read the same crop and give the same reference ages."""

    members: list[ModelConfig]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        first = self.members[0]
        for m in self.members[1:]:
            if m.crop != first.crop or m.num_references != first.num_references:
                raise ValueError("ensemble members must share the crop and the number of references")
        if not self.name:
            self.name = "+".join(m.name for m in self.members)

    @property
    def crop(self) -> CropSpec:
        return self.members[0].crop

    @property
    def num_references(self) -> int:
        return self.members[0].num_references

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleConfig:
        unknown = set(data) - {"name", "members"}
        if unknown:
            raise ValueError(f"unknown ensemble config keys: {sorted(unknown)}")
        members = data.get("members")
        if not isinstance(members, list):
            raise ValueError("an ensemble config needs a 'members' list")
        return cls([ModelConfig.from_dict(m) for m in members], data.get("name", ""))


class DAAEnsemble(nn.Module):
    """Runs every member on the same input. Age: the mean of all members' y - delta_y (so the mean of their
    ages); deltas: the members' mean; spread: the standard deviation of the pooled estimates, which adds the
    members' disagreement to each one's spread over references."""

    members: nn.ModuleList

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(DAANet(c) for c in config.members)

    def forward(self, x: torch.Tensor, interval: int = 1, factorised: bool = True) -> DAAOutput:
        outs = [m(x, interval=interval, factorised=factorised) for m in self.members]
        refs = outs[0].references
        estimates = torch.cat([refs.to(o.deltas.dtype).unsqueeze(0) - o.deltas for o in outs], 1)
        deltas = torch.stack([o.deltas for o in outs]).mean(0)
        return DAAOutput(estimates.mean(1), deltas, refs, estimates.std(1, unbiased=False))


def from_networks(networks: list[DAANet], name: str = "") -> DAAEnsemble:
    """An ensemble holding (copies of) trained networks' weights."""
    ensemble = DAAEnsemble(EnsembleConfig([n.config for n in networks], name))
    for member, net in zip(ensemble.members, networks):
        member.load_state_dict(net.state_dict(), strict=True)
    return ensemble.eval()


def networks(model: nn.Module) -> list[DAANet]:
    """The DAA networks inside a model: itself, or an ensemble's members."""
    return [m for m in model.modules() if isinstance(m, DAANet)]
