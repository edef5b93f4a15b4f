"""Every registered detector keeps the contract the pipeline relies on (registering one tests it), and the crops
do not depend on which detector found the face."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from model.config import CropSpec
from model.detection import LANDMARKS, DetectorSettings, create_detector, frame_of, list_detectors
from model.faces import crop_face
from testkit import FIXTURES, fixture_bytes, iou, make_client, post_image

DETECTORS = list_detectors()
FINDERS = [d for d in DETECTORS if d != "none"]  # the ones that search the photo


@pytest.fixture(scope="module", params=DETECTORS)
def detector(request):
    return create_detector(DetectorSettings(name=request.param))


def astronaut() -> Image.Image:
    return Image.open(FIXTURES / "astronaut.jpg").convert("RGB")


def test_the_registry_has_the_documented_detectors():
    assert {"mtcnn", "yunet", "none"} <= set(DETECTORS)
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector(DetectorSettings(name="nope"))


def test_one_face_with_a_frame_and_landmarks_in_order(detector):
    faces = detector.detect(astronaut())
    assert len(faces) == 1
    face = faces[0]
    assert 0 <= face.score <= 1 and face.frame is not None and face.frame.side > 20
    if detector.name == "none":
        assert face.landmarks == ()
        return
    assert len(face.landmarks) == len(LANDMARKS) == 5
    (elx, ely), (erx, ery), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert elx < nx < erx and mlx < mrx  # as the image shows them
    assert max(ely, ery) < ny < min(mly, mry)  # eyes above the nose above the mouth
    x1, y1, x2, y2 = face.box
    assert x1 < elx < erx < x2 and y1 < ely < mly < y2


def test_batch_equals_one_by_one(detector):
    images = [astronaut(), astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    batch = detector.detect_batch(images)
    for image, faces in zip(images, batch):
        single = detector.detect(image)
        assert len(single) == len(faces)
        for a, b in zip(single, faces):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)


@pytest.mark.parametrize("name", FINDERS)
def test_no_face_in_blank_noise_or_a_single_pixel(name):
    det = create_detector(DetectorSettings(name=name))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    for image in (Image.new("RGB", (640, 480), (128, 128, 128)), noise, Image.new("RGB", (1, 1))):
        assert det.detect(image) == []


@pytest.mark.parametrize("name", FINDERS)
def test_every_face_of_the_group_photo_and_the_budget(name):
    det = create_detector(DetectorSettings(name=name))
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    assert len(det.detect(group, min_face_size=40)) == 3
    big = group.resize((group.width * 4, group.height * 4))  # a 4x photo: detected on a copy within the budget
    assert det.smallest_face(*big.size) > det.smallest_face(*group.size)
    assert len(det.detect(big, min_face_size=80)) == 3


@pytest.mark.parametrize("name", FINDERS)
def test_a_frame_filling_face_is_found(name):
    # A tight face crop that fills the photo, as a selfie or a dataset chip does.
    det = create_detector(DetectorSettings(name=name))
    image = astronaut()
    face = det.detect(image)[0]
    x1, y1, x2, y2 = face.box
    pad = 0.05 * (x2 - x1)
    chip = image.crop((int(x1 - pad), int(y1 - pad), int(x2 + pad), int(y2 + pad))).resize((200, 200))
    assert len(det.detect(chip, min_face_size=40)) == 1


@pytest.mark.parametrize("name", [d for d in FINDERS if d != "mtcnn"])
def test_frames_agree_with_mtcnn_which_the_models_were_trained_on(name):
    reference = create_detector(DetectorSettings(name="mtcnn"))
    other = create_detector(DetectorSettings(name=name))
    spec = CropSpec(size=150, scale=1.5)
    for fixture in ("astronaut.jpg", "group.jpg"):
        image = Image.open(FIXTURES / fixture).convert("RGB")
        refs, gots = reference.detect(image), other.detect(image)
        assert len(refs) == len(gots)
        for ref in refs:
            got = max(gots, key=lambda g: iou(g.box, ref.box))
            a, b = frame_of(ref), frame_of(got)
            assert math.hypot(a.cx - b.cx, a.cy - b.cy) < 0.12 * a.side
            assert 0.85 < b.side / a.side < 1.15 and abs(a.angle - b.angle) < math.radians(8)
            diff = np.abs(crop_face(image, ref, spec).astype(float) - crop_face(image, got, spec).astype(float))
            assert diff.mean() < 40  # the same face at nearly the same framing


def test_a_photo_that_is_already_a_face_crop_skips_detection():
    with make_client(flip_tta=False) as c:
        chip = fixture_bytes("rocket.jpg")  # no face a detector finds
        assert post_image(c, chip).json()["faces"] == []
        body = post_image(c, chip, detector="none").json()
        assert len(body["faces"]) == 1 and body["faces"][0]["landmarks"] == []
        assert post_image(c, chip, detector="mtcnn").status_code == 422  # only the service's own, or none


@pytest.mark.parametrize("name", FINDERS)
def test_detection_leaves_the_threads_floating_point_state_alone(name):
    # A library must not flip process or thread state: flush-to-zero would turn this subnormal into 0.
    create_detector(DetectorSettings(name=name)).detect(astronaut())
    tiny = np.array([1e-40], dtype=np.float32)
    assert (tiny * np.float32(1.0))[0] != 0


@pytest.mark.parametrize("name", FINDERS)
def test_detail_shrinks_small_photos_and_still_finds_their_faces(name, monkeypatch):
    plain = create_detector(DetectorSettings(name=name))
    detailed = create_detector(DetectorSettings(name=name, detail=24))
    sizes: list[tuple[int, int]] = []
    copies = type(plain)._detect_copies

    def seen(self, images, size, factor, wanted_min):
        sizes.append(images[0].size)
        return copies(self, images, size, factor, wanted_min)

    monkeypatch.setattr(type(plain), "_detect_copies", seen)
    image = astronaut()
    a, b = plain.detect(image, min_face_size=40), detailed.detect(image, min_face_size=40)
    assert sizes[0] == image.size  # smaller than the preferred copy: not shrunk without detail
    assert sizes[1] == (round(image.width * 0.6), round(image.height * 0.6))  # the 40 px face at 24 px
    assert len(a) == len(b) == 1 and iou(a[0].box, b[0].box) > 0.8
    big = Image.open(FIXTURES / "group.jpg").convert("RGB").resize((1920, 1080))
    sizes.clear()
    plain.detect(big), detailed.detect(big)
    assert sizes[0] == sizes[1]  # a photo already shrunk past the detail is detected as before
