"""The tracker on boxes and looks made by hand: which detections it joins, and which it refuses to."""

from __future__ import annotations

import numpy as np

from model.tracking import REACQUIRE_MIN_LIKENESS, STITCH_MIN_LIKENESS, clean_boxes, track_faces


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v / np.linalg.norm(v)


ALICE = unit(1, 0, 0, 0)
BOB = unit(0, 1, 0, 0)
BLEND = unit(1, 4, 0, 0)  # a crop of Alice half behind Bob: more like Bob (0.97) than like her (0.24)


def box(x: float, y: float = 100.0, side: float = 100.0) -> tuple[float, float, float, float]:
    return (x, y, x + side, y + side)


def test_a_box_overlapping_another_is_not_clean():
    assert clean_boxes([box(0), box(300)]) == [True, True]
    assert clean_boxes([box(0), box(60), box(400)]) == [False, False, True]


def test_a_face_at_a_distance_is_taken_up_only_when_it_looks_alike():
    # Alice is missed for two samples; Bob then appears within reach of her guess but looks nothing like her.
    frames = [(0.0, [box(100)]), (0.2, [box(100)]), (0.4, []), (0.6, [box(190)])]
    looks = [np.stack([ALICE]), np.stack([ALICE]), np.zeros((0, 4)), np.stack([BOB])]
    tracks = track_faces(frames, looks=looks)
    assert [len(t.points) for t in tracks] == [2, 1]
    # The same geometry with Alice's own face: one track.
    looks[3] = np.stack([ALICE])
    assert [len(t.points) for t in track_faces(frames, looks=looks)] == [3]
    assert float(ALICE @ BOB) < REACQUIRE_MIN_LIKENESS < float(ALICE @ ALICE)


def test_a_hidden_face_is_stitched_by_its_clean_looks_not_its_last_half_hidden_ones():
    # Alice walks towards Bob, who stands still, then behind him (her crops then show both of them), is hidden
    # for 1.6 s and comes out on his other side looking like herself again.
    frames, looks = [], []
    for i in range(6):
        frames.append((0.2 * i, [box(100 + 40 * i), box(400)]))
        looks.append(np.stack([ALICE, BOB]))
    for i in range(6, 11):
        frames.append((0.2 * i, [box(300 + 20 * (i - 5)), box(400)]))
        looks.append(np.stack([BLEND, BOB]))
    for i in range(11, 18):
        frames.append((0.2 * i, [box(400)]))
        looks.append(np.stack([BOB]))
    for i in range(18, 22):
        frames.append((0.2 * i, [box(400), box(560 + 20 * (i - 18))]))
        looks.append(np.stack([BOB, ALICE]))
    tracks = track_faces(frames, looks=looks)
    assert len(tracks) == 2
    alice = next(t for t in tracks if t.boxes[0][0] < 200)
    assert len(alice.points) == 15 and alice.boxes[-1][0] == 620
    # Her running look, after five blends, no longer resembles her enough to stitch on; her clean looks do.
    assert float(BLEND @ ALICE) < STITCH_MIN_LIKENESS


def test_a_new_face_after_one_left_is_not_stitched_to_it():
    # Alice leaves; 1.4 s later Bob steps into the same place (beyond the live tracks' patience: a stitch).
    frames = [(0.2 * i, [box(100)]) for i in range(5)] + [(2.2 + 0.2 * i, [box(120)]) for i in range(5)]
    looks = [np.stack([ALICE])] * 5 + [np.stack([BOB])] * 5
    assert len(track_faces(frames, looks=looks)) == 2
    looks = [np.stack([ALICE])] * 10
    assert len(track_faces(frames, looks=looks)) == 1
