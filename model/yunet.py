"""YuNet, libfacedetection's face detector (BSD-3-Clause, Shiqi Yu), on ONNX Runtime with numpy around it.

``models/yunet.onnx`` is the network alone, converted from the ``yuface`` wheel by ``training/convert_yunet.py``
(its docstring has the layout). This module does what libfacedetection's C++ does around the network
(``objectdetect_cnn`` and ``detection_output`` in ``src/facedetectcnn*.cpp``), vectorised: zero-pad the image on
the bottom and right to a multiple of 32, run the network, then per anchor (strides 8, 16, 32, one anchor per
cell at ``(col, row) * stride``, no half-cell offset)

- score = sqrt(sigmoid(cls) * sigmoid(obj)), logits clamped to +-88.376 as libfacedetection clamps them;
- box centre = prior + offset * stride, size = exp(log size) * stride; landmark = prior + offset * stride;
- candidates with score >= ``score_threshold`` (0.2, libfacedetection's), sorted by score (stable), the best
  ``top_k`` (1000) kept, greedy NMS at IoU > ``nms_threshold`` (0.45), at most ``keep_top_k`` (512) returned.

The arithmetic is float32 in the C++ order, so :func:`libfacedetection_ints` (the C++'s final ``int()``
truncations: box as x, y, w, h, score x 100) reproduces what libfacedetection returns; the tests compare that
with ``yuface``. The C++ truncates everything to integers; here boxes, scores and landmarks stay float. Boxes
are not clipped to the image (libfacedetection does not clip either) and are tight and taller than wide.

Landmarks come out as YuNet predicts them, which is already MTCNN's order, as the image shows the face (not the
person's left and right): YuNet's points 0-4 (``kps`` channels 0-1, 2-3, ..., 8-9) are

0. the eye on the image's left, 1. the eye on the image's right, 2. the nose tip,
3. the mouth corner on the image's left, 4. the mouth corner on the image's right.

The network sees the image at the size it is given, as libfacedetection does. ``max_side`` downscales larger
photos first (PIL: a box reduction by the integer part of the factor, then bilinear) and maps the results back:
faces then need to be proportionally larger to be found, and the time stops growing with the photo (one thread:
a 1080p photo takes ~8x as long at full size as at ``max_side=640``; ``yuface`` itself warns above 960 pixels).
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from model.ort_sessions import session_options

__all__ = ["KEEP_TOP_K", "NMS_THRESHOLD", "SCORE_THRESHOLD", "TOP_K", "YuNet", "libfacedetection_ints"]

# detection_output(cls, reg, kps, obj, 0.45f, 0.2f, 1000, 512) in objectdetect_cnn.
SCORE_THRESHOLD = 0.2
NMS_THRESHOLD = 0.45
TOP_K = 1000
KEEP_TOP_K = 512
STRIDES = (8, 16, 32)
PAD = 32  # the coarsest stride: every level's grid then tiles the padded image exactly
LOGIT_CLAMP = np.float32(88.3762626647949)

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


@lru_cache(maxsize=16)
def _anchors(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Prior points (A x 2, x then y) and strides (A x 1) for a padded input, in the network's output order."""
    points, strides = [], []
    for stride in STRIDES:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        points.append(np.stack([xs.ravel(), ys.ravel()], 1) * stride)
        strides.append(np.full(xs.size, stride))
    p, s = np.concatenate(points).astype(np.float32), np.concatenate(strides).astype(np.float32)[:, None]
    p.flags.writeable = s.flags.writeable = False  # shared by every call through the cache
    return p, s


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, -LOGIT_CLAMP, LOGIT_CLAMP)
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def _nms(boxes: np.ndarray, threshold: float, limit: int) -> np.ndarray:
    """Indices kept by greedy NMS over boxes sorted best first. A box survives when its IoU with every box kept
    before it is <= threshold, which is libfacedetection's test; each kept box suppresses the rest in one step."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(boxes), bool)
    keep: list[int] = []
    thr = np.float32(threshold)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        rest = slice(i + 1, None)
        iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.where((iw > 0) & (ih > 0), iw * ih, np.float32(0))
        alive[rest] &= inter / (area[i] + area[rest] - inter) <= thr
    return np.asarray(keep, dtype=np.intp)


def libfacedetection_ints(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """N x 15 int64 rows as libfacedetection's ``facedetect_cnn`` returns them: score x 100, x, y, w, h, then the
    landmarks' x0, y0 ... x4, y4, each truncated toward zero like the C++'s ``int()`` (for comparisons)."""
    b = np.asarray(boxes, np.float32)
    cols = [np.asarray(scores, np.float32)[:, None] * np.float32(100), b[:, :2], b[:, 2:] - b[:, :2]]
    cols.append(np.asarray(landmarks, np.float32).reshape(len(b), 10))
    return np.trunc(np.concatenate(cols, 1)).astype(np.int64)


class YuNet:
    """Face detector: ``detect(rgb)`` -> (boxes N x 4 x1 y1 x2 y2, scores N, landmarks N x 5 x 2), float32, in
    the input array's pixels, best first; landmarks in the module docstring's order.

    ``threads``: ONNX Runtime's intra-op threads. ``max_side``: downscale photos whose longer side exceeds it
    before the network (None: never; the network then sees every pixel, as libfacedetection does).
    """

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        providers: list[str] | None = None,
        *,
        score_threshold: float = SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
        top_k: int = TOP_K,
        keep_top_k: int = KEEP_TOP_K,
        max_side: int | None = None,
    ) -> None:
        if max_side is not None and max_side < PAD:
            raise ValueError(f"max_side must be at least {PAD}, got {max_side}")
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.top_k, self.keep_top_k, self.max_side = top_k, keep_top_k, max_side
        options = session_options(threads)
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])

    def detect(self, rgb: np.ndarray) -> Detections:
        """Faces in one H x W x 3 uint8 RGB array (any size)."""
        return self.detect_batch([rgb])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of several same-size H x W x 3 uint8 RGB arrays, through one network call."""
        if len(images) == 0:
            return []
        shape = images[0].shape
        for rgb in images:
            if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError("expected H x W x 3 uint8 RGB arrays")
            if rgb.shape != shape:
                raise ValueError(f"detect_batch needs same-size images, got {shape} and {rgb.shape}")
            if rgb.shape[0] == 0 or rgb.shape[1] == 0:
                raise ValueError(f"empty image {rgb.shape}")
        h, w = shape[:2]
        images, sx, sy = self._resized(images, h, w)
        nh, nw = images[0].shape[:2]
        ph, pw = -(-nh // PAD) * PAD, -(-nw // PAD) * PAD
        x = np.zeros((len(images), 3, ph, pw), np.float32)  # the zero padding is part of what the network was run on
        for i, rgb in enumerate(images):
            x[i, :, :nh, :nw] = rgb.transpose(2, 0, 1)
        cls, obj, bbox, kps = self.session.run(None, {"image": x})
        points, strides = _anchors(ph, pw)
        out = []
        for i in range(len(images)):
            boxes, scores, landmarks = self._decode(cls[i], obj[i], bbox[i], kps[i], points, strides)
            if sx != 1.0 or sy != 1.0:
                boxes *= np.array([sx, sy, sx, sy], np.float32)
                landmarks *= np.array([sx, sy], np.float32)
            out.append((boxes, scores, landmarks))
        return out

    def _resized(self, images: Sequence[np.ndarray], h: int, w: int) -> tuple[list[np.ndarray], float, float]:
        if self.max_side is None or max(h, w) <= self.max_side:
            return list(images), 1.0, 1.0
        f = self.max_side / max(h, w)
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        # reducing_gap=1: a box reduce by the factor's integer part, then bilinear for the rest. The same antialiasing
        # as one bilinear pass within ~0.3 grey levels, at 1/7 of its time on a 1080p photo (1.7 ms vs 12 ms).
        small = [
            np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=1.0)) for rgb in images
        ]
        return small, w / nw, h / nh

    def _decode(
        self, cls: np.ndarray, obj: np.ndarray, bbox: np.ndarray, kps: np.ndarray, points: np.ndarray, strides: np.ndarray
    ) -> Detections:
        score = np.sqrt(_sigmoid(cls) * _sigmoid(obj))
        idx = np.flatnonzero(score >= np.float32(self.score_threshold))
        # Stable on the negated score: ties keep anchor order, as std::stable_sort does.
        idx = idx[np.argsort(-score[idx], kind="stable")]
        if self.top_k >= 0:  # -1: no limit, as in libfacedetection
            idx = idx[: self.top_k]
        p, s, reg = points[idx], strides[idx], bbox[idx]
        centre = reg[:, :2] * s + p
        half = np.exp(reg[:, 2:]) * s / np.float32(2)
        boxes = np.concatenate([centre - half, centre + half], 1)
        keep = _nms(boxes, self.nms_threshold, self.keep_top_k)
        landmarks = kps[idx[keep]].reshape(-1, 5, 2) * s[keep, :, None] + p[keep, None, :]
        return boxes[keep], score[idx[keep]], landmarks
