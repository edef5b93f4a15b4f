"""Request options and response models: the service's public contract, as the OpenAPI schema shows it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from model.errors import ErrorCode


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer has this body."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"code": "invalid_image", "message": "the upload is not an image this service can read", "detail": None}
            ]
        }
    )
    code: ErrorCode = Field(description="machine-readable error code")
    message: str = Field(description="human-readable explanation")
    detail: Any = Field(None, description="extra context, e.g. the validation errors or the limit exceeded")


class Box(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class Point(BaseModel):
    x: float
    y: float


class AgeRange(BaseModel):
    low: float = Field(
        description="age - w, floored at 0: a 95% range whose half-width w follows this face's expected error "
        "(its spread and age; GET /model: range_model), calibrated on the model's validation data"
    )
    high: float = Field(description="age + w")


class FaceEstimate(BaseModel):
    box: Box = Field(description="face box in the uploaded image's pixels (after EXIF orientation)")
    detection_score: float = Field(ge=0, le=1)
    landmarks: list[Point] = Field(description="left eye, right eye, nose, left and right mouth corner")
    age: float = Field(description="estimated age in years: mean over references of (y - delta_y), paper Eq. 9")
    uncertainty: float = Field(ge=0, description="spread (standard deviation) of y - delta_y over the references")
    age_range: AgeRange
    delta_ages: list[float] | None = Field(
        None, description="delta age to each reference age in reference_ages, in order (omitted when not asked)"
    )


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str | None = None


class ModelRef(BaseModel):
    name: str
    version: str


class Timing(BaseModel):
    decode_ms: float
    detect_ms: float
    estimate_ms: float
    total_ms: float


class EstimateResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "faces": [
                        {
                            "box": {"x1": 90.1, "y1": 33.4, "x2": 133.2, "y2": 86.0},
                            "detection_score": 0.999,
                            "landmarks": [
                                {"x": 101.2, "y": 55.0},
                                {"x": 121.9, "y": 55.3},
                                {"x": 111.6, "y": 66.1},
                                {"x": 103.0, "y": 75.4},
                                {"x": 119.8, "y": 75.6},
                            ],
                            "age": 38.4,
                            "uncertainty": 2.1,
                            "age_range": {"low": 34.3, "high": 42.5},
                            "delta_ages": [-38.2, -29.1, -18.7, -8.9, 1.2, 11.0, 21.4, 31.3, 41.5, 51.6],
                        }
                    ],
                    "reference_ages": [0, 10, 20, 30, 40, 50, 60, 70, 80, 90],
                    "min_face_size": 40,
                    "image": {"width": 256, "height": 256, "format": "JPEG"},
                    "model": {"name": "daa-faceres160-distilled-utkface", "version": "0.3.0+int8"},
                    "timing": {"decode_ms": 1.2, "detect_ms": 30.5, "estimate_ms": 6.1, "total_ms": 38.9},
                }
            ]
        }
    )
    faces: list[FaceEstimate] = Field(description="detected faces, largest first; empty when there is none")
    reference_ages: list[int] = Field(description="the reference ages y the delta ages refer to")
    min_face_size: float = Field(
        description="the smallest face searched for, in the photo's pixels: the request's "
        "or the default minimum, raised where the detection budget needs it"
    )
    image: ImageInfo
    model: ModelRef
    timing: Timing


class HealthResponse(BaseModel):
    status: str = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    model: str | None = None
    device: str | None = None


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: dict[str, Any] = Field(
        description="the model config stored in the checkpoint; an ensemble's lists its members' configs under 'members'"
    )
    parameters: int
    reference_ages: list[int]
    reference_intervals: list[int]
    crop: dict[str, Any]
    device: str
    runtime: Literal["torch", "onnxruntime"] = Field(description="what runs the encoder and MTCNN")
    flip_tta: bool
    range_factor: float = Field(
        description="k in age +- k x uncertainty, the 95% range of checkpoints without a range_model"
    )
    range_model: dict[str, float] | None = Field(
        None,
        description="age_range half-width = q x max(floor, intercept + spread x uncertainty + age x age), fitted "
        "on validation data (split conformal prediction) so the range holds 95% of true ages",
    )
    metrics: dict[str, Any] = Field(description="the model card's evaluation metrics, from the checkpoint metadata")
    training: dict[str, Any] = Field(description="data, split and command the checkpoint was trained with")


class TrackFrame(BaseModel):
    t: float = Field(description="seconds from the clip's first frame")
    box: Box = Field(description="face box in the frame's pixels")
    detection_score: float = Field(ge=0, le=1)
    age: float = Field(description="this frame's own estimate")
    uncertainty: float = Field(ge=0)
    track_age: float = Field(description="the track's fused age over its frames up to this one (steady for display)")


class TrackEstimate(BaseModel):
    id: int = Field(description="track number, in order of first appearance")
    start_s: float = Field(description="time of the track's first sampled frame")
    end_s: float = Field(description="time of its last")
    frames: int = Field(description="sampled frames in which this face was found")
    age: float = Field(description="fused age: the frames' ages weighted by their uncertainty")
    uncertainty: float = Field(ge=0, description="the frames' spread, weighted as the age is")
    age_range: AgeRange = Field(
        description=(
            "95% range of the fused age: narrower than one frame's only as far as frames of one face are "
            "independent evidence (calibrated, benchmarks/README.md 'Video')"
        )
    )
    frame_estimates: list[TrackFrame] | None = Field(None, description="per sampled frame (omitted unless asked)")


class VideoInfoOut(BaseModel):
    width: int
    height: int
    container: str
    codec: str
    duration_s: float | None = Field(description="as the clip declares it")
    frame_rate: float | None = Field(description="the stream's average frame rate, as declared")
    frames_decoded: int
    frames_sampled: int


class VideoEstimateResponse(BaseModel):
    tracks: list[TrackEstimate] = Field(description="every tracked face, in order of first appearance")
    fps: float = Field(description="the sampling rate used")
    reference_ages: list[int]
    video: VideoInfoOut
    model: ModelRef
    timing: Timing
