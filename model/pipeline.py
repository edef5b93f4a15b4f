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
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.config import REFERENCE_INTERVALS
from model.detection import Detector, DetectorSettings, FaceDetection, create_detector
from model.detectors.whole import WholeImage
from model.errors import CheckpointError, ErrorCode, InputError
from model.faces import CropSpec, crop_face
from model.imaging import decode_image
from model.options import PipelineLimits, PipelineOptions, RuntimeOptions
from model.results import FaceResult

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
class FaceAge:
    detection: FaceDetection
    age: float
    spread: float
    age_range: tuple[float, float]
    deltas: list[float]


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
        image = decoded.image
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
        return Prepared(image.width, image.height, decoded.format, faces, crops, float(wanted), t1 - t0, t2 - t1)


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

    # The chain ------------------------------------------------------------------------------------------------

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

        front = prepare or (lambda d, o, _cancel: self.prepare(d, o))
        loop = asyncio.get_running_loop()
        cancel = threading.Event()

        async def front_half() -> Prepared:
            job = loop.run_in_executor(executor, front, data, options, cancel)
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
                    raise ClientGone("the client went away while its photo was decoded")

        if slots is None:
            prepared = await front_half()
        else:
            async with slots:
                await wanted_or_stop("decoding")
                prepared = await front_half()
        await wanted_or_stop("its faces reached the model")
        t0 = time.perf_counter()
        results = await estimate(prepared.crops, options.interval) if len(prepared.crops) else []
        return self.finish(prepared, results, time.perf_counter() - t0, options.interval)
