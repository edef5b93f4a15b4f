"""What the model side returns per face, shared by the torch and the torch-free estimators."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FaceResult:
    age: float
    spread: float
    deltas: list[float]
