"""``POST /estimate/video``: every person in a clip, tracked, with one fused age each. The clip is decoded and
searched in a decode process (``app/front_workers.py``, within the video limits), its faces go through the same
batcher as photos, and the pipeline tracks and fuses them (``model/pipeline.py``: ``finish_video``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from app.errors import APIError
from app.multipart import Upload
from app.routes import (
    ERRORS,
    VIDEO_UPLOAD_SCHEMA_NAME,
    DetectorChoice,
    box_of,
    connected,
    get_service,
    serve_upload,
    timing_of,
    upload_body,
)
from app.schemas import (
    AgeRange,
    ModelRef,
    TrackEstimate,
    TrackFrame,
    VideoEstimateResponse,
    VideoInfoOut,
)
from app.security import require_key
from app.service import Service
from model.errors import ErrorCode, InputError
from model.pipeline import PipelineOptions, VideoResult

router = APIRouter()

VIDEO_ERRORS = {
    **ERRORS,
    400: {**ERRORS[400], "description": "empty or corrupt upload, or a video stream that cannot be decoded"},
    413: {**ERRORS[413], "description": "upload too large, or a clip over its duration, frame size or frame limits"},
    415: {**ERRORS[415], "description": "not a video, audio only, a still image, or a codec not accepted"},
}


def to_video_response(result: VideoResult, service: Service, include_frames: bool, total_s: float) -> VideoEstimateResponse:
    est = service.pipeline.estimator
    tracks = []
    for tr in result.tracks:
        low, high = tr.fused.age_range
        frames = None
        if include_frames:
            frames = [
                TrackFrame(
                    t=t,
                    box=box_of(f.detection.box),
                    detection_score=min(max(f.detection.score, 0.0), 1.0),
                    age=round(f.age, 3),
                    uncertainty=round(f.spread, 3),
                    track_age=round(step.age, 3),
                )
                for t, f, step in tr.frames
            ]
        tracks.append(
            TrackEstimate(
                id=tr.id,
                start_s=tr.start_s,
                end_s=tr.end_s,
                frames=len(tr.frames),
                age=round(tr.fused.age, 3),
                uncertainty=round(tr.fused.spread, 3),
                age_range=AgeRange(low=round(low, 3), high=round(high, 3)),
                frame_estimates=frames,
            )
        )
    info = result.info
    return VideoEstimateResponse(
        tracks=tracks,
        fps=result.fps,
        reference_ages=result.reference_ages,
        video=VideoInfoOut(
            width=info.width,
            height=info.height,
            container=info.container,
            codec=info.codec,
            duration_s=None if info.duration_s is None else round(info.duration_s, 3),
            frame_rate=None if info.frame_rate is None else round(info.frame_rate, 3),
            frames_decoded=info.frames_decoded,
            frames_sampled=info.frames_sampled,
        ),
        model=ModelRef(name=est.name, version=est.version),
        timing=timing_of(result.timing, total_s),
    )


@router.post(
    "/estimate/video",
    operation_id="estimate_video",
    response_model=VideoEstimateResponse,
    response_model_exclude_none=True,
    responses=VIDEO_ERRORS,
    summary="Track every face in a video clip and give each one fused age",
    tags=["estimation"],
    openapi_extra=upload_body(VIDEO_UPLOAD_SCHEMA_NAME),
    dependencies=[Depends(require_key)],
)
async def estimate_video(
    request: Request,
    service: Annotated[Service, Depends(get_service)],
    fps: Annotated[
        float | None,
        Query(gt=0, le=120, description="frames sampled per second (default DAA_VIDEO_FPS, at most DAA_VIDEO_MAX_FPS)"),
    ] = None,
    include_frames: Annotated[bool, Query(description="include each track's per-frame estimates and boxes")] = False,
    max_faces: Annotated[int | None, Query(ge=1, le=100, description="at most this many faces per frame")] = None,
    min_face_size: Annotated[int | None, Query(ge=12, le=10000, description="smallest face side in pixels")] = None,
    detector: Annotated[
        DetectorChoice, Query(description="none: every frame is already a face crop (one face per frame)")
    ] = DetectorChoice.default,
) -> Any:
    t_start = time.perf_counter()
    settings = service.settings
    rate = fps or settings.video_fps
    if rate > settings.video_max_fps:
        raise APIError(
            422,
            ErrorCode.VALIDATION_ERROR,
            f"fps {rate:g} is over this service's limit of {settings.video_max_fps:g}",
            {"max_fps": settings.video_max_fps},
        )
    options = PipelineOptions(max_faces, min_face_size, 1, None if detector is DetectorChoice.default else detector.value)
    try:
        service.pipeline.check_options(options)
    except InputError as exc:
        raise APIError.from_input(exc) from exc

    async def work(upload: Upload) -> VideoEstimateResponse:
        result = await service.pipeline.run_video_async(
            upload,
            options,
            rate,
            service.executor,
            service.batcher.submit,
            service.prepare_video,
            still_wanted=lambda: connected(request),
            slots=service.prepare_slots,
            chunk=settings.max_batch_size,
        )
        service.telemetry.faces.inc(sum(len(tr.frames) for tr in result.tracks))
        return to_video_response(result, service, include_frames, time.perf_counter() - t_start)

    return await serve_upload(request, service, settings.max_video_bytes, work)
