"""Everything the routes need, built once per worker process: the pipeline, the batcher, the admission counts,
the decode workers for the pipeline's CPU-bound front half, and telemetry."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.batching import MicroBatcher
from app.front_workers import FrontSpec, FrontWorkers, run_front, run_front_video
from app.multipart import Upload
from app.settings import Settings
from app.telemetry import Telemetry
from model.options import PipelineOptions
from model.pipeline import AgePipeline, Prepared, PreparedVideo


@dataclass
class Admission:
    """How many requests this worker is serving, decode to answer; beyond ``limit`` a request is refused at once
    (503) rather than queued without bound in front of the pipeline. Used from the event loop only."""

    limit: int
    active: int = 0

    def try_enter(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


@dataclass
class UploadMemory:
    """Bytes of upload bodies this worker holds at once (received, or waiting to be decoded), as reserved from
    their declared length; a body that does not fit is read, dropped and refused. Event loop only."""

    limit: int
    held: int = 0

    def try_reserve(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def release(self, n: int) -> None:
        self.held -= n


@dataclass
class Service:
    settings: Settings
    pipeline: AgePipeline
    batcher: MicroBatcher
    telemetry: Telemetry
    executor: ThreadPoolExecutor  # waits on the decode workers (or runs the front half), off the event loop
    front: FrontWorkers | None = None  # None: DAA_DECODE_ISOLATION=false, the front half runs in the executor
    admission: Admission = field(init=False)
    uploads: UploadMemory = field(init=False)
    prepare_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_pending)
        self.uploads = UploadMemory(self.settings.max_upload_memory_mb * 1024 * 1024)
        self.prepare_slots = asyncio.Semaphore(self.settings.prepare_threads)

    def prepare(self, upload: Upload | bytes, options: PipelineOptions, cancel: threading.Event) -> Prepared:
        """The upload's envelope, decode, detect and crop (options already checked), in a decode worker."""
        if self.front is not None:
            return self.front.prepare(upload, options, cancel)
        return run_front(self.pipeline.front, upload, options)

    def prepare_video(
        self, upload: Upload | bytes, options: PipelineOptions, fps: float, cancel: threading.Event
    ) -> PreparedVideo:
        """The same for a clip, within the video limits."""
        limits = self.settings.video_limits()
        if self.front is not None:
            return self.front.prepare_video(upload, options, fps, limits, cancel)
        return run_front_video(self.pipeline.front, upload, options, fps, limits)

    @classmethod
    def load(cls, settings: Settings, payload: dict[str, Any] | None = None, telemetry: Telemetry | None = None) -> Service:
        """Build the model and MTCNN (``payload``: the checkpoint already read); raises
        :class:`model.checkpoint.CheckpointError` on a bad checkpoint."""
        threads = settings.threads
        # torch only where the pipeline runs on it (a .pt checkpoint, MTCNN): importing it for a served .onnx graph
        # would cost ~600 MB of resident memory for nothing. Set before loading: ONNX Runtime sessions made from
        # torch modules take torch's thread count.
        if settings.checkpoint.suffix != ".onnx" or settings.detector == "mtcnn":
            import torch

            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)  # this worker process's kernels; the server owns the process
        run = settings.runtime_options()
        pipeline = AgePipeline.load(
            settings.checkpoint,
            run.device,
            run.runtime,
            run.flip_tta,
            settings.detector_settings(),
            settings.pipeline_limits(),
            payload=payload,
            threads=run.threads,
        )
        telemetry = telemetry or Telemetry()
        batcher = MicroBatcher(
            pipeline.estimate,
            settings.max_batch_size,
            settings.max_wait_ms / 1000.0,
            settings.max_queue,
            on_batch=telemetry.on_batch,
        )
        front = None
        if settings.decode_isolation:
            spec = FrontSpec(
                settings.detector_settings(),
                pipeline.estimator.crop_spec,
                pipeline.limits,
                runtime=run.runtime,
                threads=run.threads,
            )
            front = FrontWorkers(spec, settings.prepare_threads, settings.worker_limits(), telemetry.on_worker_replaced)
        return cls(
            settings,
            pipeline,
            batcher,
            telemetry,
            ThreadPoolExecutor(max_workers=settings.prepare_threads, thread_name_prefix="daa-prepare"),
            front,
        )

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.front is not None:
            await asyncio.to_thread(self.front.close)
