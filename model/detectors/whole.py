"""``none``: no detection, the whole photo is one face (for photos that are already face crops, as DeepFace's
``detector_backend="skip"``)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from model.detection import DetectorSettings, FaceDetection, FaceFrame, register_detector


class WholeImage:
    """The photo's central square is the face frame; the box is the whole photo; no landmarks, score 1."""

    name = "none"

    def smallest_face(self, width: int, height: int) -> float:
        return 1.0

    def detect(self, image: Image.Image, min_face_size: int | None = None) -> list[FaceDetection]:
        w, h = image.size
        if min(w, h) < 1:
            return []
        frame = FaceFrame(w / 2.0, h / 2.0, float(min(w, h)))
        return [FaceDetection(box=(0.0, 0.0, float(w), float(h)), score=1.0, landmarks=(), frame=frame)]

    def detect_batch(self, images: list[Image.Image], min_face_size: int | None = None) -> list[list[FaceDetection]]:
        return [self.detect(im, min_face_size) for im in images]


@register_detector("none")
def build_whole_image(settings: DetectorSettings, **_: Any) -> WholeImage:
    return WholeImage()
