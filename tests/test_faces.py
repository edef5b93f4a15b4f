"""MTCNN detection and the shared crop function (every registered detector: tests/test_detectors.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from model.detection import DetectorSettings, FaceDetection
from model.detectors.mtcnn import MTCNNDetector
from model.faces import CropSpec, crop_face, crop_geometry
from testkit import FIXTURES, iou


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector()


def test_crop_is_centred_square_of_the_box_scaled():
    # A white square on black: the crop of its own box, scale 1, no alignment, is all white.
    image = Image.new("RGB", (400, 300))
    image.paste((255, 255, 255), (100, 50, 300, 250))
    det = FaceDetection(box=(100.0, 50.0, 300.0, 250.0), score=1.0)
    crop = crop_face(image, det, CropSpec(size=128, scale=1.0, align=False))
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert crop[2:-2, 2:-2].min() > 240
    # Twice the scale: the square fills the central half; outside the photo is black.
    crop2 = crop_face(image, det, CropSpec(size=128, scale=2.0, align=False))
    assert crop2[40:88, 40:88].min() > 240 and crop2[:20].max() < 10


def test_alignment_levels_the_eyes():
    det = FaceDetection(box=(0, 0, 100, 100), score=1.0, landmarks=((30, 30), (70, 70), (50, 50), (40, 80), (60, 80)))
    assert crop_geometry(det, CropSpec())[3] == pytest.approx(math.pi / 4)
    assert crop_geometry(det, CropSpec(align=False))[3] == 0.0


def test_downscaled_detection_matches_full_resolution(detector):
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    big = group.resize((1920, 1080), Image.BICUBIC)  # a 1080p photo with faces of about 150-340 px
    full = MTCNNDetector(DetectorSettings(max_side=4096)).detect(big, min_face_size=40)
    fast = detector.detect(big, min_face_size=40)
    assert len(full) == len(fast) == 3
    for a, b in zip(full, fast):
        assert iou(a.box, b.box) > 0.85
        assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() < 0.06 * a.width


def test_small_faces_are_not_lost_to_downscaling(detector):
    # Faces of ~48 px in a 1920 px photo: the detection copy is never shrunk below the minimum face size.
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    canvas = Image.new("RGB", (1920, 1080), (128, 138, 150))
    canvas.paste(group, (600, 300))
    assert len(detector.detect(canvas, min_face_size=40)) == 3


def test_tight_face_crop_gets_a_sane_box(detector):
    portrait = Image.open(FIXTURES / "astronaut.jpg").convert("RGB").crop((105, 25, 175, 120))
    faces = detector.detect(portrait, min_face_size=20)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    assert -15 < x1 and x2 < 85 and -20 < y1 and y2 < 110  # a sane box, not one far outside the image


def test_tiny_image_has_no_face(detector):
    assert detector.detect(Image.new("RGB", (1, 1))) == []
