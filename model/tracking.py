"""Faces across the sampled frames of a clip -> tracks: which detections are the same person.

A greedy tracker by box overlap, the kind SORT popularised without its Kalman filter: each live track predicts
its next box from its last few (constant velocity, scaled by the time between samples), and the detections of the
next frame are matched to predictions by intersection over union, best pairs first, with the likeness of the
face crops (a tiny grey thumbnail, :func:`appearance`) added to the score so that two people whose boxes meet
keep their tracks. A pair below ``min_iou`` may still match when the centres are within ``max_shift`` box sides
(fast motion at a low sampling rate), but only when the faces look alike (:data:`REACQUIRE_MIN_LIKENESS`): with
geometry that weak, a track whose face has just been hidden would otherwise take the face in front of it. A
track not matched for ``max_gap_s`` ends; an unmatched detection starts a new one; tracks are stitched afterwards
(:func:`stitch`).

Likeness is measured against a track's *clean* looks only: crops whose box overlaps no other face in the frame.
A face half hidden behind another gives a crop of both, and a track remembering that crop would resemble the
face in front. At 5 frames per second faces move little between samples; ``benchmarks/video_bench.py``
measures identity switches and fragmentation on synthetic clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]
VELOCITY_WINDOW = 3  # boxes back that the velocity is measured over
APPEARANCE_WEIGHT = 1.0  # how much the crops' likeness counts against geometry when faces meet
APPEARANCE_MEMORY = 0.7  # a track's appearance: this much of the old, the rest of the newest crop
# Two tracks, one ending before the other starts (a face hidden while faces cross), are one person's when their
# faces look alike: on the synthetic clips the same face scored 0.70-0.96 across 4 s, two different faces 0.18-0.74.
STITCH_MIN_LIKENESS = 0.6
# A face taken up by distance alone (no box overlap with the track's guess) must look at least this much like the
# track: same faces 0.60-0.99 (5th percentile 0.79), different faces at most 0.66 in 99 of 100 pairs, on UTKFace
# crops under the synthetic clips' changes of scale, turn, light and blur.
REACQUIRE_MIN_LIKENESS = 0.5
GALLERY = 8  # clean looks a track keeps
OCCLUDED = 0.05  # a box whose intersection with another face's reaches this share of its area is not clean
MAX_REACH = 3.0  # box sides: how far from its guess a face missed for a while may be taken up again
MAX_EXTRAPOLATION_S = 1.0  # no wild extrapolation across a long gap


@dataclass
class Track:
    id: int
    points: list[tuple[int, int]] = field(default_factory=list)  # (frame index, detection index in that frame)
    boxes: list[Box] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    look: np.ndarray | None = field(default=None, repr=False)  # running appearance (unit vector), when given
    gallery: list[np.ndarray] = field(default_factory=list, repr=False)  # the last clean looks

    def see(self, look: np.ndarray | None, clean: bool = True) -> None:
        if look is None:
            return
        if clean:
            self.gallery = [*self.gallery[-(GALLERY - 1) :], look]
        if self.look is None:
            self.look = look
        else:
            mixed = APPEARANCE_MEMORY * self.look + (1 - APPEARANCE_MEMORY) * look
            self.look = mixed / max(float(np.linalg.norm(mixed)), 1e-9)

    def looks(self) -> list[np.ndarray]:
        """What this face is compared by: its clean looks, or its running look when it has none."""
        return self.gallery or ([self.look] if self.look is not None else [])

    def likeness(self, look: np.ndarray) -> float | None:
        """How much ``look`` resembles this face: the best of :meth:`looks`; None when it has no looks."""
        return self._best([look])

    def resemblance(self, other: Track) -> float | None:
        """The best likeness between two tracks' :meth:`looks`."""
        return self._best(other.looks())

    def _best(self, others: list[np.ndarray]) -> float | None:
        mine = self.looks()
        return float(max(a @ b for a in mine for b in others)) if mine and others else None

    def predict(self, t: float) -> Box:
        """Where this track's box should be at time ``t``: constant velocity, measured over its last few boxes
        (one box cut short by an occlusion then bends the estimate less)."""
        last = self.boxes[-1]
        back = min(len(self.boxes) - 1, VELOCITY_WINDOW)
        if back == 0 or self.times[-1] <= self.times[-1 - back]:
            return last
        first = self.boxes[-1 - back]
        k = min(t - self.times[-1], MAX_EXTRAPOLATION_S) / (self.times[-1] - self.times[-1 - back])
        return (
            last[0] + k * (last[0] - first[0]),
            last[1] + k * (last[1] - first[1]),
            last[2] + k * (last[2] - first[2]),
            last[3] + k * (last[3] - first[3]),
        )

    def missed_steps(self, t: float) -> float:
        """How many sampling steps have passed since this track was last seen (1 for the next frame)."""
        if len(self.times) < 2:
            return 1.0
        step = (self.times[-1] - self.times[0]) / (len(self.times) - 1)
        return max(1.0, (t - self.times[-1]) / max(step, 1e-6))


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def clean_boxes(boxes: Sequence[Box]) -> list[bool]:
    """Per box, whether it overlaps no other box of the frame (by :data:`OCCLUDED` of its own area)."""
    out = []
    for i, a in enumerate(boxes):
        area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)
        hit = False
        for j, b in enumerate(boxes):
            if i == j:
                continue
            ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            hit = hit or ix * iy / area >= OCCLUDED
        out.append(not hit)
    return out


def _centre_shift(a: Box, b: Box) -> float:
    """Distance between the centres of two boxes, in units of their mean side."""
    side = ((a[2] - a[0]) + (a[3] - a[1]) + (b[2] - b[0]) + (b[3] - b[1])) / 4
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    return float((dx * dx + dy * dy) ** 0.5 / max(side, 1e-6))


def appearance(crops: np.ndarray, side: int = 24) -> np.ndarray:
    """A small appearance vector per face crop (N x S x S x 3 uint8): the centre of the crop in grey, shrunk to
    ``side`` x ``side``, mean-free, unit length. Enough to tell two people apart where their boxes meet."""
    if len(crops) == 0:
        return np.zeros((0, side * side), np.float32)
    n, size = crops.shape[0], crops.shape[1]
    lo, hi = size // 4, size - size // 4
    grey = crops[:, lo:hi, lo:hi].astype(np.float32).mean(axis=3)
    step = grey.shape[1] / side
    idx = (np.arange(side) * step + step / 2).astype(int)
    small = grey[:, idx][:, :, idx].reshape(n, -1)
    small -= small.mean(axis=1, keepdims=True)
    return small / np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-9)


def track_faces(
    frames: Sequence[tuple[float, Sequence[Box]]],
    min_iou: float = 0.3,
    max_shift: float = 0.5,
    max_gap_s: float = 1.0,
    stitch_gap_s: float = 3.0,
    looks: Sequence[np.ndarray] | None = None,
) -> list[Track]:
    """``frames``: (time, boxes) per sampled frame, in time order; ``looks``: optionally, per frame, an
    :func:`appearance` vector per box, which breaks ties where faces meet. Returns every track, in order of first
    appearance; each detection belongs to exactly one track."""
    done: list[Track] = []
    live: list[Track] = []
    next_id = 1
    for index, (t, boxes) in enumerate(frames):
        still = [tr for tr in live if t - tr.times[-1] <= max_gap_s + 1e-6]
        done += [tr for tr in live if tr not in still]
        live = still
        pairs = []
        clean = clean_boxes(boxes)
        for ti, tr in enumerate(live):
            guess = tr.predict(t)
            missed = tr.missed_steps(t)
            for di, box in enumerate(boxes):
                likeness = None if looks is None else tr.likeness(looks[index][di])
                overlap = iou(guess, box)
                if overlap >= min_iou:
                    score = 1.0 + overlap  # overlaps first, by how much
                else:
                    # After missed frames (an occlusion, a failed detection) the face may be further from its guess.
                    reach = min(max_shift * missed, MAX_REACH)
                    shift = _centre_shift(guess, box)
                    if shift > reach or (likeness is not None and likeness < REACQUIRE_MIN_LIKENESS):
                        continue
                    score = 1.0 - shift / reach
                if likeness is not None:
                    score += APPEARANCE_WEIGHT * likeness
                pairs.append((score, ti, di))
        pairs.sort(reverse=True)
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_tracks or di in used_boxes:
                continue
            used_tracks.add(ti)
            used_boxes.add(di)
            tr = live[ti]
            tr.points.append((index, di))
            tr.boxes.append(tuple(boxes[di]))  # type: ignore[arg-type]
            tr.times.append(t)
            tr.see(None if looks is None else looks[index][di], clean[di])
        for di, box in enumerate(boxes):
            if di not in used_boxes:
                fresh = Track(next_id, [(index, di)], [tuple(box)], [t])  # type: ignore[list-item]
                fresh.see(None if looks is None else looks[index][di], clean[di])
                live.append(fresh)
                next_id += 1
    return stitch(sorted(done + live, key=lambda tr: tr.id), stitch_gap_s)


def stitch(tracks: list[Track], max_gap_s: float) -> list[Track]:
    """Join a track that starts after another ended, within ``max_gap_s``, near where the first would be, and
    looking like it (:data:`STITCH_MIN_LIKENESS`, between their clean looks); the joined track keeps the first's
    id, ids are renumbered in order of first appearance."""
    out: list[Track] = []
    for tr in sorted(tracks, key=lambda x: x.times[0]):
        best, best_like = None, STITCH_MIN_LIKENESS
        for old in out:
            gap = tr.times[0] - old.times[-1]
            if not 0 < gap <= max_gap_s:
                continue
            if _centre_shift(old.predict(tr.times[0]), tr.boxes[0]) > MAX_REACH:
                continue
            like = old.resemblance(tr)
            if like is not None and like >= best_like:
                best, best_like = old, like
        if best is None:
            out.append(tr)
            continue
        best.points += tr.points
        best.boxes += tr.boxes
        best.times += tr.times
        best.look = tr.look
        best.gallery = [*best.gallery, *tr.gallery][-GALLERY:]
    for i, tr in enumerate(out, 1):
        tr.id = i
    return out
