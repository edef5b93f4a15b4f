"""Photos and clips in, rows out: one row per face of a photo, one per tracked face of a clip (its fused age, the
box of its first frame, its start, end and frame count), or one row with an error code for an entry that gave
none. This is where a bulk run calls the pipeline (:meth:`AgePipeline.run_many`, which batches faces across
photos, and :meth:`AgePipeline.run_video`); the local and the Ray runner both use :class:`PhotoAnnotator`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bulk.inputs import Unreadable, display_name, is_video, read_photo
from model.detection import DetectorSettings
from model.errors import ErrorCode, InputError, RowCode
from model.pipeline import AgePipeline, PipelineLimits, PipelineOptions
from model.video import VideoLimits

COLUMNS = [
    "file",
    "face",
    "x1",
    "y1",
    "x2",
    "y2",
    "detection_score",
    "age",
    "uncertainty",
    "age_low",
    "age_high",
    "start_s",  # clips only: the track's first and last sampled frame, and how many frames it has
    "end_s",
    "frames",
    "error",
    "message",
]


def error_row(file: str, code: ErrorCode | RowCode, message: str) -> dict[str, Any]:
    return {
        "file": display_name(file),
        "face": None,
        "x1": None,
        "y1": None,
        "x2": None,
        "y2": None,
        "detection_score": None,
        "age": None,
        "uncertainty": None,
        "age_low": None,
        "age_high": None,
        "start_s": None,
        "end_s": None,
        "frames": None,
        "error": code.value,
        "message": message,
    }


@dataclass
class AnnotatorConfig:
    """What each worker process or Ray actor needs to build its pipeline (picklable: plain values and the
    service settings' own detector settings and limits)."""

    checkpoint: str
    device: str
    runtime: str
    flip_tta: bool
    detector: DetectorSettings
    limits: PipelineLimits
    deltas: bool = False
    max_bytes: int = 15 * 1024 * 1024  # the service's DAA_MAX_UPLOAD_BYTES
    max_video_bytes: int = 100 * 1024 * 1024  # DAA_MAX_VIDEO_BYTES
    video: VideoLimits = field(default_factory=VideoLimits)  # the service's video limits (fps: DAA_VIDEO_FPS)


class PhotoAnnotator:
    """Loads the pipeline once; ``annotate(paths)`` decodes, detects and crops each photo, then runs the model once
    for all their faces together (batching across photos), and returns the rows."""

    def __init__(self, cfg: AnnotatorConfig) -> None:
        self.cfg = cfg
        self.pipeline = AgePipeline.load(cfg.checkpoint, cfg.device, cfg.runtime, cfg.flip_tta, cfg.detector, cfg.limits)
        self.options = PipelineOptions()

    def annotate(self, paths: list[str]) -> list[dict[str, Any]]:
        rows_by_file: dict[str, list[dict[str, Any]]] = {}
        readable: list[tuple[str, bytes]] = []
        for path in paths:
            video = is_video(path)
            try:
                data = read_photo(path, self.cfg.max_video_bytes if video else self.cfg.max_bytes)
            except Unreadable as exc:
                rows_by_file[path] = [error_row(path, exc.code, exc.message)]
                continue
            if video:
                rows_by_file[path] = self._video_rows(path, data)
            else:
                readable.append((path, data))
        results = self.pipeline.run_many([data for _, data in readable], self.options)
        for (path, _), result in zip(readable, results):
            if isinstance(result, InputError):
                rows_by_file[path] = [error_row(path, result.code, result.message)]
            elif not result.faces:
                rows_by_file[path] = [error_row(path, RowCode.NO_FACE, "no face found")]
            else:
                rows_by_file[path] = [self._face_row(path, i, f) for i, f in enumerate(result.faces)]
        return [row for path in paths for row in rows_by_file[path]]

    def _video_rows(self, path: str, data: bytes) -> list[dict[str, Any]]:
        try:
            result = self.pipeline.run_video(data, self.options, self.cfg.video.fps, self.cfg.video)
        except InputError as exc:
            return [error_row(path, exc.code, exc.message)]
        if not result.tracks:
            return [error_row(path, RowCode.NO_FACE, "no face found in the sampled frames")]
        rows = []
        for track in result.tracks:
            _, first, _ = track.frames[0]
            row = self._face_row(path, track.id, first)
            low, high = track.fused.age_range
            row.update(
                age=round(track.fused.age, 3),
                uncertainty=round(track.fused.spread, 3),
                age_low=round(low, 3),
                age_high=round(high, 3),
                start_s=track.start_s,
                end_s=track.end_s,
                frames=len(track.frames),
            )
            if self.cfg.deltas:
                row["delta_ages"] = None  # a track has one fused age, not one set of deltas
            rows.append(row)
        return rows

    def _face_row(self, path: str, index: int, face: Any) -> dict[str, Any]:
        x1, y1, x2, y2 = (round(v, 2) for v in face.detection.box)
        row = {
            "file": display_name(path),
            "face": index,
            "x1": x1,
            "y1": y1,
            "x2": x2,
            "y2": y2,
            "detection_score": round(face.detection.score, 4),
            "age": round(face.age, 3),
            "uncertainty": round(face.spread, 3),
            "age_low": round(face.age_range[0], 3),
            "age_high": round(face.age_range[1], 3),
            "start_s": None,
            "end_s": None,
            "frames": None,
            "error": None,
            "message": None,
        }
        if self.cfg.deltas:
            row["delta_ages"] = [round(d, 4) for d in face.deltas]
        return row
