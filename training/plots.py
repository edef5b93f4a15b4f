"""PNG plots for a model card: learned S and T against age (paper Fig. 3), error per decade, predicted vs true."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.ensemble import networks


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def plot_style_curves(model: nn.Module, path: Path) -> bool:
    """S and T against reference age (paper Fig. 3), one line per network with a binary code mapping (an
    ensemble's members). Returns False, writing nothing, when no network has one."""
    nets = [n for n in networks(model) if n.config.daa_mode == "binary"]
    if not nets:
        return False
    plt = _pyplot()
    refs = torch.arange(nets[0].config.num_references)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for net in nets:
        with torch.no_grad():
            s, t = net.mapping(refs)
        for a, v in ((ax[0], s), (ax[1], t)):
            a.plot(refs.numpy(), v.numpy(), lw=1.5, label=net.config.name)
    for a, name in ((ax[0], "S (learned style std)"), (ax[1], "T (learned style mean)")):
        a.set_xlabel("reference age y")
        a.set_title(name)
        a.grid(alpha=0.3)
    if len(nets) > 1:
        ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_decades(result: dict, path: Path) -> None:
    plt = _pyplot()
    dec = result["per_decade"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(list(dec), [d["mae"] for d in dec.values()], color="#4477aa")
    for i, d in enumerate(dec.values()):
        ax.text(i, d["mae"], str(d["count"]), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("MAE (years)")
    ax.set_xlabel("true age (count above bars)")
    ax.set_title(f"MAE per decade (overall {result['mae']:.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pred_vs_true(true: np.ndarray, pred: np.ndarray, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(true, pred, s=3, alpha=0.3)
    hi = max(float(np.max(true)), float(np.max(pred))) + 2
    ax.plot([0, hi], [0, hi], "k--", lw=1)
    ax.set_xlabel("true age")
    ax.set_ylabel("predicted age")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
