"""Inference helpers shared by the service, evaluation and training: device choice, crops to tensors, the served
prediction (optionally averaged with the mirrored crop), and batched prediction over a crop array."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import nn

from model.network import DAAOutput

M = TypeVar("M", bound=nn.Module)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; anything else as torch spells it (``cpu``, ``cuda:1``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


DENORMAL_FLOOR = 1e-30  # below this a float32 weight is (near) denormal: ~1e-38 in the dlib networks


def zero_denormals(t: torch.Tensor, floor: float = DENORMAL_FLOOR) -> torch.Tensor:
    """``t`` with its entries smaller than ``floor`` in magnitude set to zero (a new tensor)."""
    return torch.where(t.abs() < floor, torch.zeros_like(t), t) if t.is_floating_point() else t


@torch.no_grad()
def zero_denormal_weights(model: M, floor: float = DENORMAL_FLOOR) -> M:
    """Set weights smaller than ``floor`` (denormals, ~1e-38 in the dlib networks) to zero, in place.

    Denormal arithmetic is many times slower on x86 CPUs; these weights carry no information. Doing it to the
    weights keeps the speed (measured 1.6x on the dlib encoder) without ``torch.set_flush_denormal``, a process-wide
    CPU flag that a library must not flip under its host process.
    """
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            tensor.masked_fill_(tensor.abs() < floor, 0.0)
    return model


def crops_to_input(crops: torch.Tensor, device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """uint8 N x H x W x 3 crops (as :func:`model.faces.crop_face` makes them) -> float N x 3 x H x W in [0, 1]."""
    x = crops.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def predict_with_flip(model: nn.Module, x: torch.Tensor, interval: int = 1, flip: bool = True) -> DAAOutput:
    """The served prediction. With ``flip`` the mirrored crop's per-reference estimates y - delta_y join the
    original's: the age is their mean, the spread their standard deviation, the deltas the two crops' average."""
    if not flip:
        return model(x, interval=interval)
    # One pass over both crops: half the per-call overhead, which dominates at the service's small batches.
    both = model(torch.cat([x, torch.flip(x, dims=[3])]), interval=interval)
    n = len(x)
    a, b = both.age[:n], both.age[n:]
    # Equal-sized pooled variance: the spread over both crops' estimates, without needing the estimates (an
    # ensemble's deltas are already averaged over members, so they no longer carry its spread).
    spread = ((both.spread[:n] ** 2 + both.spread[n:] ** 2) / 2 + ((a - b) / 2) ** 2).sqrt()
    return DAAOutput((a + b) / 2, (both.deltas[:n] + both.deltas[n:]) / 2, both.references, spread)


@torch.no_grad()
def predict(
    model: nn.Module,
    crops: np.ndarray | torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    interval: int = 1,
    flip: bool = False,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Ages and spreads for an array of crops, as the service computes them (:func:`predict_with_flip`)."""
    model.eval()
    ages, spreads = [], []
    for i in range(0, len(crops), batch_size):
        chunk = torch.as_tensor(np.asarray(crops[i : i + batch_size]))
        x = crops_to_input(chunk, device, channels_last)
        out = predict_with_flip(model, x, interval, flip)
        ages.append(out.age.float().cpu())
        spreads.append(out.spread.float().cpu())
    if not ages:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
    return torch.cat(ages).numpy(), torch.cat(spreads).numpy()
