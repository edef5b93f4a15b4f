"""All service settings, read once from environment variables prefixed ``DAA_`` (e.g. ``DAA_DEVICE=cuda``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "daa-dlib-ensemble-utkface.pt"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DAA_", extra="ignore")

    # Model
    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="DAA checkpoint to serve")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    flip_tta: bool = Field(True, description="average each face with its mirror image (as the model card measured)")
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="auto: ONNX Runtime for the encoder and MTCNN on CPU when installed, else torch")

    # Batching across requests
    max_batch_size: int = Field(32, ge=1, le=1024, description="faces per model call")
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000,
        description="how long a batch waits to fill; 0: take the faces that queued while the model was busy")
    max_queue: int = Field(256, ge=1, description="faces waiting for the model before 503")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503")

    # Uploads
    max_upload_bytes: int = Field(15 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height limit (decompression bombs)")

    # Detection
    min_face_size: int = Field(40, ge=12, description="default minimum face side in pixels")
    max_faces: int = Field(20, ge=1, description="default and upper limit of faces per image")
    detect_max_side: int = Field(640, ge=64, description="detect on a copy downscaled to this longer side")
    detection_threshold: float = Field(0.9, ge=0, le=1, description="minimum MTCNN face probability")
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)

    # Server
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
