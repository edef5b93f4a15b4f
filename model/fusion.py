"""One age per track: the frames' ages weighted by their uncertainty, and a range that narrows only as far as
frames of one face are independent evidence.

Each frame's estimate comes with the 95% half-width h_i the range model gives it (``model/ranges.py``), which is
proportional to its expected error. The fused age is the inverse-variance weighted mean (weights 1 / h_i^2). Frames of
one face are not independent: the same face, light and camera make the same error, so with correlation rho between
frame errors the weighted mean's variance is

    H^2 = (1 - rho) * sum(v_i^2 h_i^2) + rho * (sum(v_i h_i))^2,     v_i = w_i / sum(w)

which is h^2 / n for n independent frames (rho = 0) and stays h^2 for rho = 1: a hundred frames of one photo
are one photo's evidence. ``FRAME_ERROR_CORRELATION`` is measured by ``benchmarks/video_bench.py`` as the
value whose fused ranges cover the true age of 95% of its tracks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Chosen together on the validation clips of benchmarks/video_bench.py (for each rho the smallest scale whose
# coverage reaches 95%, then the pair with the narrowest ranges), for the default model's ranges: with the FaceRes
# student (2026-12-02 evening, 120 clips, 244 tracks) rho 1.0, scale 1.25: 95.0% of validation tracks and 94.2% of
# test tracks covered, 30.5 years wide (the previous default's pair was 0.8, 1.45 at 33.2 years). Frames of a clip
# (motion, turned faces, blur, compression) are harder than the photos the single-face range was calibrated on,
# so the fused range is widened by the scale; benchmarks/README.md ("Video") has the runs.
FRAME_ERROR_CORRELATION = 1.0
FUSED_RANGE_SCALE = 1.25


@dataclass(frozen=True)
class Fused:
    age: float
    spread: float  # the frames' weighted spread, as a per-face uncertainty
    half_width: float  # of the fused 95% range
    frames: int

    @property
    def age_range(self) -> tuple[float, float]:
        return max(self.age - self.half_width, 0.0), self.age + self.half_width


def fuse(
    ages: Sequence[float],
    spreads: Sequence[float],
    half_widths: Sequence[float],
    rho: float = FRAME_ERROR_CORRELATION,
    scale: float = FUSED_RANGE_SCALE,
) -> Fused:
    """Fuse one track's frames: their ages, spreads and single-frame 95% half-widths."""
    a = np.asarray(ages, dtype=np.float64)
    h = np.maximum(np.asarray(half_widths, dtype=np.float64), 1e-3)
    v = 1.0 / h**2
    v /= v.sum()
    half = ((1.0 - rho) * float(v**2 @ h**2) + rho * float(v @ h) ** 2) ** 0.5
    return Fused(float(v @ a), float(v @ np.asarray(spreads, dtype=np.float64)), scale * half, len(a))


def running(ages: Sequence[float], spreads: Sequence[float], half_widths: Sequence[float]) -> list[Fused]:
    """The fused estimate after each frame (what a live display would show at that frame)."""
    return [fuse(ages[: i + 1], spreads[: i + 1], half_widths[: i + 1]) for i in range(len(ages))]
