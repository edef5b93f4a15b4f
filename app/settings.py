"""All service settings, read once from environment variables prefixed ``DAA_`` (e.g. ``DAA_DEVICE=cuda``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:  # imported where used: reading settings needs neither torch nor the detector
    from model.faces import DetectorSettings
    from model.pipeline import PipelineLimits

DEFAULT_MODEL = "daa-dlibface150-distilled-utkface.pt"


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
    checkpoint: Path = Field(default_factory=default_checkpoint, description="DAA checkpoint to serve")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    threads: int = Field(
        1,
        ge=1,
        description=(
            "CPU threads of each kernel call (torch, ONNX Runtime); each worker already runs two stages at once "
            "(decode/detect and the model), so 1 keeps them from oversubscribing the cores"
        ),
    )
    flip_tta: bool = Field(
        False,
        description=(
            "also estimate each face's mirror image and pool both: twice the encoder work for a small gain "
            "(the default model's validation MAE 5.10 -> 5.02)"
        ),
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="auto: ONNX Runtime for the encoder and MTCNN on CPU when installed, else torch"
    )

    # Processes and admission
    workers: int = Field(1, ge=1, le=64, description="server processes, each with its own model and batcher")
    prepare_threads: int = Field(1, ge=1, le=64, description="decode/detect threads per worker")
    max_pending: int = Field(32, ge=1, description="requests admitted per worker at once (decode to answer); more get 503")

    # Batching across requests
    max_batch_size: int = Field(32, ge=1, le=1024, description="faces per model call")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="how long a batch waits to fill; 0: take the faces that queued while the model was busy",
    )
    max_queue: int = Field(256, ge=1, description="faces waiting for the model before 503")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503")

    # Uploads
    max_upload_bytes: int = Field(15 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height limit (decompression bombs)")

    # Detection
    min_face_size: int = Field(40, ge=12, description="default minimum face side in pixels")
    max_faces: int = Field(20, ge=1, le=100, description="default and upper limit of faces per image")
    detect_max_side: int = Field(
        1024, ge=64, le=4096, description="detection budget: photos are detected on a copy at most this long"
    )
    detection_threshold: float = Field(0.9, ge=0, le=1, description="minimum MTCNN face probability")
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)

    # Exposure
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated keys; when any is set, /estimate and /model need one"
    )
    api_keys_file: Path | None = Field(None, description="a file of keys, one per line (a mounted secret)")
    metrics_need_key: bool = Field(False, description="/metrics needs a key too (when keys are set)")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS; none by default"
    )

    # Server
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must send its request head within this")
    body_timeout_s: float = Field(30.0, gt=0, description="an upload must arrive within this")
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

    def detector_settings(self) -> DetectorSettings:
        """The detector these settings describe (the service and the bulk command both build theirs from it)."""
        from model.faces import DetectorSettings

        return DetectorSettings(
            min_face_size=self.min_face_size,
            thresholds=self.mtcnn_thresholds,
            min_score=self.detection_threshold,
            max_side=self.detect_max_side,
        )

    def pipeline_limits(self) -> PipelineLimits:
        from model.pipeline import PipelineLimits

        return PipelineLimits(
            max_image_pixels=self.max_image_pixels, max_faces=self.max_faces, min_face_size=self.min_face_size
        )

    def kernel_threads(self) -> int:
        return self.threads

    def keys(self) -> list[str]:
        """Every accepted API key: DAA_API_KEYS and the lines of DAA_API_KEYS_FILE (blank lines and # comments
        ignored). Read at start-up; a file that cannot be read stops start-up."""
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text().splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        return keys
