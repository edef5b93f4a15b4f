"""Face detection and the one crop function that training and serving share.

The model only ever sees crops made by :func:`crop_face`, from detections made by :class:`FaceDetector`.
Training caches these crops once; the service makes them per request. Keeping both here is what guarantees
that the service feeds the network exactly what it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.config import CropSpec  # noqa: F401  (re-exported: crops are made here)
from model.mtcnn import WINDOW as MTCNN_WINDOW  # the smallest face the cascade can see in the image it is given


@dataclass(frozen=True)
class FaceDetection:
    """One detected face in original-image pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: tuple[tuple[float, float], ...] = field(default_factory=tuple)  # eyes, nose, mouth corners

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


@dataclass(frozen=True)
class DetectorSettings:
    """MTCNN settings.

    ``max_side``: the detection budget. Photos are detected on a copy whose longer side is at most this, whatever
    the minimum face size asks, so detection work is bounded for any upload. A face must then be at least
    ``12 / scale`` pixels to be seen; :meth:`FaceDetector.smallest_face` says how small that is for a photo.

    ``pad_fraction``: where a photo yields no face, it is searched again with a black border this fraction of its
    longer side, for faces of at least ``retry_min_fraction`` of its shorter side. A face that fills the whole
    frame (tight selfie or dataset crops) is larger than every window of MTCNN's first stage until the border gives
    it room (measured: 1.25% of UTKFace chips are found only so). Only near-square photos (aspect ratio at most
    ``retry_max_aspect``) are retried: a face cannot fill a frame of another shape.
    """

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_score: float = 0.9
    max_side: int = 1024
    # The copy's preferred longer side: smaller copies are cheaper (every pyramid level is resampled from the
    # copy: 1080p photos took 78 ms to detect on a 1024 px copy, 57 on a 640 px one), but the copy is never
    # shrunk so far that a minimum-size face falls under MTCNN's 12 px window.
    target_side: int = 640
    pad_fraction: float = 0.25
    retry_min_fraction: float = 0.4
    retry_max_aspect: float = 2.0


class FaceDetector:
    """MTCNN (facenet-pytorch's weights, run by :class:`model.mtcnn.MTCNNCascade`) behind a small interface.

    The weights ship inside the facenet-pytorch 2.5.3 wheel, so this never downloads anything.
    """

    def __init__(
        self, settings: DetectorSettings | None = None, device: str | torch.device = "cpu", runtime: str = "torch"
    ) -> None:
        """``runtime``: ``torch``, ``onnxruntime`` (CPU only; the same networks, faster at these sizes) or ``auto``."""
        from model.mtcnn import MTCNNCascade  # imported here: only needed where faces are detected
        from model.onnx_runtime import resolve_runtime

        self.settings = settings or DetectorSettings()
        self.device = torch.device(device)
        self.runtime = resolve_runtime(runtime, self.device)
        self._cascade = MTCNNCascade(self.settings.thresholds, runtime=self.runtime).to(self.device)

    def scale(self, width: int, height: int) -> float:
        """The factor by which a photo of this size is shrunk for detection (1.0: not at all)."""
        return min(1.0, self.settings.max_side / max(width, height, 1))

    def smallest_face(self, width: int, height: int) -> float:
        """The smallest face side, in the photo's pixels, that detection can find within its budget."""
        return MTCNN_WINDOW / self.scale(width, height)

    def detect(self, image: Image.Image, min_face_size: int | None = None) -> list[FaceDetection]:
        """Faces in an RGB image, largest first, in the image's own pixel coordinates.

        Detection runs on a copy whose longer side is at most ``max_side``; faces smaller than
        :meth:`smallest_face` (or ``min_face_size``, whichever is larger) are not searched for.
        """
        return self.detect_batch([image], min_face_size)[0]

    def detect_batch(self, images: list[Image.Image], min_face_size: int | None = None) -> list[list[FaceDetection]]:
        """:meth:`detect` for several images of one size in one MTCNN pass (how training preprocesses)."""
        if not images:
            return []
        s = self.settings
        size = images[0].size
        if any(im.size != size for im in images):
            raise ValueError("detect_batch needs images of one size")
        wanted_min = max(min_face_size or s.min_face_size, self.smallest_face(*size))
        factor = min(self.scale(*size), max(s.target_side / max(size), MTCNN_WINDOW / wanted_min))
        if min(size) < wanted_min:  # no face of the minimum size fits (thin and tiny photos)
            return [[] for _ in images]
        if factor < 1.0:
            small_size = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
            images = [im.resize(small_size, Image.Resampling.BILINEAR) for im in images]
        results = self._detect(images, 0, factor, wanted_min, wanted_min * factor)
        w, h = images[0].size
        pad = int(round(s.pad_fraction * max(w, h)))
        if pad and max(w, h) <= s.retry_max_aspect * min(w, h):
            redo = [i for i, faces in enumerate(results) if not faces]
            # Only faces that fill the frame are looked for again: a large minimum keeps the padded pass cheap.
            retry_min = max(MTCNN_WINDOW, s.retry_min_fraction * min(w, h), wanted_min * factor)
            found = self._detect([images[i] for i in redo], pad, factor, wanted_min, retry_min) if redo else []
            for i, faces in zip(redo, found):
                results[i] = faces
        return results

    def _detect(
        self, images: list[Image.Image], pad: int, factor: float, wanted_min: float, search_min: float
    ) -> list[list[FaceDetection]]:
        """One cascade pass over same-sized (already scaled) images, looking for faces of ``search_min`` pixels
        and up in them; ``wanted_min`` is the minimum in the original's pixels."""
        if min(images[0].size) + 2 * pad < MTCNN_WINDOW:
            return [[] for _ in images]
        arrays = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))
        if pad:
            arrays = torch.nn.functional.pad(arrays, (0, 0, pad, pad, pad, pad))
        found = self._cascade(arrays, max(float(MTCNN_WINDOW), search_min))
        return [self._to_detections(b, p, pad, factor, wanted_min) for b, p in found]

    def _to_detections(self, boxes: Any, points: Any, pad: int, factor: float, wanted_min: float) -> list[FaceDetection]:
        faces = []
        for box, pts in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 5), np.asarray(points).reshape(-1, 5, 2)):
            if box[4] < self.settings.min_score:
                continue
            b = (box[:4] - pad) / factor
            p = (pts.astype(np.float64) - pad) / factor
            det = FaceDetection(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(box[4]),
                landmarks=tuple((float(x), float(y)) for x, y in p),
            )
            if min(det.width, det.height) >= wanted_min:
                faces.append(det)
        faces.sort(key=lambda d: d.area, reverse=True)
        return faces


def whole_image_detection(image: Image.Image) -> FaceDetection:
    """The documented fallback for training images where MTCNN finds no face: the whole (already cropped) image."""
    w, h = image.size
    return FaceDetection(box=(0.0, 0.0, float(w), float(h)), score=0.0, landmarks=())


def crop_geometry(det: FaceDetection, spec: CropSpec) -> tuple[float, float, float, float]:
    """Centre x, centre y, side length and roll angle (radians) of the crop for one detection."""
    x1, y1, x2, y2 = det.box
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    side = spec.scale * (det.width + det.height) / 2.0
    angle = 0.0
    if spec.align and len(det.landmarks) >= 2:
        (lx, ly), (rx, ry) = det.landmarks[0], det.landmarks[1]
        angle = math.atan2(ry - ly, rx - lx)
    return cx, cy, max(side, 1.0), angle


def crop_face(image: Image.Image, det: FaceDetection, spec: CropSpec) -> np.ndarray:
    """The model input for one face: ``spec.size`` x ``spec.size`` x 3 uint8, RGB. Outside the photo is black."""
    cx, cy, side, angle = crop_geometry(det, spec)
    # Cut a region that holds the rotated square (half-diagonal < 0.71 side), box-filter it down when the face is
    # much larger than the output (bilinear alone would alias), then one affine resample.
    half = side * 0.72
    left, top = math.floor(cx - half), math.floor(cy - half)
    right, bottom = math.ceil(cx + half), math.ceil(cy + half)
    patch = image.crop((left, top, right, bottom))
    factor = max(1, int(side // (2 * spec.size)))
    if factor > 1:
        patch = patch.reduce(factor)
    step = side / spec.size / factor
    ca, sa = math.cos(angle), math.sin(angle)
    pcx, pcy = (cx - left) / factor, (cy - top) / factor
    half_out = spec.size / 2.0
    # PIL maps output pixel (x, y) to input (a x + b y + c, d x + e y + f).
    a, b = ca * step, -sa * step
    d, e = sa * step, ca * step
    c = pcx - a * half_out - b * half_out
    f = pcy - d * half_out - e * half_out
    out = patch.transform(
        (spec.size, spec.size),
        Image.Transform.AFFINE,
        (a, b, c, d, e, f),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(out.convert("RGB"), dtype=np.uint8)


def detect_and_crop(
    image: Image.Image, detector: FaceDetector, spec: CropSpec, min_face_size: int | None = None
) -> list[tuple[FaceDetection, np.ndarray]]:
    """The whole preprocessing step: every face in ``image``, largest first, with its model-input crop."""
    return [(det, crop_face(image, det, spec)) for det in detector.detect(image, min_face_size)]
