"""The one age-estimation pipeline: upload bytes -> image -> faces -> crops -> model -> ages.

The service (``app/``), the bulk command and the benchmarks run photos through an :class:`AgePipeline`; this is
the only place the steps are chained (``training evaluate`` scores cached crops, made by the same detector and
:func:`model.faces.crop_face`, without decoding photos again). :meth:`AgePipeline.run` chains them in the
calling thread. :meth:`AgePipeline.run_async` chains the same steps for a server: the CPU-bound front half
(decode, detect, crop) on a worker pool, the model call through a caller-supplied batcher, and a check between
stages that stops work for a client that has gone away.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from model.config import REFERENCE_INTERVALS
from model.detection import Detector, DetectorSettings, FaceDetection, create_detector
from model.detectors.whole import WholeImage
from model.errors import CheckpointError, ErrorCode, InputError
from model.faces import CropSpec, crop_face
from model.fusion import Fused, running
from model.imaging import decode_image
from model.options import PipelineLimits, PipelineOptions, RuntimeOptions
from model.results import FaceResult
from model.tracking import appearance, track_faces
from model.video import VideoInfo, VideoLimits, sample_frames

if TYPE_CHECKING:  # the torch estimator is imported only where a .pt checkpoint is served
    from model.estimator import Estimator
    from model.onnx_estimator import OnnxEstimator


class ClientGone(Exception):
    """The caller no longer wants the answer (the HTTP client disconnected); work stopped at a stage boundary."""


@dataclass
class Prepared:
    """The front half's output for one photo: what the model needs, and what the answer reports."""

    width: int
    height: int
    format: str
    faces: list[FaceDetection]
    crops: np.ndarray  # N x S x S x 3 uint8
    min_face_size: float  # the minimum actually searched for, in the photo's pixels
    decode_s: float
    detect_s: float


@dataclass
class PreparedVideo:
    """The front half's output for a clip: what it declared and decoded, and each sampled frame's time and faces."""

    info: VideoInfo
    frames: list[tuple[float, Prepared]]
    decode_s: float


@dataclass
class FaceAge:
    detection: FaceDetection
    age: float
    spread: float
    age_range: tuple[float, float]
    deltas: list[float]


@dataclass
class TrackAge:
    """One tracked face of a clip: its frames (time, that frame's estimate, the fused estimate up to it) and the
    fused estimate over all of them."""

    id: int
    frames: list[tuple[float, FaceAge, Fused]]
    fused: Fused

    @property
    def start_s(self) -> float:
        return self.frames[0][0]

    @property
    def end_s(self) -> float:
        return self.frames[-1][0]


@dataclass
class VideoResult:
    info: VideoInfo
    fps: float
    tracks: list[TrackAge]
    reference_ages: list[int]
    timing: dict[str, float] = field(default_factory=dict)  # seconds per stage


@dataclass
class PhotoResult:
    faces: list[FaceAge]
    reference_ages: list[int]
    width: int
    height: int
    format: str
    min_face_size: float
    timing: dict[str, float] = field(default_factory=dict)  # seconds per stage


EstimateFn = Callable[[np.ndarray, int], Awaitable[Sequence[FaceResult]]]
StillWanted = Callable[[], Awaitable[bool]]
PrepareFn = Callable[[Any, PipelineOptions, threading.Event], Prepared]
PrepareVideoFn = Callable[[Any, PipelineOptions, float, threading.Event], "PreparedVideo"]
CLIENT_CHECK_S = 0.25  # while a photo is decoded, how often the server asks whether its client is still there


def read_model(path: str | Path) -> dict[str, Any] | None:
    """Check a model file before serving it: a torch checkpoint is read (its payload returned, so it is not read
    twice); an ONNX graph is checked to exist (ONNX Runtime checks the rest when it loads it). Raises
    :class:`model.errors.CheckpointError`."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file() or not path.stat().st_size:
            raise CheckpointError(path, "file not found" if not path.is_file() else "file is empty")
        return None
    try:
        from model.checkpoint import read_checkpoint
    except ImportError as exc:
        raise CheckpointError(path, 'a torch checkpoint needs torch: pip install "daa-age[torch]"') from exc
    return read_checkpoint(path)


def load_estimator(
    checkpoint: str | Path,
    device: str = RuntimeOptions.device,
    flip_tta: bool = RuntimeOptions.flip_tta,
    runtime: str = RuntimeOptions.runtime,
    payload: dict[str, Any] | None = None,
    threads: int = RuntimeOptions.threads,
) -> Estimator | OnnxEstimator:
    """A ``.onnx`` graph (``python -m training export-onnx``) runs on ONNX Runtime alone, without torch; a ``.pt``
    checkpoint needs torch (``pip install "daa-age[torch]"``)."""
    if Path(checkpoint).suffix == ".onnx":
        if runtime == "torch":
            raise ValueError(f"{checkpoint} is an ONNX graph: it runs on ONNX Runtime, not DAA_RUNTIME=torch")
        from model.onnx_estimator import OnnxEstimator

        try:
            return OnnxEstimator(checkpoint, device, flip_tta, threads)
        except Exception as exc:  # noqa: BLE001  (ONNX Runtime's errors on a corrupt file)
            raise CheckpointError(checkpoint, f"not a readable DAA graph: {exc}") from exc
    try:
        from model.estimator import Estimator
    except ImportError as exc:
        raise ImportError(
            f"{checkpoint} is a torch checkpoint, and torch is not installed: serve its exported graph "
            '(python -m training export-onnx) or pip install "daa-age[torch]"'
        ) from exc
    return Estimator(checkpoint, device, flip_tta, runtime, payload=payload, threads=threads)


class FrontHalf:
    """Decode, detect and crop: the pipeline's CPU-bound first half. It needs no model, only the detector, the
    crop the model was trained on and the limits, so a server can run it in a worker process of its own with
    hard CPU and memory limits (``app/front_workers.py``)."""

    def __init__(self, detector: Detector, crop_spec: CropSpec, limits: PipelineLimits | None = None) -> None:
        self.detector = detector
        self.crop_spec = crop_spec
        self.limits = limits or PipelineLimits()
        self.whole_image: Detector = WholeImage()  # the per-request ``detector="none"``

    def detector_for(self, options: PipelineOptions) -> Detector:
        return self.whole_image if options.detector == "none" else self.detector

    def prepare(self, data: bytes, options: PipelineOptions) -> Prepared:
        """One photo's bytes to its faces and crops (options as checked by :meth:`AgePipeline.check_options`)."""
        t0 = time.perf_counter()
        decoded = decode_image(data, self.limits.max_image_pixels)
        return self.search(decoded.image, decoded.format, options, time.perf_counter() - t0)

    def prepare_video(self, data: bytes, options: PipelineOptions, fps: float, limits: VideoLimits) -> PreparedVideo:
        """A clip's bytes to the faces and crops of its frames sampled at ``fps``."""
        t0 = time.perf_counter()
        info, frames = sample_frames(data, fps, limits)
        prepared: list[tuple[float, Prepared]] = []
        decode_s, faces = time.perf_counter() - t0, 0
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            decode_s += time.perf_counter() - t0
            if frame is None:
                break
            one = self.search(frame.image, info.codec, options, 0.0)
            prepared.append((frame.t, one))
            faces += len(one.faces)
            if faces > limits.max_faces:
                raise InputError(
                    ErrorCode.VIDEO_TOO_LARGE,
                    f"the video's sampled frames hold more than {limits.max_faces} faces: ask for a lower fps or "
                    "fewer max_faces",
                    {"max_faces": limits.max_faces},
                )
        return PreparedVideo(info, prepared, decode_s)

    def search(self, image: Image.Image, fmt: str, options: PipelineOptions, decode_s: float) -> Prepared:
        """One decoded image (a photo, or a frame of a clip) to its faces and crops."""
        t1 = time.perf_counter()
        detector = self.detector_for(options)
        smallest = detector.smallest_face(image.width, image.height)
        if options.min_face_size is not None and options.min_face_size < smallest:
            raise InputError(
                ErrorCode.MIN_FACE_SIZE_UNSUPPORTED,
                f"faces of {options.min_face_size} px cannot be searched for in a {image.width}x{image.height} photo "
                f"within this service's detection budget; the smallest is {int(np.ceil(smallest))} px: ask for "
                "that or more, or send a smaller photo",
                {
                    "min_face_size": options.min_face_size,
                    "smallest_possible": int(np.ceil(smallest)),
                    "width": image.width,
                    "height": image.height,
                },
            )
        wanted = max(options.min_face_size or self.limits.min_face_size, smallest)
        faces = detector.detect(image, int(np.ceil(wanted)))
        faces = faces[: min(options.max_faces or self.limits.max_faces, self.limits.max_faces)]
        spec = self.crop_spec
        crops = (
            np.stack([crop_face(image, f, spec) for f in faces])
            if faces
            else np.zeros((0, spec.size, spec.size, 3), np.uint8)
        )
        t2 = time.perf_counter()
        return Prepared(image.width, image.height, fmt, faces, crops, float(wanted), decode_s, t2 - t1)


class AgePipeline:
    def __init__(
        self, estimator: Estimator | OnnxEstimator, detector: Detector, limits: PipelineLimits | None = None
    ) -> None:
        self.estimator = estimator
        self.detector = detector
        self.limits = limits or PipelineLimits()
        self.front = FrontHalf(detector, estimator.crop_spec, self.limits)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        device: str = RuntimeOptions.device,
        runtime: str = RuntimeOptions.runtime,
        flip_tta: bool = RuntimeOptions.flip_tta,
        detector_settings: DetectorSettings | None = None,
        limits: PipelineLimits | None = None,
        payload: dict[str, Any] | None = None,
        threads: int = RuntimeOptions.threads,
    ) -> AgePipeline:
        """Load a checkpoint and the detector ``detector_settings`` names; raises
        :class:`model.checkpoint.CheckpointError` on a bad checkpoint. ``payload``: the checkpoint as already read;
        ``threads``: threads of each kernel call (ONNX Runtime)."""
        estimator = load_estimator(checkpoint, device, flip_tta, runtime, payload, threads)
        detector = create_detector(detector_settings, device=str(estimator.device), runtime=runtime, threads=threads)
        return cls(estimator, detector, limits)

    # The steps -------------------------------------------------------------------------------------------------

    def check_options(self, options: PipelineOptions) -> None:
        if options.max_faces is not None and options.max_faces > self.limits.max_faces:
            raise InputError(
                ErrorCode.VALIDATION_ERROR,
                f"max_faces {options.max_faces} is over this service's limit of {self.limits.max_faces} faces per photo",
                {"max_faces": self.limits.max_faces},
            )
        if options.interval not in REFERENCE_INTERVALS or options.interval >= self.estimator.config.num_references:
            raise InputError(ErrorCode.VALIDATION_ERROR, f"reference interval {options.interval} is not offered")
        if options.detector not in (None, "none", self.detector.name):
            raise InputError(
                ErrorCode.VALIDATION_ERROR,
                f"detector {options.detector!r} is not offered: this service runs {self.detector.name!r}, or 'none' "
                "for photos that are already face crops",
            )

    def detector_for(self, options: PipelineOptions) -> Detector:
        return self.front.detector_for(options)

    def prepare(self, data: bytes, options: PipelineOptions) -> Prepared:
        """Decode, detect and crop: the CPU-bound front half, bounded in cost for any input."""
        self.check_options(options)
        return self.front.prepare(data, options)

    def estimate(self, crops: np.ndarray, interval: int) -> list[FaceResult]:
        return self.estimator.estimate(crops, interval) if len(crops) else []

    def finish(self, prepared: Prepared, results: Sequence[FaceResult], estimate_s: float, interval: int) -> PhotoResult:
        faces = [
            FaceAge(det, res.age, res.spread, self.estimator.age_range(res.age, res.spread), res.deltas)
            for det, res in zip(prepared.faces, results)
        ]
        return PhotoResult(
            faces,
            self.estimator.references(interval),
            prepared.width,
            prepared.height,
            prepared.format,
            prepared.min_face_size,
            {"decode": prepared.decode_s, "detect": prepared.detect_s, "estimate": estimate_s},
        )

    def finish_video(
        self, prepared: PreparedVideo, results: Sequence[FaceResult], estimate_s: float, interval: int, fps: float
    ) -> VideoResult:
        """Every frame's faces (``results`` in frame order) -> tracks -> one fused age per track."""
        est = self.estimator
        per_frame: list[list[FaceAge]] = []
        offset = 0
        for _, frame in prepared.frames:
            n = len(frame.faces)
            per_frame.append(
                [
                    FaceAge(det, res.age, res.spread, est.age_range(res.age, res.spread), res.deltas)
                    for det, res in zip(frame.faces, results[offset : offset + n])
                ]
            )
            offset += n
        boxes = [(t, [f.detection.box for f in faces]) for (t, _), faces in zip(prepared.frames, per_frame)]
        looks = [appearance(p.crops) for _, p in prepared.frames]
        tracks = []
        for tr in track_faces(boxes, looks=looks):
            faces = [per_frame[i][j] for i, j in tr.points]
            halves = [est.half_width(f.age, f.spread) for f in faces]
            steps = running([f.age for f in faces], [f.spread for f in faces], halves)
            frames = [(prepared.frames[i][0], f, s) for (i, _), f, s in zip(tr.points, faces, steps)]
            tracks.append(TrackAge(tr.id, frames, steps[-1]))
        detect_s = sum(p.detect_s for _, p in prepared.frames)
        timing = {"decode": prepared.decode_s, "detect": detect_s, "estimate": estimate_s}
        return VideoResult(prepared.info, fps, tracks, est.references(interval), timing)

    # The chain ------------------------------------------------------------------------------------------------

    def run_video(
        self,
        data: bytes,
        options: PipelineOptions | None = None,
        fps: float | None = None,
        limits: VideoLimits | None = None,
    ) -> VideoResult:
        """One clip, start to end, in this thread: its sampled frames' faces through the model together."""
        options, limits = options or PipelineOptions(), limits or VideoLimits()
        fps = fps or limits.fps
        self.check_options(options)
        prepared = self.front.prepare_video(data, options, fps, limits)
        crops = [p.crops for _, p in prepared.frames if len(p.crops)]
        t0 = time.perf_counter()
        results = self.estimate(np.concatenate(crops), options.interval) if crops else []
        return self.finish_video(prepared, results, time.perf_counter() - t0, options.interval, fps)

    async def run_video_async(
        self,
        upload: Any,
        options: PipelineOptions,
        fps: float,
        executor: Executor,
        estimate: EstimateFn,
        prepare_video: PrepareVideoFn,
        still_wanted: StillWanted | None = None,
        slots: asyncio.Semaphore | None = None,
        chunk: int = 32,
    ) -> VideoResult:
        """One clip for a server: the front half through ``prepare_video(upload, options, fps, cancel)`` on
        ``executor`` (a decode process), then its faces through ``estimate`` in chunks of ``chunk`` (the batcher
        mixes them with other requests' faces), then tracking and fusion."""
        prepared = await self._front_async(upload, options, executor, still_wanted, slots, prepare_video, fps)
        crops = [p.crops for _, p in prepared.frames if len(p.crops)]
        t0 = time.perf_counter()
        results: list[FaceResult] = []
        if crops:
            every = np.concatenate(crops)
            for start in range(0, len(every), chunk):
                if still_wanted is not None and not await still_wanted():
                    raise ClientGone("the client went away before its faces reached the model")
                results.extend(await estimate(every[start : start + chunk], options.interval))
        return self.finish_video(prepared, results, time.perf_counter() - t0, options.interval, fps)

    def run(self, data: bytes, options: PipelineOptions | None = None) -> PhotoResult:
        """One photo, start to end, in this thread."""
        options = options or PipelineOptions()
        prepared = self.prepare(data, options)
        t0 = time.perf_counter()
        results = self.estimate(prepared.crops, options.interval)
        return self.finish(prepared, results, time.perf_counter() - t0, options.interval)

    def run_many(self, photos: Sequence[bytes], options: PipelineOptions | None = None) -> list[PhotoResult | InputError]:
        """Several photos in this thread, their faces through the model in one call (how the bulk command batches
        across photos). A photo that cannot be served gives its :class:`InputError` in its place."""
        options = options or PipelineOptions()
        prepared: list[Prepared | InputError] = []
        for data in photos:
            try:
                prepared.append(self.prepare(data, options))
            except InputError as exc:
                prepared.append(exc)
        ready = [p for p in prepared if isinstance(p, Prepared)]
        t0 = time.perf_counter()
        crops = [p.crops for p in ready if len(p.crops)]
        results = self.estimate(np.concatenate(crops), options.interval) if crops else []
        share = (time.perf_counter() - t0) / max(len(ready), 1)
        out: list[PhotoResult | InputError] = []
        offset = 0
        for p in prepared:
            if isinstance(p, InputError):
                out.append(p)
                continue
            out.append(self.finish(p, results[offset : offset + len(p.faces)], share, options.interval))
            offset += len(p.faces)
        return out

    async def run_async(
        self,
        data: Any,
        options: PipelineOptions,
        executor: Executor,
        estimate: EstimateFn,
        still_wanted: StillWanted | None = None,
        slots: asyncio.Semaphore | None = None,
        prepare: PrepareFn | None = None,
    ) -> PhotoResult:
        """One photo for a server: the front half on ``executor``, the model through ``estimate`` (a batcher
        that gathers faces across requests), and ``still_wanted`` asked at each stage boundary.

        ``prepare(data, options, cancel)``: the front half (default: :meth:`prepare` on ``data``, the photo's
        bytes); a server passes one that runs it in a worker process and stops it when ``cancel`` is set, which
        happens here as soon as ``still_wanted`` says no while it runs. ``slots`` (as many as the executor has
        threads): photos wait for a free thread here, in the event loop, rather than in the executor's queue, so
        one whose client has gone away is dropped before its front half runs, not after."""

        async def wanted_or_stop(stage: str) -> None:
            if still_wanted is not None and not await still_wanted():
                raise ClientGone(f"the client went away before {stage}")

        prepare_fn: Callable[..., Any] = prepare or (lambda d, o, _cancel: self.prepare(d, o))
        prepared = await self._front_async(data, options, executor, still_wanted, slots, prepare_fn)
        await wanted_or_stop("its faces reached the model")
        t0 = time.perf_counter()
        results = await estimate(prepared.crops, options.interval) if len(prepared.crops) else []
        return self.finish(prepared, results, time.perf_counter() - t0, options.interval)

    async def _front_async(
        self,
        data: Any,
        options: PipelineOptions,
        executor: Executor,
        still_wanted: StillWanted | None,
        slots: asyncio.Semaphore | None,
        front: Callable[..., Any],
        *extra: Any,
    ) -> Any:
        """``front(data, options, *extra, cancel)`` on ``executor``, waiting for a slot first, and setting
        ``cancel`` as soon as ``still_wanted`` says no while it runs."""
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        async def run() -> Any:
            job = loop.run_in_executor(executor, functools.partial(front, data, options, *extra, cancel))
            if still_wanted is None:
                return await job
            while True:
                done, _ = await asyncio.wait({job}, timeout=CLIENT_CHECK_S)
                if done:
                    return job.result()
                if not await still_wanted():
                    cancel.set()  # the worker is stopped; the job ends with ClientGone (or its answer)
                    await asyncio.wait({job})
                    job.result()
                    raise ClientGone("the client went away while its upload was decoded")

        if slots is None:
            return await run()
        async with slots:
            if still_wanted is not None and not await still_wanted():
                raise ClientGone("the client went away before decoding")
            return await run()
