"""All service settings, read once from environment variables prefixed ``DAA_`` (e.g. ``DAA_DEVICE=cuda``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.batching import MicroBatcher
from model.detection import DetectorSettings
from model.options import PipelineLimits, RuntimeOptions, WorkerLimits
from model.video import VideoLimits

# Every default below that the library also has is taken from the library's class (model/options.py,
# model/detection.py, app/batching.py): the library's defaults are the service's. None of these import torch.
_LIMITS, _RUNTIME, _DETECTOR, _WORKER = PipelineLimits(), RuntimeOptions(), DetectorSettings(), WorkerLimits()
_VIDEO = VideoLimits()
_BATCHER = MicroBatcher.DEFAULTS

# The bundled model as one ONNX graph with its encoder in int8 (python -m training quantize): served by ONNX
# Runtime without torch, about twice as fast per face on CPU as the float graph for +0.04 test MAE (4.803 against
# 4.767; models/MODEL_CARD.md).
# The float graph (".onnx") and the torch checkpoint (".pt") of the same network ship beside it: CUDA serves the
# .pt (pip install "daa-age[torch]"; the GPU image and overlay set it).
DEFAULT_MODEL = "daa-faceres160-distilled-utkface.int8.onnx"


def default_checkpoint() -> Path:
    """The bundled model: ``models/`` of a source checkout, or ``share/daa-age/models`` where ``pip install .``
    put it (pyproject's data-files), so an installed package finds its own model."""
    candidates = [
        Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL,
        Path(sys.prefix) / "share" / "daa-age" / "models" / DEFAULT_MODEL,
    ]
    return next((c for c in candidates if c.is_file()), candidates[0])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DAA_", extra="ignore")

    # Model
    checkpoint: Path = Field(
        default_factory=default_checkpoint,
        description="DAA model to serve: an exported .onnx graph (no torch needed) or a torch .pt checkpoint",
    )
    device: str = Field(_RUNTIME.device, description="auto (CUDA when present), cpu, cuda or cuda:N")
    threads: int = Field(
        _RUNTIME.threads,
        ge=1,
        description=(
            "CPU threads of each kernel call (torch, ONNX Runtime); each worker already runs two stages at once "
            "(decode/detect and the model), so 1 keeps them from oversubscribing the cores"
        ),
    )
    flip_tta: bool = Field(
        _RUNTIME.flip_tta,
        description=(
            "also estimate each face's mirror image and pool both: twice the encoder work for a small gain "
            "(the default model's validation MAE 5.10 -> 5.02)"
        ),
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        _RUNTIME.runtime,  # type: ignore[arg-type]
        description="auto: ONNX Runtime for the encoder and the detector on CPU, torch on CUDA",
    )

    # Processes and admission
    workers: int = Field(1, ge=1, le=64, description="server processes, each with its own model and batcher")
    prepare_threads: int = Field(
        1, ge=1, le=64, description="photos decoded and searched at once per worker (each in its decode process)"
    )
    max_pending: int = Field(32, ge=1, description="requests admitted per worker at once (decode to answer); more get 503")
    decode_isolation: bool = Field(
        True,
        description=(
            "decode, detect and crop in worker processes that the kernel stops at DAA_DECODE_CPU_S / "
            "DAA_DECODE_MEMORY_MB (false: in threads of the server, bounded only by the format checks)"
        ),
    )
    decode_cpu_s: float = Field(
        _WORKER.cpu_s, gt=0, le=120, description="CPU seconds one photo may take to decode and search"
    )
    decode_memory_mb: int = Field(
        _WORKER.memory_bytes // (1024 * 1024),
        ge=64,
        description="memory one photo may take to decode and search, beyond the decode process's own",
    )

    # Batching across requests
    max_batch_size: int = Field(_BATCHER["max_batch"], ge=1, le=1024, description="faces per model call")
    max_wait_ms: float = Field(
        _BATCHER["max_wait_s"] * 1000.0,
        ge=0,
        le=1000,
        description="how long a batch waits to fill; 0: take the faces that queued while the model was busy",
    )
    max_queue: int = Field(_BATCHER["max_queue"], ge=1, description="faces waiting for the model before 503")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503")

    # Uploads
    max_upload_bytes: int = Field(15 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(_LIMITS.max_image_pixels, ge=1, description="width x height limit (decompression bombs)")

    # Video (POST /estimate/video)
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1, description="video upload limit")
    video_fps: float = Field(_VIDEO.fps, gt=0, description="default frames sampled per second of a clip")
    video_max_fps: float = Field(_VIDEO.max_fps, gt=0, le=120, description="the most frames per second a caller may ask")
    max_video_duration_s: float = Field(_VIDEO.max_duration_s, gt=0, description="longest clip, declared or decoded")
    max_video_frame_pixels: int = Field(_VIDEO.max_frame_pixels, ge=1, description="largest frame, width x height")
    max_video_decoded_frames: int = Field(
        _VIDEO.max_decoded_frames, ge=1, description="frames a clip may make the decoder decode, sampled or not"
    )
    max_video_sampled_frames: int = Field(_VIDEO.max_sampled_frames, ge=1, description="frames searched per clip")
    max_video_faces: int = Field(_VIDEO.max_faces, ge=1, description="faces over all sampled frames of a clip")
    video_cpu_s: float = Field(_WORKER.video_cpu_s, gt=0, description="CPU seconds a clip may take to decode and search")

    # Detection
    detector: str = Field(_DETECTOR.name, description="face detector: mtcnn, yunet, or none (photos are face crops)")
    min_face_size: int = Field(_LIMITS.min_face_size, ge=12, description="default minimum face side in pixels")
    max_faces: int = Field(_LIMITS.max_faces, ge=1, le=100, description="default and upper limit of faces per image")
    detect_max_side: int = Field(
        _DETECTOR.max_side, ge=64, le=4096, description="detection budget: photos are detected on a copy at most this long"
    )
    detection_threshold: float | None = Field(
        _DETECTOR.min_score, ge=0, le=1, description="minimum detection score (default: the detector's own)"
    )
    detect_detail: float | None = Field(
        _DETECTOR.detail,
        ge=12,
        description="shrink photos for detection while the minimum face keeps this many pixels (default: never)",
    )
    mtcnn_thresholds: tuple[float, float, float] | None = Field(
        None, description="MTCNN's three stage thresholds (default: its own, 0.6, 0.7, 0.7)"
    )

    # Exposure
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated keys; when any is set, /estimate and /model need one"
    )
    api_keys_file: Path | None = Field(None, description="a file of keys, one per line (a mounted secret)")
    metrics_need_key: bool = Field(False, description="/metrics needs a key too (when keys are set)")
    api_docs: bool = Field(True, description="serve /docs and /redoc (their scripts come from a CDN: off for offline)")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS; none by default"
    )

    # Server
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must send its request head within this")
    body_timeout_s: float = Field(30.0, gt=0, description="an upload must arrive within this")
    min_upload_rate: float = Field(
        16384.0, ge=0, description="bytes/s an upload must average after its first 2 s (0: no floor); slower: 408"
    )
    max_upload_memory_mb: int = Field(
        256, ge=1, description="upload bodies held at once per worker; a new one beyond it is read, dropped and 503"
    )
    keepalive_timeout_s: int = Field(5, ge=1, description="idle keep-alive connections close after this")
    max_connections: int = Field(
        4096, ge=8, description="open connections per worker; more get 503 (idle ones close after the head timeout)"
    )

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_queue < self.max_faces:
            raise ValueError(
                f"DAA_MAX_QUEUE ({self.max_queue}) must hold at least one photo's faces "
                f"(DAA_MAX_FACES = {self.max_faces}), or such a photo could never be served"
            )
        return self

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        from model.detection import list_detectors

        if value not in list_detectors():
            raise ValueError(f"unknown detector {value!r}; choose one of {list_detectors()}")
        return value

    def detector_settings(self) -> DetectorSettings:
        """The detector these settings describe (the service, the bulk command and ``training preprocess`` all
        build theirs from it)."""
        options: dict = {}
        if self.detector == "mtcnn" and self.mtcnn_thresholds is not None:
            options["thresholds"] = self.mtcnn_thresholds
        return DetectorSettings(
            name=self.detector,
            max_side=self.detect_max_side,
            min_score=self.detection_threshold,
            min_face_size=self.min_face_size,
            detail=self.detect_detail,
            options=options,
        )

    def pipeline_limits(self) -> PipelineLimits:
        return PipelineLimits(
            max_image_pixels=self.max_image_pixels, max_faces=self.max_faces, min_face_size=self.min_face_size
        )

    def worker_limits(self) -> WorkerLimits:
        return WorkerLimits(
            cpu_s=self.decode_cpu_s, video_cpu_s=self.video_cpu_s, memory_bytes=self.decode_memory_mb * 1024 * 1024
        )

    def video_limits(self) -> VideoLimits:
        return VideoLimits(
            max_duration_s=self.max_video_duration_s,
            max_frame_pixels=self.max_video_frame_pixels,
            max_decoded_frames=self.max_video_decoded_frames,
            max_sampled_frames=self.max_video_sampled_frames,
            max_faces=self.max_video_faces,
            fps=self.video_fps,
            max_fps=self.video_max_fps,
        )

    def runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(device=self.device, runtime=self.runtime, flip_tta=self.flip_tta, threads=self.threads)

    def keys(self) -> list[str]:
        """Every accepted API key: DAA_API_KEYS and the lines of DAA_API_KEYS_FILE (blank lines and # comments
        ignored). Read at start-up; a file that cannot be read stops start-up."""
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text().splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        return keys
