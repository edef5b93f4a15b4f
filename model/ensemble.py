"""Several DAA networks behind one forward pass, their per-reference estimates pooled (a prediction ensemble).

Why: on UTKFace two networks fine-tuned from the same initialisation with different recipes err differently
enough that averaging them cut validation MAE by ~0.1 year, more than any single-network change we measured
(models/MODEL_CARD.md). An ensemble is stored as one checkpoint: the config lists the members' configs (and
optionally their weights) and the state_dict holds ``members.<i>.*``; it loads, serves and evaluates like one
network.

Members may be trained on different crops of the same detection (e.g. the dlib age networks on a tight 1.05 x box
crop, the face-recognition network on a loose 1.5 x crop). Every crop is a square centred on the same point and
rotated by the same angle (:func:`model.faces.crop_geometry`), so a tighter crop is exactly the central window of
a looser one. The ensemble therefore takes one input, the loosest member's crop (its *canvas*), and resamples each
tighter member's window from it: the pipeline still makes one crop per face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.config import CropSpec, ModelConfig
from model.network import DAANet, DAAOutput


@dataclass
class EnsembleConfig:
    """Member configs and their weights (``None``: equal). Members must give the same reference ages and agree on
    eye alignment; their crops may differ in size and framing (see the module docstring)."""

    members: list[ModelConfig]
    name: str = ""
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        first = self.members[0]
        for m in self.members[1:]:
            if m.num_references != first.num_references:
                raise ValueError("ensemble members must share the number of references")
            if m.crop.align != first.crop.align:
                raise ValueError("ensemble members must agree on eye alignment (a tighter crop must be a window)")
        if self.weights is not None:
            if len(self.weights) != len(self.members) or any(not w > 0 for w in self.weights):
                raise ValueError("ensemble weights must be one positive number per member")
            total = float(sum(self.weights))
            self.weights = [float(w) / total for w in self.weights]
        if not self.name:
            self.name = "+".join(m.name for m in self.members)

    @property
    def crop(self) -> CropSpec:
        """The canvas: the loosest member crop (largest scale, then largest size), from which every member's own
        crop is a central window."""
        return max((m.crop for m in self.members), key=lambda c: (c.scale, c.size))

    @property
    def num_references(self) -> int:
        return self.members[0].num_references

    def member_weights(self) -> list[float]:
        return self.weights or [1.0 / len(self.members)] * len(self.members)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "members": [m.to_dict() for m in self.members]}
        if self.weights is not None:
            out["weights"] = self.weights
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnsembleConfig:
        unknown = set(data) - {"name", "members", "weights"}
        if unknown:
            raise ValueError(f"unknown ensemble config keys: {sorted(unknown)}")
        members = data.get("members")
        if not isinstance(members, list):
            raise ValueError("an ensemble config needs a 'members' list")
        weights = data.get("weights")
        if weights is not None and not (isinstance(weights, list) and all(isinstance(w, int | float) for w in weights)):
            raise ValueError("ensemble weights must be a list of numbers")
        return cls([ModelConfig.from_dict(m) for m in members], data.get("name", ""), weights)


def crop_window(x: torch.Tensor, canvas: CropSpec, crop: CropSpec) -> torch.Tensor:
    """The ``crop`` of each face in ``x`` (N x 3 x S x S, made with ``canvas``): its central window of relative
    side ``crop.scale / canvas.scale``, resampled to ``crop.size`` pixels. Exact geometry (bilinear sampling at
    the window's pixel centres); a window with more pixels than the output is first low-passed by an
    antialiased resize of the whole canvas, so no detail aliases."""
    if crop == canvas:
        return x
    ratio = crop.scale / canvas.scale
    if ratio > 1:
        raise ValueError(f"crop scale {crop.scale} is looser than the canvas's {canvas.scale}")
    if ratio * x.shape[-1] > crop.size * 1.25:
        side = max(crop.size, round(crop.size / ratio))
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    theta = torch.tensor([[ratio, 0.0, 0.0], [0.0, ratio, 0.0]], dtype=x.dtype, device=x.device)
    # x.shape[0], not len(x): the ONNX export traces the batch size as a dimension, not as a constant.
    n = x.shape[0]
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, x.shape[1], crop.size, crop.size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class DAAEnsemble(nn.Module):
    """Runs every member on its window of the same input (the canvas crop). Age: the weighted mean of all
    members' y - delta_y (so the weighted mean of their ages); deltas: the members' weighted mean; spread: the
    weighted standard deviation of the pooled estimates, which adds the members' disagreement to each one's
    spread over references."""

    members: nn.ModuleList

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(DAANet(c) for c in config.members)

    def forward(self, x: torch.Tensor, interval: int = 1, factorised: bool = True) -> DAAOutput:
        canvas = self.config.crop
        outs = [
            m(crop_window(x, canvas, c.crop), interval=interval, factorised=factorised)
            for m, c in zip(self.members, self.config.members)
        ]
        refs = outs[0].references
        weights = self.config.member_weights()
        # Each member's weight spread over its references: the pooled estimates' weighted mean and spread.
        w = torch.cat([torch.full((len(refs),), wm / len(refs)) for wm in weights]).to(outs[0].deltas)
        estimates = torch.cat([refs.to(o.deltas.dtype).unsqueeze(0) - o.deltas for o in outs], 1)
        age = estimates @ w
        spread = ((estimates - age.unsqueeze(1)) ** 2 @ w).clamp_min(0).sqrt()
        deltas = sum(wm * o.deltas for wm, o in zip(weights, outs))
        assert isinstance(deltas, torch.Tensor)
        return DAAOutput(age, deltas, refs, spread)


def from_networks(networks: list[DAANet], name: str = "", weights: list[float] | None = None) -> DAAEnsemble:
    """An ensemble holding (copies of) trained networks' weights."""
    ensemble = DAAEnsemble(EnsembleConfig([n.config for n in networks], name, weights))
    for member, net in zip(ensemble.members, networks):
        member.load_state_dict(net.state_dict(), strict=True)
    return ensemble.eval()


def networks(model: nn.Module) -> list[DAANet]:
    """The DAA networks inside a model: itself, or an ensemble's members."""
    return [m for m in model.modules() if isinstance(m, DAANet)]
