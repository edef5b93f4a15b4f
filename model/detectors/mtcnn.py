"""``mtcnn``: the MTCNN cascade (facenet-pytorch 2.5.3's weights, run by :class:`model.mtcnn.MTCNNCascade`).

The weights ship inside the facenet-pytorch wheel, so this never downloads anything. Its box frame is the one
the shipped models were trained on: other detectors calibrate their frames to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from model.detection import BudgetedDetector, DetectorSettings, FaceDetection, box_frame, register_detector
from model.mtcnn import WINDOW  # the smallest face the cascade can see in the image it is given

DEFAULT_MIN_SCORE = 0.9  # minimum O-Net face probability


class MTCNNDetector(BudgetedDetector):
    """MTCNN behind the :class:`model.detection.Detector` contract.

    ``target_side``: the detection copy's preferred longer side. Smaller copies are cheaper (every pyramid level is
    resampled from the copy: 1080p photos took 78 ms to detect on a 1024 px copy, 57 on a 640 px one), but the copy
    is never shrunk so far that a minimum-size face falls under MTCNN's 12 px window.

    ``pad_fraction``: where a photo yields no face, it is searched again with a black border this fraction of its
    longer side, for faces of at least ``retry_min_fraction`` of its shorter side. A face that fills the whole
    frame (tight selfie or dataset crops) is larger than every window of MTCNN's first stage until the border gives
    it room (measured: 1.25% of UTKFace chips are found only so). Only near-square photos (aspect ratio at most
    ``retry_max_aspect``) are retried: a face cannot fill a frame of another shape.
    """

    name = "mtcnn"
    window = float(WINDOW)

    def __init__(
        self,
        settings: DetectorSettings | None = None,
        device: str | torch.device = "cpu",
        runtime: str = "auto",
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        target_side: int = 640,
        pad_fraction: float = 0.25,
        retry_min_fraction: float = 0.4,
        retry_max_aspect: float = 2.0,
    ) -> None:
        """``runtime``: ``torch``, ``onnxruntime`` (CPU only; the same networks, faster at these sizes) or ``auto``."""
        from model.mtcnn import MTCNNCascade
        from model.onnx_runtime import resolve_runtime

        self.settings = settings or DetectorSettings(name="mtcnn")
        self.min_score = DEFAULT_MIN_SCORE if self.settings.min_score is None else self.settings.min_score
        self.device = torch.device(device)
        self.runtime = resolve_runtime(runtime, self.device)
        self.target_side, self.pad_fraction = target_side, pad_fraction
        self.retry_min_fraction, self.retry_max_aspect = retry_min_fraction, retry_max_aspect
        a, b, c = thresholds
        self._cascade = MTCNNCascade((float(a), float(b), float(c)), runtime=self.runtime).to(self.device)

    def _detect_copies(
        self, images: list[Image.Image], size: tuple[int, int], factor: float, wanted_min: float
    ) -> list[list[FaceDetection]]:
        results = self._detect(images, 0, factor, wanted_min, wanted_min * factor)
        w, h = images[0].size
        pad = int(round(self.pad_fraction * max(w, h)))
        if pad and max(w, h) <= self.retry_max_aspect * min(w, h):
            redo = [i for i, faces in enumerate(results) if not faces]
            # Only faces that fill the frame are looked for again: a large minimum keeps the padded pass cheap.
            retry_min = max(WINDOW, self.retry_min_fraction * min(w, h), wanted_min * factor)
            found = self._detect([images[i] for i in redo], pad, factor, wanted_min, retry_min) if redo else []
            for i, faces in zip(redo, found):
                results[i] = faces
        return results

    def _detect(
        self, images: list[Image.Image], pad: int, factor: float, wanted_min: float, search_min: float
    ) -> list[list[FaceDetection]]:
        """One cascade pass over same-sized (already scaled) images, looking for faces of ``search_min`` pixels
        and up in them; ``wanted_min`` is the minimum in the original's pixels."""
        if min(images[0].size) + 2 * pad < WINDOW:
            return [[] for _ in images]
        arrays = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))
        if pad:
            arrays = torch.nn.functional.pad(arrays, (0, 0, pad, pad, pad, pad))
        found = self._cascade(arrays, max(float(WINDOW), search_min))
        return [self._to_detections(b, p, pad, factor, wanted_min) for b, p in found]

    def _to_detections(self, boxes: Any, points: Any, pad: int, factor: float, wanted_min: float) -> list[FaceDetection]:
        faces = []
        for box, pts in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 5), np.asarray(points).reshape(-1, 5, 2)):
            if box[4] < self.min_score:
                continue
            b = (box[:4] - pad) / factor
            p = (pts.astype(np.float64) - pad) / factor
            bx = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            marks = tuple((float(x), float(y)) for x, y in p)
            det = FaceDetection(box=bx, score=float(box[4]), landmarks=marks, frame=box_frame(bx, marks))
            if min(det.width, det.height) >= wanted_min:
                faces.append(det)
        faces.sort(key=lambda d: d.area, reverse=True)
        return faces


@register_detector("mtcnn")
def build_mtcnn(
    settings: DetectorSettings, device: str = "cpu", runtime: str = "auto", threads: int = 1, **options: Any
) -> MTCNNDetector:
    return MTCNNDetector(settings, device=device, runtime=runtime, **options)
