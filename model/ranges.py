"""The 95% age range: age +- half-width, where the half-width follows the expected error of this face.

The spread of y - delta_y ranks errors but is no standard error, and errors grow with age (a 2-year-old's
estimate is off by ~2 years, a 60-year-old's by ~8). Split conformal prediction with a normalised score: on
validation data fit sigma(x) = a + b x spread + c x age (least squares on the absolute errors), then take q, the
95% quantile of |error| / sigma(x) (with the finite-sample correction). On new faces age +- q x sigma(x) then
covers the true age 95% of the time (exchangeability), and is narrow where the model is reliable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FLOOR = 0.5  # years: sigma(x) never below this, so no range collapses to a point


@dataclass(frozen=True)
class RangeModel:
    intercept: float
    spread: float
    age: float
    q: float
    floor: float = FLOOR

    def half_width(self, age: float, spread: float) -> float:
        sigma = self.intercept + self.spread * spread + self.age * min(max(age, 0.0), 100.0)
        return self.q * max(sigma, self.floor)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeModel:
        return cls(**{k: float(data[k]) for k in ("intercept", "spread", "age", "q", "floor") if k in data})


def fit_range_model(pred: np.ndarray, true: np.ndarray, spread: np.ndarray, coverage: float = 0.95) -> RangeModel:
    pred, true, spread = (np.asarray(a, dtype=np.float64) for a in (pred, true, spread))
    err = np.abs(pred - true)
    x = np.stack([np.ones_like(pred), spread, np.clip(pred, 0, 100)], 1)
    (a, b, c), *_ = np.linalg.lstsq(x, err, rcond=None)
    sigma = np.maximum(x @ np.array([a, b, c]), FLOOR)
    n = len(err)
    level = min(1.0, np.ceil((n + 1) * coverage) / n)
    q = float(np.quantile(err / sigma, level))
    return RangeModel(float(a), float(b), float(c), q)


def range_report(model: RangeModel, pred: np.ndarray, true: np.ndarray, spread: np.ndarray) -> dict[str, Any]:
    """Coverage and mean width, overall and per decade of true age."""
    half = np.array([model.half_width(float(p), float(s)) for p, s in zip(pred, spread)])
    true = np.asarray(true, dtype=np.float64)
    inside = np.abs(np.asarray(pred, dtype=np.float64) - true) <= half
    decades = {}
    for lo in range(0, 120, 10):
        m = (true >= lo) & (true < lo + 10)
        if m.any():
            decades[f"{lo}-{lo + 9}"] = {
                "coverage": round(float(inside[m].mean()), 4),
                "mean_width": round(float(2 * half[m].mean()), 2),
                "count": int(m.sum()),
            }
    return {
        "coverage": round(float(inside.mean()), 4),
        "mean_width": round(float(2 * half.mean()), 2),
        "per_decade": decades,
    }
