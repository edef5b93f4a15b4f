"""The video benchmark's ground truth: where a pasted face's landmarks land, and whose a detection is."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from benchmarks.video_bench import owner_of, pasted_landmarks, synthetic_clip
from model.detection import FaceDetection


def test_pasted_landmarks_follow_the_pasted_chip():
    # A chip with one bright dot: wherever the clip pastes, scales and turns it, the dot is where the transform says.
    chip = np.zeros((200, 200, 3), np.uint8)
    chip[58:62, 138:142] = 255
    marks = np.asarray([[140.0, 60.0]]) / 200
    frames, _, poses = synthetic_clip([Image.fromarray(chip)], 2.0, random.Random(5))
    for frame, pose in zip(frames[::10], [p[0] for p in poses[::10]]):
        grey = np.asarray(frame.convert("L"), np.float64)
        ys, xs = np.nonzero(grey > grey.max() * 0.6)
        found = np.asarray([xs.mean() + 0.5, ys.mean() + 0.5])
        assert np.linalg.norm(found - pasted_landmarks(marks, pose)[0]) < 2.0


def test_a_detection_is_the_face_whose_landmarks_it_has_even_where_boxes_coincide():
    tiles = [(100.0, 100.0, 300.0, 300.0), (110.0, 100.0, 310.0, 300.0)]
    poses = [(200.0, 0.0, 100.0, 100.0), (200.0, 0.0, 110.0, 100.0)]
    unit = np.asarray([[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.7], [0.65, 0.7]])
    marks: list[np.ndarray | None] = [unit, unit]
    second = FaceDetection((110, 100, 310, 300), 0.9, tuple(map(tuple, pasted_landmarks(unit, poses[1]))))
    assert owner_of(second, tiles, poses, marks) == 1
    far = FaceDetection((500, 100, 700, 300), 0.9, tuple(map(tuple, unit * 200 + 500)))
    assert owner_of(far, tiles, poses, marks) == -1
    # Without landmarks, by boxes: the face on top (pasted last) hides the one beneath entirely here.
    hidden = [(100.0, 100.0, 300.0, 300.0), (100.0, 100.0, 300.0, 300.0)]
    assert owner_of(FaceDetection((100, 100, 300, 300), 0.9), hidden) == 1
