"""What the model side returns per face, shared by the torch and the torch-free estimators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.ranges import RangeModel


@dataclass
class FaceResult:
    age: float
    spread: float
    deltas: list[float]


class CalibratedRanges:
    """The age range and reference ages both estimators answer with, from a model's metadata: the checkpoint's
    age-dependent range model (``model/ranges.py``), or for older checkpoints age +- range_factor x spread (its
    "range_factor_95", before format version 3 "uncertainty_scale_95")."""

    metadata: dict[str, Any]
    num_references: int

    def _read_ranges(self) -> None:
        ranges = self.metadata.get("range_model")
        self.range_model = RangeModel.from_dict(ranges) if isinstance(ranges, dict) else None
        self.range_factor = float(self.metadata.get("range_factor_95", self.metadata.get("uncertainty_scale_95", 1.96)))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", self.metadata.get("code_version", "unknown")))

    def half_width(self, age: float, spread: float) -> float:
        """Half the width of the 95% range the model card calibrated."""
        return self.range_model.half_width(age, spread) if self.range_model else self.range_factor * spread

    def age_range(self, age: float, spread: float) -> tuple[float, float]:
        """The 95% range the model card calibrated, floored at 0."""
        half = self.half_width(age, spread)
        return max(age - half, 0.0), age + half

    def references(self, interval: int) -> list[int]:
        return list(range(0, self.num_references, interval))
