"""Everything the routes need, built once per worker process: the pipeline, the batcher, the admission count,
the worker pool for the pipeline's CPU-bound front half, and telemetry."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.batching import MicroBatcher
from app.settings import Settings
from app.telemetry import Telemetry
from model.pipeline import AgePipeline


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
class Service:
    settings: Settings
    pipeline: AgePipeline
    batcher: MicroBatcher
    telemetry: Telemetry
    executor: ThreadPoolExecutor  # the pipeline's decode/detect/crop, off the event loop
    admission: Admission = field(init=False)
    prepare_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_pending)
        self.prepare_slots = asyncio.Semaphore(self.settings.prepare_threads)

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
        return cls(
            settings,
            pipeline,
            batcher,
            telemetry,
            ThreadPoolExecutor(max_workers=settings.prepare_threads, thread_name_prefix="daa-prepare"),
        )

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
