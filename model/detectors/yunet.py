"""``yunet``: libfacedetection's YuNet (BSD-3-Clause, Shiqi Yu) on ONNX Runtime, the fast detector.

``models/yunet.onnx`` is converted once from the pinned ``yuface`` wheel by ``training/convert_yunet.py`` (sha256
checked; its outputs equal the package's own); :mod:`model.yunet` runs it. Nothing here imports torch.

Its frame is calibrated to MTCNN's box frame, the one the shipped models were trained on. YuNet's boxes are
tighter and taller than MTCNN's, so the frame comes from the five landmarks, by a similarity fit to
:data:`TEMPLATE` (where YuNet's landmarks sit, on average, in MTCNN's frame: side 1, centre 0, eyes level), moved
and scaled by :data:`BOX_CORRECTION`, a linear map of YuNet's box in that frame. ``python -m
training.calibrate_detector --detector yunet`` measured both and how closely the frames then agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model.detection import BudgetedDetector, DetectorSettings, FaceDetection, FaceFrame, register_detector
from model.ort_sessions import providers_for

MODEL = "yunet.onnx"
DEFAULT_MIN_SCORE = 0.5
# The smallest face side, in the pixels the network sees, that it finds reliably (its finest anchors are 8 px apart).
NET_MIN_FACE = 12.0
# Where YuNet's five landmarks sit in MTCNN's frame (x right, y down; side 1, centre 0), and the linear map from
# YuNet's box (its corners in the landmark frame's coordinates, and a constant) to MTCNN's frame in those
# coordinates (offset x, offset y, log side ratio): the box carries what five points cannot (forehead, chin).
# Both measured by python -m training.calibrate_detector --detector yunet --images ../shared/data/utkface/images
# --split models/utkface-split-seed0.json --count 1500 (1,487 train photos fit; on 497 val photos MTCNN's frame and
# this one overlap with IoU median 0.917, p10 0.857; centre error median 2.6% of the side, p90 4.9%; side ratio
# p10-p90 0.956-1.053; landmarks alone: IoU median 0.870, centre error p90 10.4%). benchmarks/results/calibrate_yunet.json
TEMPLATE = np.array(
    [[-0.2036, -0.1666], [0.2067, -0.1597], [-0.0102, 0.0573], [-0.1790, 0.2462], [0.1646, 0.2520]],
    dtype=np.float64,
)
BOX_CORRECTION = np.array(
    [
        [-0.0142, 0.5718, -0.1091, 0.4588, -0.0014],
        [-0.0790, -0.0745, 0.4128, 0.0768, 0.3663],
        [-0.8283, -0.4166, -0.6224, 0.2765, 0.4261],
    ],
    dtype=np.float64,
)


def model_path() -> Path:
    """``models/yunet.onnx`` of a source checkout, or ``share/daa-age/models`` where ``pip install .`` put it."""
    import sys

    candidates = [
        Path(__file__).resolve().parents[2] / "models" / MODEL,
        Path(sys.prefix) / "share" / "daa-age" / "models" / MODEL,
    ]
    return next((c for c in candidates if c.is_file()), candidates[0])


def similarity_frame(landmarks: np.ndarray, template: np.ndarray = TEMPLATE) -> FaceFrame:
    """The frame whose template points best match ``landmarks`` (5 x 2) under a similarity transform (least
    squares, no reflection; Umeyama's closed form written with complex numbers)."""
    p = landmarks[:, 0] + 1j * landmarks[:, 1]
    t = template[:, 0] + 1j * template[:, 1]
    pc, tc = p - p.mean(), t - t.mean()
    a = np.sum(pc * np.conj(tc)) / np.sum(np.abs(tc) ** 2)  # scale x rotation
    origin = p.mean() - a * t.mean()
    return FaceFrame(float(origin.real), float(origin.imag), max(float(abs(a)), 1.0), float(np.angle(a)))


def box_correction(frame: FaceFrame, box: tuple[float, float, float, float], correction: np.ndarray) -> FaceFrame:
    """Move and scale a landmark frame by the linear map ``correction`` (3 x 5) of the box's corners in the frame's
    unit coordinates: offset x, offset y (in sides, in the frame's own axes) and the log side ratio."""
    c, s = math.cos(frame.angle), math.sin(frame.angle)
    rel = (np.array([[box[0], box[1]], [box[2], box[3]]]) - (frame.cx, frame.cy)) / frame.side
    corners = rel @ np.array([[c, -s], [s, c]])  # undo the roll
    dx, dy, log_ratio = correction @ np.array([1.0, *corners.ravel()])
    return FaceFrame(
        frame.cx + frame.side * (c * dx - s * dy),
        frame.cy + frame.side * (s * dx + c * dy),
        frame.side * math.exp(log_ratio),
        frame.angle,
    )


class YuNetDetector(BudgetedDetector):
    """YuNet behind the :class:`model.detection.Detector` contract.

    Photos are detected on a copy whose longer side is ``target_side`` (640: cheap, and what the survey measured),
    larger when the minimum face asks for it, never beyond the detection budget ``settings.max_side``.
    """

    name = "yunet"
    window = NET_MIN_FACE
    # A box reduction by the factor's integer part, then bilinear: antialiased, and 1/7 of one bilinear pass's
    # time on a 1080p photo.
    resize_gap = 1.0

    def __init__(
        self,
        settings: DetectorSettings | None = None,
        device: str = "cpu",
        threads: int = 1,
        target_side: int = 640,
        nms_threshold: float = 0.45,
        path: str | Path | None = None,
    ) -> None:
        from model.yunet import YuNet

        self.settings = settings or DetectorSettings(name="yunet")
        self.min_score = DEFAULT_MIN_SCORE if self.settings.min_score is None else self.settings.min_score
        self.target_side = target_side
        self.net = YuNet(
            path or model_path(),
            threads=threads,
            providers=providers_for(device),
            score_threshold=min(self.min_score, 0.2),
            nms_threshold=nms_threshold,
        )

    def _detect_copies(
        self, images: list[Image.Image], size: tuple[int, int], factor: float, wanted_min: float
    ) -> list[list[FaceDetection]]:
        arrays = [np.asarray(im.convert("RGB")) for im in images]
        found = self.net.detect_batch(arrays)
        sx, sy = size[0] / arrays[0].shape[1], size[1] / arrays[0].shape[0]
        return [self._to_detections(b, s, p, sx, sy, wanted_min) for b, s, p in found]

    def _to_detections(
        self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, sx: float, sy: float, wanted_min: float
    ) -> list[FaceDetection]:
        faces = []
        for box, score, pts in zip(boxes.astype(np.float64), scores, points.astype(np.float64)):
            if score < self.min_score:
                continue
            b = box * (sx, sy, sx, sy)
            p = pts * (sx, sy)
            if min(b[2] - b[0], b[3] - b[1]) < wanted_min:
                continue
            faces.append(
                FaceDetection(
                    box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                    score=float(score),
                    landmarks=tuple((float(x), float(y)) for x, y in p),
                    frame=box_correction(similarity_frame(p), (b[0], b[1], b[2], b[3]), BOX_CORRECTION),
                )
            )
        faces.sort(key=lambda d: d.area, reverse=True)
        return faces


@register_detector("yunet")
def build_yunet(
    settings: DetectorSettings, device: str = "cpu", runtime: str = "auto", threads: int = 1, **options: Any
) -> YuNetDetector:
    return YuNetDetector(settings, device=device, threads=threads, **options)
