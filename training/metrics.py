"""MAE, cumulative accuracy CA(n) (section 4.1) and error per age decade."""

from __future__ import annotations

import numpy as np


def age_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    err = np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64))
    decades = {}
    for lo in range(0, 120, 10):
        mask = (true >= lo) & (true < lo + 10)
        if mask.any():
            decades[f"{lo}-{lo + 9}"] = {"mae": round(float(err[mask].mean()), 3), "count": int(mask.sum())}
    # CA(n): share of images whose absolute error is below n years, in percent.
    return {
        "mae": round(float(err.mean()), 4),
        **{f"ca{n}": round(float((err < n).mean() * 100), 2) for n in (3, 5, 7)},
        "count": int(len(err)),
        "per_decade": decades,
    }


def range_coverage(pred: np.ndarray, true: np.ndarray, spread: np.ndarray, scale: float) -> float:
    """Share of true ages inside pred +- scale x spread: how well the spread alone covers, as a diagnostic. The
    service's age_range is the checkpoint's range model (``model/ranges.py``), reported by ``range_report``."""
    err = np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64))
    return float((err <= scale * np.asarray(spread, dtype=np.float64)).mean())
