"""YuNet on ONNX Runtime (``model/yunet.py`` with ``models/yunet.onnx``): the same faces as libfacedetection's own
C++ in the ``yuface`` wheel (when it is installed), landmarks in the documented order, geometry that follows the
photo, and a serving path without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from model.yunet import YuNet, libfacedetection_ints
from testkit import FIXTURES, ROOT

MODEL = ROOT / "models" / "yunet.onnx"


@pytest.fixture(scope="module")
def det() -> YuNet:
    return YuNet(MODEL)


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / f"{name}.jpg").convert("RGB"))


def scaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.Resampling.BILINEAR))


def pasted(rgb: np.ndarray, size: tuple[int, int], at: tuple[int, int], fill: int = 90) -> np.ndarray:
    canvas = np.full((*size, 3), fill, np.uint8)
    canvas[at[0] : at[0] + rgb.shape[0], at[1] : at[1] + rgb.shape[1]] = rgb
    return canvas


def cases() -> dict[str, np.ndarray]:
    """The fixture photos and copies that put the faces elsewhere on the network's grid and at other scales."""
    astronaut, group, rocket = photo("astronaut"), photo("group"), photo("rocket")
    return {
        "astronaut": astronaut,
        "group": group,
        "rocket": rocket,
        "astronaut-mirrored": np.ascontiguousarray(astronaut[:, ::-1]),
        "group-mirrored": np.ascontiguousarray(group[:, ::-1]),
        "astronaut-in-canvas": pasted(astronaut, (600, 900), (157, 413)),
        "astronaut-small-in-canvas": pasted(scaled(astronaut, 0.45), (300, 401), (21, 250)),
        "astronaut-1.7x": scaled(astronaut, 1.7),
        "group-0.6x": scaled(group, 0.6),
        "group-1.3x-cut": scaled(group, 1.3)[50:400, 60:700],  # a face cut by the border
    }


# ---------------------------------------------------------------------------------------------- against yuface


@pytest.mark.parametrize("name", list(cases()))
def test_matches_libfacedetection(det: YuNet, name: str) -> None:
    pytest.importorskip("yuface")
    # The extension itself returns every face libfacedetection keeps (score >= 0.2), as int16 rows of score x 100,
    # x, y, w, h, 10 landmark values and one unused slot; yuface.detect() would also drop scores below 0.21.
    from yuface.yuface import detect as libfacedetection

    rgb = cases()[name]
    # BGR, as libfacedetection wants it, and contiguous: the extension reads the buffer ignoring numpy's strides.
    ref = libfacedetection(np.ascontiguousarray(rgb[:, :, ::-1]))[:, :15].astype(np.int64)
    got = libfacedetection_ints(*det.detect(rgb))
    assert got.shape == ref.shape, f"{len(got)} faces, libfacedetection {len(ref)}"
    # Equal on this machine; 1 leaves room for another CPU's float rounding landing on the other side of an int().
    assert np.abs(got - ref).max(initial=0) <= 1


# ---------------------------------------------------------------------------------------------- without yuface


def faces(det: YuNet, rgb: np.ndarray, min_score: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, landmarks = det.detect(rgb)
    keep = scores >= min_score
    return boxes[keep], scores[keep], landmarks[keep]


def test_fixture_faces(det: YuNet) -> None:
    assert [len(faces(det, photo(n))[0]) for n in ("astronaut", "group", "rocket")] == [1, 3, 0]


def test_outputs_shapes_and_types(det: YuNet) -> None:
    boxes, scores, landmarks = det.detect(photo("group"))
    assert boxes.shape == (3, 4) and scores.shape == (3,) and landmarks.shape == (3, 5, 2)
    assert boxes.dtype == scores.dtype == landmarks.dtype == np.float32
    assert np.all(np.diff(scores) <= 0), "best first"
    assert np.all(boxes[:, 2:] > boxes[:, :2])
    for size in [(1, 1), (31, 33), (200, 200), (45, 700), (480, 640)]:
        b, s, lm = det.detect(np.zeros((*size, 3), np.uint8))
        assert b.shape == (len(s), 4) and lm.shape == (len(s), 5, 2)


@pytest.mark.parametrize("name", ["astronaut", "group", "astronaut-mirrored", "group-mirrored", "astronaut-1.7x"])
def test_landmark_order(det: YuNet, name: str) -> None:
    boxes, _, landmarks = faces(det, cases()[name])
    assert len(boxes)
    for box, (eye_l, eye_r, nose, mouth_l, mouth_r) in zip(boxes, landmarks):
        # As the image shows the face: the eye and mouth corner on the image's left come first.
        assert eye_l[0] < nose[0] < eye_r[0]
        assert mouth_l[0] < mouth_r[0]
        assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
        pts = np.stack([eye_l, eye_r, nose, mouth_l, mouth_r])
        assert np.all(pts >= box[:2]) and np.all(pts <= box[2:])


def test_mirrored_photo_mirrors_the_points(det: YuNet) -> None:
    rgb = photo("astronaut")
    w = rgb.shape[1]
    (box,), _, (lm,) = faces(det, rgb)
    (mbox,), _, (mlm,) = faces(det, np.ascontiguousarray(rgb[:, ::-1]))
    # Mirroring swaps which eye is on the image's left: point 0 of the mirror is point 1 of the photo, mirrored.
    expect = np.stack([w - lm[1, 0], lm[1, 1]]), np.stack([w - lm[0, 0], lm[0, 1]])
    assert np.abs(mlm[0] - expect[0]).max() < 3 and np.abs(mlm[1] - expect[1]).max() < 3
    assert abs(mbox[0] - (w - box[2])) < 3 and abs(mbox[2] - (w - box[0])) < 3


def test_boxes_follow_the_photo_scale(det: YuNet) -> None:
    rgb = photo("group")
    boxes, _, landmarks = faces(det, rgb)
    boxes2, _, landmarks2 = faces(det, scaled(rgb, 2.0))
    assert len(boxes2) == len(boxes)
    order, order2 = np.argsort(boxes[:, 0]), np.argsort(boxes2[:, 0])
    size = (boxes[:, 2:] - boxes[:, :2]).max()
    # Within 8% of the largest face: the network sees a different sampling of each face at 2x.
    assert np.abs(boxes2[order2] - 2 * boxes[order]).max() < 0.08 * 2 * size
    assert np.abs(landmarks2[order2] - 2 * landmarks[order]).max() < 0.08 * 2 * size


def test_boxes_follow_a_paste(det: YuNet) -> None:
    rgb = photo("astronaut")
    (box,), _, (lm,) = faces(det, rgb)
    (pbox,), _, (plm,) = faces(det, pasted(rgb, (600, 900), (157, 413)))
    assert np.abs(pbox - box - [413, 157, 413, 157]).max() < 3
    assert np.abs(plm - lm - [413, 157]).max() < 3


def test_max_side_maps_back(det: YuNet) -> None:
    rgb = photo("group")
    small = YuNet(MODEL, max_side=320)
    boxes, _, landmarks = faces(det, scaled(rgb, 0.5))
    boxes_s, _, landmarks_s = faces(small, rgb)
    assert len(boxes_s) == len(boxes) == 3
    # The 640 x 360 photo seen at 320 x 180, reported in the photo's pixels.
    assert np.abs(boxes_s - 2 * boxes).max() < 4 and np.abs(landmarks_s - 2 * landmarks).max() < 4


def test_no_faces_in_blank_or_noise(det: YuNet) -> None:
    rng = np.random.default_rng(0)
    images = [np.zeros((480, 640, 3), np.uint8), np.full((200, 200, 3), 255, np.uint8)]
    images.append(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    smooth = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((640, 480))
    images.append(np.asarray(smooth))
    for rgb in images:
        assert len(det.detect(rgb)[0]) == 0  # at the default threshold, 0.2


def test_batch_equals_single(det: YuNet) -> None:
    rgb = photo("group")
    batch = [rgb, np.ascontiguousarray(rgb[:, ::-1]), np.zeros_like(rgb), scaled(scaled(rgb, 0.5), 2.0)]
    together = det.detect_batch(batch)
    assert len(together) == len(batch)
    for one, (boxes, scores, landmarks) in zip(batch, together):
        b, s, lm = det.detect(one)
        assert len(s) == len(scores)
        np.testing.assert_allclose(boxes, b, atol=1e-3)
        np.testing.assert_allclose(scores, s, atol=1e-5)
        np.testing.assert_allclose(landmarks, lm, atol=1e-3)
    assert det.detect_batch([]) == []


def test_rejects_bad_input(det: YuNet) -> None:
    with pytest.raises(ValueError):
        det.detect(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(ValueError):
        det.detect(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError):
        det.detect(np.zeros((0, 100, 3), np.uint8))
    with pytest.raises(ValueError):
        det.detect_batch([np.zeros((100, 100, 3), np.uint8), np.zeros((100, 101, 3), np.uint8)])


def test_model_states_its_source_and_licence() -> None:
    meta = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    from training.convert_yunet import LICENCE, SO_SHA256, WHEEL_SHA256

    assert meta["licence"] == LICENCE
    assert meta["source_wheel_sha256"] == WHEEL_SHA256 and meta["source_so_sha256"] == SO_SHA256
    assert SO_SHA256.startswith("7fc3c140")
    assert "Shiqi Yu" in (ROOT / "models" / "yunet.LICENSE").read_text()


def test_serving_path_needs_no_torch() -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from model.yunet import YuNet\n"
        f"print(len(YuNet({str(MODEL)!r}).detect(np.zeros((64, 64, 3), np.uint8))[0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
