"""Choose ensemble weights on validation: a grid over the simplex of the members' validation predictions.

An ensemble's age is exactly the weighted mean of its members' ages (``model/ensemble.py``), so blending the
members' validation reports (``python -m training evaluate --subset val``) measures every weighting without
running a network. Choose here, on validation; measure the exported ensemble once on test.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np


def simplex(members: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector with entries in multiples of ``step`` that sum to 1 (each member at least one step)."""
    n = round(1 / step)
    grid = []
    for head in itertools.product(range(1, n), repeat=members - 1):
        last = n - sum(head)
        if last >= 1:
            grid.append(tuple(k / n for k in (*head, last)))
    return grid or [(1.0,)]


def best_weights(preds: list[np.ndarray], true: np.ndarray, step: float = 0.05) -> tuple[tuple[float, ...], float]:
    """The weights (a point of :func:`simplex`) with the lowest MAE of the weighted mean prediction, and that MAE."""
    stacked = np.stack(preds)
    best: tuple[tuple[float, ...], float] = ((1.0,), float("inf"))
    for w in simplex(len(preds), step):
        mae = float(np.abs(np.asarray(w) @ stacked - true).mean())
        if mae < best[1]:
            best = (w, mae)
    return best


def load_predictions(reports: list[Path]) -> tuple[list[np.ndarray], np.ndarray]:
    """Members' predictions aligned by image name (the reports must cover the same images)."""
    loaded = [json.loads(p.read_text())["predictions"] for p in reports]
    names = loaded[0]["names"]
    order = {n: i for i, n in enumerate(names)}
    preds = []
    for path, p in zip(reports, loaded):
        if sorted(p["names"]) != sorted(names):
            raise ValueError(f"{path} covers other images than {reports[0]}")
        aligned = np.empty(len(names))
        aligned[[order[n] for n in p["names"]]] = p["pred"]
        preds.append(aligned)
    return preds, np.asarray(loaded[0]["true"], dtype=np.float64)


def main(reports: list[Path], step: float) -> dict:
    preds, true = load_predictions(reports)
    weights, mae = best_weights(preds, true, step)
    result = {
        "members": [str(p) for p in reports],
        "member_mae": [round(float(np.abs(p - true).mean()), 4) for p in preds],
        "equal_weights_mae": round(float(np.abs(np.mean(preds, 0) - true).mean()), 4),
        "weights": [round(w, 4) for w in weights],
        "mae": round(mae, 4),
    }
    print(json.dumps(result))
    return result
