"""The batched MTCNN cascade against facenet-pytorch's own detect_face on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.mtcnn import MTCNNCascade, _nms_min
from testkit import FIXTURES, iou


@pytest.fixture(scope="module")
def cascade() -> MTCNNCascade:
    return MTCNNCascade()


def facenet_reference(cascade: MTCNNCascade, image: np.ndarray, min_face: float):
    from facenet_pytorch.models.utils.detect_face import detect_face

    with torch.inference_mode():
        boxes, points = detect_face(
            image[None],
            min_face,
            cascade.pnet,
            cascade.rnet,
            cascade.onet,
            list(cascade.thresholds),
            cascade.factor,
            torch.device("cpu"),
        )
    return np.asarray(boxes[0], dtype=np.float64).reshape(-1, 5), np.asarray(points[0]).reshape(-1, 5, 2)


@pytest.mark.parametrize("name", ["group.jpg", "astronaut.jpg"])
def test_same_faces_as_facenet_where_faces_lie_inside_the_photo(cascade, name):
    image = np.asarray(Image.open(FIXTURES / name).convert("RGB"))
    ref_boxes, ref_points = facenet_reference(cascade, image, 20.0)
    boxes, points = cascade(torch.from_numpy(image.copy())[None], 20.0)[0]
    ref = ref_boxes[ref_boxes[:, 4] > 0.9]
    ours = boxes[boxes[:, 4] > 0.9]
    assert len(ref) >= 1 and len(ours) == len(ref)
    for r, rp in zip(ref, ref_points[ref_boxes[:, 4] > 0.9]):
        k = max(range(len(ours)), key=lambda i: iou(r, ours[i]))
        # Only the resampling of candidate boxes differs (one bilinear roi_align per stage instead of area
        # resizing box by box), so boxes and landmarks move by a pixel or two, not more.
        assert iou(r, ours[k]) > 0.9
        assert np.abs(points[boxes[:, 4] > 0.9][k] - rp).max() < 0.08 * (r[2] - r[0])
        assert abs(ours[k, 4] - r[4]) < 0.05


def test_batch_gives_each_image_its_own_faces(cascade):
    image = np.asarray(Image.open(FIXTURES / "group.jpg").convert("RGB"))
    blank = np.zeros_like(image)
    single = cascade(torch.from_numpy(image.copy())[None], 20.0)[0][0]
    batch = cascade(torch.from_numpy(np.stack([blank, image])), 20.0)
    assert len(batch[0][0]) == 0
    np.testing.assert_allclose(batch[1][0], single, atol=1e-3)


def test_nothing_found_in_a_flat_image(cascade):
    boxes, points = cascade(torch.zeros(1, 64, 64, 3, dtype=torch.uint8), 12.0)[0]
    assert boxes.shape == (0, 5) and points.shape == (0, 5, 2)


def test_min_overlap_nms_drops_a_box_inside_another():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 40, 40], [200, 200, 250, 250]], dtype=np.float64)
    keep = _nms_min(boxes, np.array([0.9, 0.95, 0.8]), np.zeros(3, dtype=np.int64), 0.7)
    assert sorted(keep.tolist()) == [1, 2]  # the big box holds all of the better-scored small one


def level_by_level(cascade: MTCNNCascade, x: torch.Tensor, min_face: float):
    """Stage 1 run once per pyramid level, as detect_face does, keeping windows wholly inside their level."""
    from torchvision.ops import batched_nms

    from model.mtcnn import _normalise, _scales, _square

    h, w = x.shape[2:]
    found, found_inds = [], []
    for scale in _scales(h, w, min_face, cascade.factor):
        lh, lw = int(h * scale + 1), int(w * scale + 1)
        reg, probs = cascade.pnet(_normalise(torch.nn.functional.interpolate(x, size=(lh, lw), mode="area")))
        rows, cols = (lh - 12) // 2 + 1, (lw - 12) // 2 + 1
        reg, probs = reg[:, :, :rows, :cols], probs[:, :, :rows, :cols]
        mask = probs[:, 1] >= cascade.thresholds[0]
        where = mask.nonzero()
        cell = where[:, 1:].flip(1).to(x.dtype)
        cand = torch.cat(
            [
                ((2 * cell + 1) / scale).floor(),
                ((2 * cell + 12) / scale).floor(),
                probs[:, 1][mask].unsqueeze(1),
                reg.permute(0, 2, 3, 1)[mask],
            ],
            1,
        )
        keep = batched_nms(cand[:, :4], cand[:, 4], where[:, 0], 0.5)
        found.append(cand[keep])
        found_inds.append(where[keep, 0])
    cand, inds = torch.cat(found), torch.cat(found_inds)
    keep = batched_nms(cand[:, :4], cand[:, 4], inds, 0.7)
    cand, inds = cand[keep], inds[keep]
    w_, h_ = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
    boxes = _square(cand[:, :4] + cand[:, 5:9] * torch.stack([w_, h_, w_, h_], 1))
    return torch.cat([boxes, cand[:, 4:5]], 1), inds


@pytest.mark.parametrize("name,min_face", [("group.jpg", 20.0), ("astronaut.jpg", 40.0), ("astronaut.jpg", 12.0)])
def test_packed_pyramid_equals_one_pass_per_level(cascade, name, min_face):
    image = torch.from_numpy(np.asarray(Image.open(FIXTURES / name).convert("RGB")).copy())
    x = image[None].permute(0, 3, 1, 2).float().contiguous()
    with torch.inference_mode():
        packed, packed_inds = cascade._proposals(x, min_face)
        ref, ref_inds = level_by_level(cascade, x, min_face)
    assert len(ref) > 10
    order = lambda b: b[torch.argsort(b[:, 4], descending=True)]  # noqa: E731
    torch.testing.assert_close(order(packed), order(ref), atol=1e-3, rtol=1e-4)
    assert torch.equal(packed_inds.sort().values, ref_inds.sort().values)
