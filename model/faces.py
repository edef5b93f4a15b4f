"""The one crop function that training and serving share.

The model only ever sees crops made by :func:`crop_face` from a detection's frame (``model/detection.py``).
Training caches these crops once; the service makes them per request. Keeping it here is what guarantees that
the service feeds the network exactly what it was trained on, whichever detector found the face.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from model.config import CropSpec
from model.detection import FaceDetection, frame_of

__all__ = ["CropSpec", "FaceDetection", "crop_face", "crop_geometry", "whole_image_detection"]


def whole_image_detection(image: Image.Image) -> FaceDetection:
    """The documented fallback for training images where no face is found: the whole (already cropped) image,
    framed as the ``none`` detector frames it, with score 0 to mark it as no detection."""
    from model.detectors.whole import WholeImage

    det = WholeImage().detect(image)[0]
    return FaceDetection(box=det.box, score=0.0, landmarks=(), frame=det.frame)


def crop_geometry(det: FaceDetection, spec: CropSpec) -> tuple[float, float, float, float]:
    """Centre x, centre y, side length and roll angle (radians) of the crop for one detection: its frame scaled
    by ``spec.scale``, rolled only when ``spec.align``."""
    frame = frame_of(det)
    return frame.cx, frame.cy, max(spec.scale * frame.side, 1.0), frame.angle if spec.align else 0.0


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
