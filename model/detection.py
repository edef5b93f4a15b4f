"""Faces in a photo: the detector contract, its settings and the registry of detectors by name.

Every detector (``model/detectors/``) returns :class:`FaceDetection` objects with five landmarks in one order and
a :class:`FaceFrame`: the square the crop is cut from. The frame is what makes crops independent of the detector:
each detector maps its own boxes and landmarks onto the frame the shipped models were trained on (MTCNN's box
frame, ``model/detectors/mtcnn.py``), so a detector is swapped without touching the crop or the model.

This module imports neither torch nor any detector; :func:`create_detector` imports the one asked for.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from model.options import PipelineLimits

# The landmarks' order, as the image shows them (not the person's left and right).
LANDMARKS = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class FaceFrame:
    """The face square in photo pixels: centre, side and roll (radians, the eyes' angle). A crop of ``scale`` s is
    the frame scaled by s about its centre (``model/faces.py``)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0


@dataclass(frozen=True)
class FaceDetection:
    """One detected face in original-image pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: tuple[tuple[float, float], ...] = field(default_factory=tuple)  # in LANDMARKS order
    frame: FaceFrame | None = None  # None: the box frame (box_frame)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def box_frame(box: tuple[float, float, float, float], landmarks: tuple[tuple[float, float], ...] = ()) -> FaceFrame:
    """The frame of an MTCNN-style box: centred on it, the mean of its width and height, rolled by the eyes."""
    x1, y1, x2, y2 = box
    angle = 0.0
    if len(landmarks) >= 2:
        (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
        angle = math.atan2(ry - ly, rx - lx)
    return FaceFrame((x1 + x2) / 2.0, (y1 + y2) / 2.0, max((x2 - x1 + y2 - y1) / 2.0, 1.0), angle)


def frame_of(det: FaceDetection) -> FaceFrame:
    return det.frame if det.frame is not None else box_frame(det.box, det.landmarks)


@dataclass(frozen=True)
class DetectorSettings:
    """Settings every detector takes, apart from each one's own (``options``, passed to its factory by name).

    ``max_side``: the detection budget. Photos are detected on a copy whose longer side is at most this, whatever
    the minimum face size asks, so detection work is bounded for any upload; :meth:`Detector.smallest_face` says
    how small a face can then be found in a photo. ``min_score``: the lowest detection score kept (``None``: the
    detector's own default; scores are not comparable across detectors). ``min_face_size``: the default minimum
    face side in pixels. ``detail``: shrink a photo below the detector's preferred copy while the minimum face
    keeps this many pixels in it (``None``: never), so a small photo costs what its smallest wanted face needs.
    """

    # YuNet: the same age error as MTCNN on validation (5.15 vs 5.13 with the default model), faces in 99.95% of
    # UTKFace photos (MTCNN 99.3%), a fraction of its time (README, Detectors).
    name: str = "yunet"
    max_side: int = 1024
    min_score: float | None = None
    min_face_size: int = PipelineLimits.min_face_size
    # Off by default: YuNet at 24 (python -m benchmarks.detector_bench --detectors yunet,yunet:detail=24, 2026-12-02)
    # costs 0.75x at 200x200 and 0.70x at 640x480 and finds as many faces, but the default model's ages move 1.4
    # years per face on average with the coarser landmarks: validation MAE -0.001 +- 0.044, test +0.050 +- 0.030.
    detail: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


class Detector(Protocol):
    """What the pipeline needs of a detector. Faces come largest first, in the photo's own pixel coordinates."""

    name: str

    def smallest_face(self, width: int, height: int) -> float:
        """The smallest face side, in the photo's pixels, that detection can find within its budget."""
        ...

    def detect(self, image: Image.Image, min_face_size: int | None = None) -> list[FaceDetection]: ...

    def detect_batch(self, images: list[Image.Image], min_face_size: int | None = None) -> list[list[FaceDetection]]: ...


class BudgetedDetector:
    """What detectors that search a photo share: the detection budget and the minimum face. A photo is detected on
    a copy whose longer side is ``target_side``, larger when the minimum face asks for it (a face must be at least
    ``window`` pixels in the copy), never beyond ``settings.max_side``; with ``settings.detail``, smaller still
    while the minimum face keeps that many pixels. Subclasses set ``name``, ``settings``,
    ``target_side`` and ``window`` and detect in the copy with :meth:`_detect_copies`."""

    name: str
    settings: DetectorSettings
    target_side: int
    window: float
    resize_gap: float | None = None  # PIL's reducing_gap for the copy (None: one bilinear pass)

    def scale(self, width: int, height: int) -> float:
        """The factor by which a photo of this size is shrunk at most for detection (1.0: not at all)."""
        return min(1.0, self.settings.max_side / max(width, height, 1))

    def smallest_face(self, width: int, height: int) -> float:
        return self.window / self.scale(width, height)

    def detect(self, image: Image.Image, min_face_size: int | None = None) -> list[FaceDetection]:
        return self.detect_batch([image], min_face_size)[0]

    def detect_batch(self, images: list[Image.Image], min_face_size: int | None = None) -> list[list[FaceDetection]]:
        """Several images of one size in one pass (how training preprocesses)."""
        if not images:
            return []
        size = images[0].size
        if any(im.size != size for im in images):
            raise ValueError("detect_batch needs images of one size")
        wanted_min = max(min_face_size or self.settings.min_face_size, self.smallest_face(*size))
        if min(size) < wanted_min:  # no face of the minimum size fits (thin and tiny photos)
            return [[] for _ in images]
        copy = self.target_side / max(size)
        if self.settings.detail is not None:
            copy = min(copy, self.settings.detail / wanted_min)
        factor = min(self.scale(*size), max(copy, self.window / wanted_min))
        if factor < 1.0:
            small = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
            images = [im.resize(small, Image.Resampling.BILINEAR, reducing_gap=self.resize_gap) for im in images]
        return self._detect_copies(images, size, factor, wanted_min)

    def _detect_copies(
        self, images: list[Image.Image], size: tuple[int, int], factor: float, wanted_min: float
    ) -> list[list[FaceDetection]]:
        """Faces in the copies (``factor`` x the photo of ``size``), in the photo's pixels, at least ``wanted_min``
        there."""
        raise NotImplementedError


DetectorFactory = Callable[..., Detector]
_DETECTORS: dict[str, DetectorFactory] = {}
# The built-in detectors and the module that registers each: imported only when asked for, so a service that runs
# one detector never imports the others (MTCNN needs torch; YuNet and ``none`` do not).
BUILTIN = {"mtcnn": "model.detectors.mtcnn", "yunet": "model.detectors.yunet", "none": "model.detectors.whole"}


def register_detector(name: str) -> Callable[[DetectorFactory], DetectorFactory]:
    """Register ``factory(settings, device=..., runtime=..., threads=..., **options) -> Detector`` as ``name``."""

    def wrap(factory: DetectorFactory) -> DetectorFactory:
        if name in _DETECTORS:
            raise ValueError(f"detector {name!r} registered twice")
        _DETECTORS[name] = factory
        return factory

    return wrap


def list_detectors() -> list[str]:
    return sorted(set(_DETECTORS) | set(BUILTIN))


def create_detector(
    settings: DetectorSettings | None = None, device: str = "cpu", runtime: str = "auto", threads: int = 1
) -> Detector:
    """The detector ``settings.name`` names, built with the generic settings and its own ``settings.options``."""
    settings = settings or DetectorSettings()
    if settings.name not in _DETECTORS and settings.name in BUILTIN:
        try:
            importlib.import_module(BUILTIN[settings.name])
        except ImportError as exc:  # MTCNN runs on torch, which the serving install leaves out
            raise ImportError(
                f'the {settings.name!r} detector needs {exc.name or "a package"}: pip install "daa-age[torch]"'
            ) from exc
    if settings.name not in _DETECTORS:
        raise ValueError(f"unknown detector {settings.name!r}; registered: {list_detectors()}")
    return _DETECTORS[settings.name](settings, device=device, runtime=runtime, threads=threads, **settings.options)
