"""Everything the routes need, built once by the lifespan: model, detector, batcher, worker pool, telemetry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from app.batching import MicroBatcher
from app.estimator import Estimator
from app.settings import Settings
from app.telemetry import Telemetry
from model.faces import DetectorSettings, FaceDetector


@dataclass
class Service:
    settings: Settings
    estimator: Estimator
    detector: FaceDetector
    batcher: MicroBatcher
    telemetry: Telemetry
    cpu_pool: ThreadPoolExecutor  # decoding and detection, off the event loop

    @classmethod
    def load(cls, settings: Settings) -> Service:
        """Load checkpoint and MTCNN; raises :class:`model.checkpoint.CheckpointError` on a bad checkpoint."""
        if settings.threads:
            torch.set_num_threads(settings.threads)
        estimator = Estimator(str(settings.checkpoint), settings.device, settings.flip_tta, settings.runtime)
        detector = FaceDetector(
            DetectorSettings(min_face_size=settings.min_face_size, thresholds=settings.mtcnn_thresholds,
                             min_score=settings.detection_threshold, max_side=settings.detect_max_side),
            device=estimator.device, runtime=settings.runtime)
        telemetry = Telemetry()
        batcher = MicroBatcher(estimator.estimate, settings.max_batch_size, settings.max_wait_ms / 1000.0,
                               settings.max_queue, on_batch=telemetry.on_batch)
        return cls(settings, estimator, detector, batcher, telemetry,
                   ThreadPoolExecutor(max_workers=2, thread_name_prefix="daa-cpu"))

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.cpu_pool.shutdown(wait=True)
