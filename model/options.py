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
class WorkerLimits:
    """What a photo may cost where the server decodes it in a worker process (``app/front_workers.py``): CPU
    seconds, bytes of memory beyond the worker's idle size, and a wall-clock backstop for a worker that waits."""

    cpu_s: float = 2.0
    video_cpu_s: float = 120.0  # a clip: decoding every frame and searching the sampled ones
    memory_bytes: int = 1024 * 1024 * 1024
    wall_factor: float = 5.0  # the backstop is this many times cpu_s (only a wait, never CPU, can reach it)

    def wall_s(self, cpu_s: float) -> float:
        """The wall-clock backstop for a job of ``cpu_s`` CPU seconds (a photo's or a clip's)."""
        return max(cpu_s * self.wall_factor, 5.0)


@dataclass(frozen=True)
class RuntimeOptions:
    """How the model runs. ``runtime``: ``auto`` (ONNX Runtime on CPU, torch on CUDA), ``torch`` or ``onnxruntime``.
    ``flip_tta``: also estimate each face's mirror image and pool both (twice the encoder work)."""

    device: str = "auto"
    runtime: str = "auto"
    flip_tta: bool = False
    threads: int = 1
