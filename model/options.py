"""What a caller may set on the pipeline, with the defaults the library and the service share.

``app/settings.py`` takes its defaults from these classes, so the library's defaults are the service's. This
module imports neither torch nor a detector: reading settings must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineOptions:
    """Per-photo options. ``None`` means the pipeline's default."""

    max_faces: int | None = None
    min_face_size: int | None = None
    interval: int = 1
    # ``"none"``: the photo is already a face crop, no detection (the pipeline's own detector otherwise).
    detector: str | None = None


@dataclass(frozen=True)
class PipelineLimits:
    """What any one photo may cost: its pixels, the faces estimated, the default minimum face size."""

    max_image_pixels: int = 40_000_000
    max_faces: int = 20
    min_face_size: int = 40


@dataclass(frozen=True)
class RuntimeOptions:
    """How the model runs. ``runtime``: ``auto`` (ONNX Runtime on CPU, torch on CUDA), ``torch`` or ``onnxruntime``.
    ``flip_tta``: also estimate each face's mirror image and pool both (twice the encoder work)."""

    device: str = "auto"
    runtime: str = "auto"
    flip_tta: bool = False
    threads: int = 1
