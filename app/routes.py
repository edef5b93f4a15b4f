"""HTTP routes. The data path of POST /estimate reads top to bottom: upload -> image -> faces -> crops ->
batched model call -> response."""

from __future__ import annotations

import asyncio
import time
from enum import IntEnum
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.batching import BatchFailed, QueueFull
from app.errors import APIError
from app.imaging import decode_image
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
from app.service import Service
from model.config import REFERENCE_INTERVALS
from model.faces import crop_face

router = APIRouter()

ReferenceInterval = IntEnum("ReferenceInterval", {f"every_{k}": k for k in REFERENCE_INTERVALS})
ERRORS = {code: {"model": ErrorResponse, "description": d}
          for code, d in {400: "empty, corrupt or truncated image", 413: "upload or image too large",
                          415: "not an image, or an unsupported format", 422: "missing file or invalid option",
                          500: "the model call failed", 503: "overloaded or not ready; retry after Retry-After"
                          }.items()}


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise APIError(503, "not_ready", "the model is not loaded yet", headers={"Retry-After": "1"})
    return service


@router.post("/estimate", operation_id="estimate_age", response_model=EstimateResponse, responses=ERRORS,
             summary="Estimate the age of every face in a photo", tags=["estimation"])
async def estimate_age(
    request: Request,
    # format: binary makes generators (openapi-python-client, openapi-generator) type this as a file upload.
    file: Annotated[UploadFile, File(description="the photo: JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF",
                                     json_schema_extra={"format": "binary"})],
    service: Annotated[Service, Depends(get_service)],
    max_faces: Annotated[int | None, Query(ge=1, le=100, description="at most this many faces, largest first")] = None,
    min_face_size: Annotated[int | None, Query(ge=12, le=10000, description="smallest face side in pixels")] = None,
    reference_interval: Annotated[ReferenceInterval, Query(  # type: ignore[valid-type]
        description="use every k-th reference age (paper Table 7): 1 gives all 100")] = 1,
    include_deltas: Annotated[bool, Query(description="include the per-reference delta ages")] = True,
) -> EstimateResponse:
    t_start = time.perf_counter()
    settings = service.settings
    status = 500
    try:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
            raise APIError(413, "file_too_large", f"uploads are limited to {settings.max_upload_bytes} bytes",
                           {"max_bytes": settings.max_upload_bytes})
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise APIError(413, "file_too_large", f"uploads are limited to {settings.max_upload_bytes} bytes",
                           {"max_bytes": settings.max_upload_bytes})
        loop = asyncio.get_running_loop()
        decoded = await loop.run_in_executor(service.cpu_pool, decode_image, data, settings.max_image_pixels)
        del data
        t_decoded = time.perf_counter()
        image = decoded.image
        faces = await loop.run_in_executor(service.cpu_pool, service.detector.detect, image,
                                           min_face_size or settings.min_face_size)
        faces = faces[: min(max_faces or settings.max_faces, settings.max_faces)]
        crops = (np.stack([crop_face(image, f, service.estimator.crop_spec) for f in faces]) if faces
                 else np.zeros((0,), np.uint8))
        t_detected = time.perf_counter()
        service.telemetry.detect_seconds.observe(t_detected - t_decoded)
        interval = int(reference_interval)
        try:
            results = await service.batcher.submit(crops, interval) if faces else []
        except QueueFull as exc:
            raise APIError(503, "overloaded", "too many faces are waiting for the model; retry shortly", str(exc),
                           headers={"Retry-After": str(settings.retry_after_s)}) from exc
        except BatchFailed as exc:
            raise APIError(500, "inference_failed", "the model call for this request failed", str(exc)) from exc
        t_done = time.perf_counter()
        out = []
        for det, res in zip(faces, results):
            half = service.estimator.range_scale * res.spread
            out.append(FaceEstimate(
                box=Box(x1=det.box[0], y1=det.box[1], x2=det.box[2], y2=det.box[3]),
                detection_score=min(max(det.score, 0.0), 1.0),
                landmarks=[Point(x=x, y=y) for x, y in det.landmarks],
                age=round(res.age, 3), uncertainty=round(res.spread, 3),
                age_range=AgeRange(low=round(max(res.age - half, 0.0), 3), high=round(res.age + half, 3)),
                delta_ages=[round(d, 4) for d in res.deltas] if include_deltas else None))
        service.telemetry.faces.inc(len(out))
        status = 200
        return EstimateResponse(
            faces=out, reference_ages=service.estimator.references(interval),
            image=ImageInfo(width=image.width, height=image.height, format=decoded.format),
            model=ModelRef(name=service.estimator.name, version=service.estimator.version),
            timing=Timing(decode_ms=round((t_decoded - t_start) * 1000, 2),
                          detect_ms=round((t_detected - t_decoded) * 1000, 2),
                          estimate_ms=round((t_done - t_detected) * 1000, 2),
                          total_ms=round((time.perf_counter() - t_start) * 1000, 2)))
    except APIError as exc:
        status = exc.status
        raise
    finally:
        service.telemetry.requests.labels(str(status)).inc()
        await file.close()


@router.get("/health", operation_id="get_health", response_model=HealthResponse, tags=["operations"],
            summary="Liveness: the process is up")
async def get_health() -> HealthResponse:
    return HealthResponse()


@router.get("/ready", operation_id="get_readiness", response_model=ReadyResponse, tags=["operations"],
            summary="Readiness: the model and detector are loaded", responses={503: ERRORS[503]})
async def get_readiness(service: Annotated[Service, Depends(get_service)]) -> ReadyResponse:
    return ReadyResponse(ready=True, model=service.estimator.name, device=str(service.estimator.device))


@router.get("/model", operation_id="get_model_info", response_model=ModelInfo, tags=["operations"],
            summary="The served model: architecture, references, parameters and model-card metrics",
            responses={503: ERRORS[503]})
async def get_model_info(service: Annotated[Service, Depends(get_service)]) -> ModelInfo:
    est = service.estimator
    meta = est.metadata
    return ModelInfo(
        name=est.name, version=est.version, architecture=est.config.to_dict(), parameters=est.parameters,
        reference_ages=est.references(1), reference_intervals=list(REFERENCE_INTERVALS), crop=est.config.crop,
        device=str(est.device), runtime=est.runtime, flip_tta=est.flip_tta, uncertainty_scale_95=est.range_scale,
        metrics=dict(meta.get("metrics") or {}),
        training={k: meta[k] for k in ("data", "split", "command", "code_version", "init_encoder") if k in meta})


@router.get("/metrics", operation_id="get_metrics", tags=["operations"], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def get_metrics(request: Request) -> Response:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        return Response(b"", media_type=CONTENT_TYPE_LATEST)
    service.telemetry.queue_faces.set(service.batcher.pending_faces)
    return Response(generate_latest(service.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
