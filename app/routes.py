"""HTTP routes: short, typed, and all work delegated. ``POST /estimate`` admits the request, reads the upload as
it streams, runs it through the pipeline (``model/pipeline.py``) and turns the result into the response."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from app.batching import BatchFailed, QueueFull
from app.errors import APIError
from app.multipart import ENVELOPE_BYTES, Upload
from app.schemas import (
    AgeRange,
    Box,
    ErrorResponse,
    EstimateResponse,
    FaceEstimate,
    HealthResponse,
    ImageInfo,
    ModelInfo,
    ModelRef,
    Point,
    ReadyResponse,
    Timing,
)
from app.security import metrics_access, require_key
from app.service import Service
from app.uploads import check_upload_head, drain_upload, receive_upload
from model.config import REFERENCE_INTERVALS
from model.errors import ErrorCode, InputError
from model.pipeline import ClientGone, PhotoResult, PipelineOptions

router = APIRouter()
log = logging.getLogger("daa.app")
DRAIN_TIMEOUT_S = 5.0  # how long a refused upload is read before the connection closes anyway


class DetectorChoice(str, Enum):
    """``default``: the service's detector (``DAA_DETECTOR``); ``none``: the photo is already a face crop."""

    default = "default"
    none = "none"


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": d}
    for code, d in {
        400: "empty, corrupt or truncated image",
        401: "an API key is needed (when the service has keys)",
        408: "the upload did not arrive in time",
        413: "upload or image too large",
        415: "not an image, or an unsupported format",
        422: (
            "missing file, invalid option, a minimum face size the photo cannot be searched for, or a photo that "
            "needs more CPU or memory to decode than one may (image_too_costly)"
        ),
        500: "the model call failed",
        503: "overloaded or not ready; retry after Retry-After",
    }.items()
}
# The body is read by app/uploads.py as it streams; this declares it for the OpenAPI schema and generated clients
# (app/main.py adds UPLOAD_SCHEMA to the schema's components under UPLOAD_SCHEMA_NAME).
UPLOAD_SCHEMA_NAME = "Body_estimate_age"
UPLOAD_SCHEMA: dict[str, Any] = {
    "properties": {
        "file": {
            "contentMediaType": "application/octet-stream",
            "format": "binary",
            "description": "the photo: JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF",
            "title": "File",
            "type": "string",
        }
    },
    "required": ["file"],
    "title": UPLOAD_SCHEMA_NAME,
    "type": "object",
}


def upload_body(schema_name: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
        }
    }


UPLOAD_BODY = upload_body(UPLOAD_SCHEMA_NAME)
VIDEO_UPLOAD_SCHEMA_NAME = "Body_estimate_video"
VIDEO_UPLOAD_SCHEMA: dict[str, Any] = {
    **UPLOAD_SCHEMA,
    "properties": {
        "file": {
            **UPLOAD_SCHEMA["properties"]["file"],
            "description": "the clip: MP4, MOV, MKV, WebM or AVI (H.264, HEVC, VP8, VP9, AV1, MPEG-4), animated GIF or WebP",
        }
    },
    "title": VIDEO_UPLOAD_SCHEMA_NAME,
}
# Every upload body the routes declare by reference (app/main.py adds them to the schema's components).
UPLOAD_SCHEMAS = {UPLOAD_SCHEMA_NAME: UPLOAD_SCHEMA, VIDEO_UPLOAD_SCHEMA_NAME: VIDEO_UPLOAD_SCHEMA}


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        retry = str(request.app.state.settings.retry_after_s)
        raise APIError(503, ErrorCode.NOT_READY, "the model is not loaded yet", headers={"Retry-After": retry})
    return service


def overloaded(service: Service, what: str) -> APIError:
    return APIError(
        503,
        ErrorCode.OVERLOADED,
        f"the service is busy ({what}); retry shortly",
        None,
        headers={"Retry-After": str(service.settings.retry_after_s)},
    )


def box_of(box: Sequence[float]) -> Box:
    return Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3])


def timing_of(seconds: dict[str, float], total_s: float) -> Timing:
    """The pipeline's seconds per stage as the response's milliseconds."""
    return Timing(
        decode_ms=round(seconds["decode"] * 1000, 2),
        detect_ms=round(seconds["detect"] * 1000, 2),
        estimate_ms=round(seconds["estimate"] * 1000, 2),
        total_ms=round(total_s * 1000, 2),
    )


def to_response(result: PhotoResult, service: Service, include_deltas: bool, total_s: float) -> EstimateResponse:
    est = service.pipeline.estimator
    faces = [
        FaceEstimate(
            box=box_of(f.detection.box),
            detection_score=min(max(f.detection.score, 0.0), 1.0),
            landmarks=[Point(x=x, y=y) for x, y in f.detection.landmarks],
            age=round(f.age, 3),
            uncertainty=round(f.spread, 3),
            age_range=AgeRange(low=round(f.age_range[0], 3), high=round(f.age_range[1], 3)),
            delta_ages=[round(d, 4) for d in f.deltas] if include_deltas else None,
        )
        for f in result.faces
    ]
    return EstimateResponse(
        faces=faces,
        reference_ages=result.reference_ages,
        min_face_size=round(result.min_face_size, 1),
        image=ImageInfo(width=result.width, height=result.height, format=result.format),
        model=ModelRef(name=est.name, version=est.version),
        timing=timing_of(result.timing, total_s),
    )


@router.post(
    "/estimate",
    operation_id="estimate_age",
    response_model=EstimateResponse,
    responses=ERRORS,
    summary="Estimate the age of every face in a photo",
    tags=["estimation"],
    openapi_extra=UPLOAD_BODY,
    dependencies=[Depends(require_key)],
)
async def estimate_age(
    request: Request,
    service: Annotated[Service, Depends(get_service)],
    max_faces: Annotated[
        int | None,
        Query(ge=1, le=100, description="at most this many faces, largest first (up to the service's DAA_MAX_FACES)"),
    ] = None,
    min_face_size: Annotated[
        int | None,
        Query(
            ge=12,
            le=10000,
            description=(
                "smallest face side in pixels; a large photo may not allow a small value within the detection budget "
                "(422 min_face_size_unsupported names the smallest possible)"
            ),
        ),
    ] = None,
    reference_interval: Annotated[
        int,
        Query(
            description="use every k-th reference age (paper Table 7): 1 gives all 100",
            # The model's own list (checked by the pipeline before the upload is read), not a copy of it.
            json_schema_extra={"enum": list(REFERENCE_INTERVALS)},
        ),
    ] = 1,
    include_deltas: Annotated[bool, Query(description="include the per-reference delta ages")] = True,
    detector: Annotated[
        DetectorChoice,
        Query(description="none: the photo is already a face crop (no detection; the whole photo is one face)"),
    ] = DetectorChoice.default,
) -> Any:
    t_start = time.perf_counter()
    options = PipelineOptions(
        max_faces, min_face_size, reference_interval, None if detector is DetectorChoice.default else detector.value
    )
    try:
        service.pipeline.check_options(options)  # before admission and before the upload is read
    except InputError as exc:
        raise APIError.from_input(exc) from exc

    async def work(upload: Upload) -> EstimateResponse:
        result = await service.pipeline.run_async(
            upload,
            options,
            service.executor,
            service.batcher.submit,
            still_wanted=lambda: connected(request),
            slots=service.prepare_slots,
            prepare=service.prepare,
        )
        service.telemetry.faces.inc(len(result.faces))
        service.telemetry.detect_seconds.observe(result.timing["detect"])
        return to_response(result, service, include_deltas, time.perf_counter() - t_start)

    return await serve_upload(request, service, service.settings.max_upload_bytes, work)


async def serve_upload(request: Request, service: Service, max_bytes: int, work: Callable[[Upload], Awaitable[Any]]) -> Any:
    """The steps every upload route shares: reserve the body's memory, receive it, admit it, run ``work`` on it,
    and give each failure its status (a client that went away: 499, logged in one line)."""
    settings = service.settings
    boundary, declared = check_upload_head(request, max_bytes)
    # The body is held in memory from here until it is decoded: reserve what it says it is.
    reserved = min(declared or max_bytes, max_bytes) + ENVELOPE_BYTES
    if not service.uploads.try_reserve(reserved):
        # Read what the client is sending before refusing it: closing on a body still in flight resets the
        # connection, and the client would never read the 503.
        await drain_upload(request, max_bytes + ENVELOPE_BYTES, DRAIN_TIMEOUT_S)
        raise overloaded(service, f"{settings.max_upload_memory_mb} MiB of uploads in progress")
    try:
        upload = await receive_upload(request, boundary, max_bytes, settings.body_timeout_s, settings.min_upload_rate)
        # Admitted once the body is here: a client that trickles its body holds no admission slot meanwhile.
        if not service.admission.try_enter():
            raise overloaded(service, f"{service.admission.limit} requests in progress")
        try:
            return await work(upload)  # FastAPI serialises the model straight to JSON bytes with pydantic-core
        finally:
            service.admission.leave()
    except InputError as exc:
        raise APIError.from_input(exc) from exc
    except QueueFull as exc:
        raise overloaded(service, str(exc)) from exc
    except BatchFailed as exc:
        log.warning("a model call failed: %s", exc)
        raise APIError(500, ErrorCode.INFERENCE_FAILED, "the model call for this request failed") from exc
    except (ClientGone, ClientDisconnect):
        # nginx's "client closed request": nobody reads this answer; one log line, no traceback.
        log.info("a client went away before its answer")
        return Response(status_code=499)
    finally:
        service.uploads.release(reserved)


async def connected(request: Request) -> bool:
    return not await request.is_disconnected()


@router.head("/health", include_in_schema=False)
@router.get(
    "/health",
    operation_id="get_health",
    response_model=HealthResponse,
    tags=["operations"],
    summary="Liveness: the process is up",
)
async def get_health() -> HealthResponse:
    return HealthResponse()


@router.head("/ready", include_in_schema=False)
@router.get(
    "/ready",
    operation_id="get_readiness",
    response_model=ReadyResponse,
    tags=["operations"],
    summary="Readiness: the model and detector are loaded",
    responses={503: ERRORS[503]},
)
async def get_readiness(service: Annotated[Service, Depends(get_service)]) -> ReadyResponse:
    est = service.pipeline.estimator
    return ReadyResponse(ready=True, model=est.name, device=str(est.device))


@router.get(
    "/model",
    operation_id="get_model_info",
    response_model=ModelInfo,
    tags=["operations"],
    summary="The served model: architecture, references, parameters and model-card metrics",
    responses={401: ERRORS[401], 503: ERRORS[503]},
    dependencies=[Depends(require_key)],
)
async def get_model_info(service: Annotated[Service, Depends(get_service)]) -> ModelInfo:
    est = service.pipeline.estimator
    meta = est.metadata
    training: dict[str, Any] = {k: meta[k] for k in ("split", "code_version") if k in meta}
    if isinstance(meta.get("data"), dict):  # what it was trained on, without the training machine's paths
        training["data"] = {k: v for k, v in meta["data"].items() if k not in ("location", "cache")}
    if isinstance(training.get("split"), dict):
        training["split"] = {k: v for k, v in training["split"].items() if k != "file"}
    return ModelInfo(
        name=est.name,
        version=est.version,
        architecture=est.config.to_dict(),
        parameters=est.parameters,
        reference_ages=est.references(1),
        reference_intervals=[k for k in REFERENCE_INTERVALS if k < est.config.num_references],
        crop=est.config.crop.to_dict(),
        device=str(est.device),
        runtime=est.runtime,
        flip_tta=est.flip_tta,
        range_factor=est.range_factor,
        range_model=est.range_model.to_dict() if est.range_model else None,
        metrics=dict(meta.get("metrics") or {}),
        training=training,
    )


@router.get(
    "/metrics",
    operation_id="get_metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    dependencies=[Depends(metrics_access)],
)
async def get_metrics(request: Request) -> Response:
    telemetry = request.app.state.telemetry
    service: Service | None = getattr(request.app.state, "service", None)
    if service is not None:
        telemetry.queue_faces.set(service.batcher.pending_faces)
        telemetry.requests_active.set(service.admission.active)
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
