"""Video: tracking, fusion and speed on synthetic clips made from held-out UTKFace photos.

    python -m benchmarks.video_bench --utkface ../shared/data/utkface [--clips 60] [--val-clips 120] [--seconds 4]

Each clip is 640x480 at 30 fps, 4 s, H.264 (x264 at CRF 28): one to three held-out faces (the split's test photos;
calibration clips use its validation photos) move along their own lines, crossing each other's paths in the
multi-face clips, scale by +-10%, turn by up to 6 degrees, brighten or darken by 20%, and are blurred a little.
Each clip goes through ``AgePipeline.run_video`` at 5 frames per second (the default), and each track is matched
to the face whose pasted box it overlaps most in each frame. Reported:

- identity switches as MOT benchmarks count them (a face's track id changing between the frames it is tracked
  in), the changes of face within a track, and fragmentation (extra tracks per face). The ground truth places each
  detection by its five landmarks: each chip's landmarks, found alone, are carried through the clip's resize,
  turn and paste, and a detection is the face whose landmarks are nearest its own (within 0.12 tile sides), which
  tells faces apart where their boxes coincide as they cross; detections it cannot place are counted apart;
- the fused track MAE against the mean single-frame MAE of the same frames;
- flicker: the standard deviation of frame ages within a track, and of the running fused age shown per frame;
- the running fused age's change between consecutive seconds of a track (median);
- range coverage per track (the fused 95% range holds the true age), with the shipped frame-error correlation
  rho and range scale (``model/fusion.py``) and with the pair chosen on the validation clips (for each rho of a
  grid the smallest scale whose coverage reaches 95%; the pair with the narrowest ranges);
- speed: 480p and 720p 30 fps clips of 10 s through the real service (``python -m app``, README's defaults), one
  request at a time: seconds of video per second of wall time (at least 1: real time).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from model.detection import FaceDetection
from model.fusion import FRAME_ERROR_CORRELATION, FUSED_RANGE_SCALE, fuse
from model.pipeline import AgePipeline
from model.tracking import iou
from testkit import encode_clip, running_service

Box = tuple[float, float, float, float]
Pose = tuple[float, float, float, float]  # a pasted face's side, turn (degrees), x1, y1
SIZE = (640, 480)
FPS = 30
RHO_GRID = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0]
SCALE_GRID = [round(1.0 + 0.05 * i, 2) for i in range(21)]  # 1.0 .. 2.0


def faces_of(split: str, data: Path, count: int, seed: int) -> list[tuple[Image.Image, float]]:
    names = json.loads(Path("models/utkface-split-seed0.json").read_text())[split]
    ages = {row["file"]: float(row["age"]) for row in csv.DictReader(open(data / "labels.csv"))}
    rng = random.Random(seed)
    picked = rng.sample([n for n in names if n in ages], count)
    return [(Image.open(data / "images" / n).convert("RGB"), ages[n]) for n in picked]


def synthetic_clip(
    faces: list[Image.Image], seconds: float, rng: random.Random, size: tuple[int, int] = SIZE
) -> tuple[list[Image.Image], list[list[Box]], list[list[Pose]]]:
    """Frames, and per frame each face's pasted box (x1, y1, x2, y2) and pose (side, turn in degrees, x1, y1)."""
    w, h = size
    n = len(faces)
    steps = int(seconds * FPS)
    base = min(h * 0.42, w / (n + 0.5))
    plans = []
    for j in range(n):
        lane = (j + 0.5) / n
        end = 1 - lane if n > 1 else lane + rng.uniform(-0.2, 0.2)
        plans.append(
            {
                "x0": lane,
                "x1": end,
                "y": rng.uniform(0.3, 0.7),
                "scale": rng.uniform(-0.1, 0.1),
                "turn": rng.uniform(-6, 6),
                "light": rng.uniform(-0.2, 0.2),
                "blur": rng.uniform(0.0, 1.2),
            }
        )
    frames, boxes, poses = [], [], []
    for i in range(steps):
        k = i / max(steps - 1, 1)
        canvas = Image.new("RGB", size, (60 + int(20 * k), 62, 66))
        frame_boxes, frame_poses = [], []
        for face, plan in zip(faces, plans):
            side = int(base * (1 + plan["scale"] * k))
            tile = face.resize((side, side)).rotate(
                plan["turn"] * k, resample=Image.Resampling.BILINEAR, fillcolor=(60, 62, 66)
            )
            tile = ImageEnhance.Brightness(tile).enhance(1 + plan["light"] * k)
            if plan["blur"] > 0.3:
                tile = tile.filter(ImageFilter.GaussianBlur(plan["blur"]))
            cx = (plan["x0"] + (plan["x1"] - plan["x0"]) * k) * w
            cy = plan["y"] * h
            x1, y1 = int(np.clip(cx - side / 2, 0, w - side)), int(np.clip(cy - side / 2, 0, h - side))
            canvas.paste(tile, (x1, y1))
            frame_boxes.append((float(x1), float(y1), float(x1 + side), float(y1 + side)))
            frame_poses.append((float(side), plan["turn"] * k, float(x1), float(y1)))
        frames.append(canvas)
        boxes.append(frame_boxes)
        poses.append(frame_poses)
    return frames, boxes, poses


MIN_VISIBLE = 0.25  # a pasted face with less of its centre in sight than this cannot be what was detected
MAX_LANDMARK_ERROR = 0.12  # mean landmark distance, in tile sides, within which a detection is a pasted face's


def chip_landmarks(pipeline: AgePipeline, chip: Image.Image) -> np.ndarray | None:
    """A chip's five landmarks (5 x 2, in units of its width) as the pipeline's detector finds them alone; None
    when it finds no face."""
    found = pipeline.detector.detect(chip)
    if not found or len(found[0].landmarks) != 5:
        return None
    best = max(found, key=lambda d: d.width * d.height)
    return np.asarray(best.landmarks, dtype=np.float64) / chip.width


def pasted_landmarks(marks: np.ndarray, pose: tuple[float, float, float, float]) -> np.ndarray:
    """Where a chip's landmarks are in the frame: resized to the tile, turned about its centre as
    ``Image.rotate`` turns it (counter-clockwise on screen), moved to the tile's place."""
    side, turn, x1, y1 = pose
    p = marks * side - side / 2
    a = np.radians(turn)
    turned = np.stack([p[:, 0] * np.cos(a) + p[:, 1] * np.sin(a), -p[:, 0] * np.sin(a) + p[:, 1] * np.cos(a)], 1)
    return turned + side / 2 + np.asarray([x1, y1])


def owner_of(
    detection: FaceDetection,
    tiles: list[tuple[float, float, float, float]],
    poses: list[tuple[float, float, float, float]] | None = None,
    marks: list[np.ndarray | None] | None = None,
) -> int:
    """Which pasted face a detection is; -1 when none. By landmarks where both have them: the face whose pasted
    landmarks are nearest the detection's (mean distance under :data:`MAX_LANDMARK_ERROR` tile sides), which tells
    faces apart even where their boxes coincide. Otherwise by boxes: among the faces at least
    :data:`MIN_VISIBLE` in sight (the tiles pasted after a face cover it), the one whose centre (the tile's
    central 60%, where a UTKFace chip's face is) the detection overlaps most."""
    if poses is not None and marks is not None and len(detection.landmarks) == 5:
        found = np.asarray(detection.landmarks, dtype=np.float64)
        best_error, owner = MAX_LANDMARK_ERROR, -1
        for j, (tile, pose, chip) in enumerate(zip(tiles, poses, marks)):
            if chip is None:
                break
            side = tile[2] - tile[0]
            error = float(np.linalg.norm(found - pasted_landmarks(chip, pose), axis=1).mean()) / side
            if error < best_error:
                best_error, owner = error, j
        else:
            return owner
    best, owner = 0.05, -1
    for j, (x1, y1, x2, y2) in enumerate(tiles):
        m = 0.2 * (x2 - x1)
        centre = (x1 + m, y1 + m, x2 - m, y2 - m)
        if visible_share(centre, tiles[j + 1 :]) < MIN_VISIBLE:
            continue
        overlap = iou(detection.box, centre)
        if overlap > best:
            best, owner = overlap, j
    return owner


def visible_share(region: tuple[float, float, float, float], above: list[tuple[float, float, float, float]]) -> float:
    """The share of ``region`` that none of the boxes ``above`` covers."""
    x1, y1, x2, y2 = (int(round(v)) for v in region)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    visible = np.ones((y2 - y1, x2 - x1), bool)
    for ox1, oy1, ox2, oy2 in above:
        top, left = max(int(oy1) - y1, 0), max(int(ox1) - x1, 0)
        visible[top : max(int(oy2) - y1, 0), left : max(int(ox2) - x1, 0)] = False
    return float(visible.mean())


def evaluate_clip(
    pipeline: AgePipeline, faces: list[tuple[Image.Image, float]], seconds: float, rng: random.Random
) -> tuple[list[dict[str, Any]], int]:
    """The clip's tracks (each with the face its detections belong to, frame by frame), and its identity switches
    counted as MOT benchmarks count them: how often a face's track id changes between the frames it is tracked in."""
    frames, truth, poses = synthetic_clip([f for f, _ in faces], seconds, rng)
    marks = [chip_landmarks(pipeline, f) for f, _ in faces]
    clip = encode_clip(frames, fps=FPS, crf="28")
    result = pipeline.run_video(clip)
    step = 1.0 / result.fps
    tracks = []
    seen: dict[int, dict[float, int]] = {}  # face -> time -> track id
    for tr in result.tracks:
        owners, rows = [], []
        for t, face, running_step in tr.frames:
            index = min(int(round(t * FPS)), len(truth) - 1)
            owner = owner_of(face.detection, truth[index], poses[index], marks)
            owners.append(owner)
            if owner >= 0:
                seen.setdefault(owner, {}).setdefault(t, tr.id)
            half = pipeline.estimator.half_width(face.age, face.spread)
            rows.append((t, face.age, face.spread, half, running_step.age))
        tracks.append({"owners": owners, "rows": rows, "fused": tr.fused, "faces": faces, "step": step})
    idsw = 0
    for by_time in seen.values():
        ids = [by_time[t] for t in sorted(by_time)]
        idsw += sum(1 for a, b in zip(ids, ids[1:]) if a != b)
    return tracks, idsw


def summarise(tracks: list[dict[str, Any]], faces_total: int, idsw: int, rho: float, scale: float) -> dict[str, Any]:
    known = [[o for o in t["owners"] if o >= 0] for t in tracks]  # -1: a detection the ground truth cannot place
    switches = sum(sum(1 for a, b in zip(k, k[1:]) if a != b) for k in known)
    unplaced = sum(len(t["owners"]) - len(k) for t, k in zip(tracks, known))
    real = [t for t in tracks if len(t["rows"]) >= 3]
    fused_err, frame_err, flicker_before, flicker_after, per_second, covered, widths = [], [], [], [], [], [], []
    for t in real:
        owner = statistics.mode(t["owners"])
        if owner < 0:
            continue
        true = t["faces"][owner][1]
        ages = [r[1] for r in t["rows"]]
        fused = fuse(ages, [r[2] for r in t["rows"]], [r[3] for r in t["rows"]], rho, scale)
        fused_err.append(abs(fused.age - true))
        frame_err.append(float(np.mean([abs(a - true) for a in ages])))
        flicker_before.append(float(np.std(ages)))
        flicker_after.append(float(np.std([r[4] for r in t["rows"]])))
        low, high = fused.age_range
        covered.append(low <= true <= high)
        widths.append(high - low)
        by_second: dict[int, float] = {}
        for r in t["rows"]:
            by_second[int(r[0])] = r[4]  # the running age at the last sample of each second
        seconds = sorted(by_second)
        per_second += [abs(by_second[b] - by_second[a]) for a, b in zip(seconds, seconds[1:])]
    return {
        "rho": rho,
        "range_scale": scale,
        "tracks": len(tracks),
        "tracks_of_3_frames_or_more": len(real),
        "faces": faces_total,
        "identity_switches_mot": idsw,
        "mot_switches_per_20_tracks": round(20 * idsw / max(len(real), 1), 2),
        "face_changes_within_tracks": switches,
        "face_changes_per_20_tracks": round(20 * switches / max(len(real), 1), 2),
        "detections_unplaced": unplaced,
        "detections": sum(len(t["owners"]) for t in tracks),
        "fragmentation_extra_tracks_per_face": round((len(real) - faces_total) / faces_total, 3),
        "fused_mae": round(float(np.mean(fused_err)), 3),
        "mean_single_frame_mae": round(float(np.mean(frame_err)), 3),
        "flicker_std_frames": round(float(np.median(flicker_before)), 3),
        "flicker_std_running_fused": round(float(np.median(flicker_after)), 3),
        "change_between_seconds_median": round(float(np.median(per_second)), 3) if per_second else None,
        "track_range_coverage": round(float(np.mean(covered)), 4),
        "mean_fused_range_width": round(float(np.mean(widths)), 2),
    }


def coverage(tracks: list[dict[str, Any]], rho: float, scale: float) -> tuple[float, float]:
    """The share of tracks whose fused range holds the true age, and the ranges' mean width."""
    hits, widths = [], []
    for t in tracks:
        if len(t["rows"]) < 3:
            continue
        owner = statistics.mode(t["owners"])
        if owner < 0:
            continue
        fused = fuse([r[1] for r in t["rows"]], [r[2] for r in t["rows"]], [r[3] for r in t["rows"]], rho, scale)
        low, high = fused.age_range
        hits.append(low <= t["faces"][owner][1] <= high)
        widths.append(high - low)
    return float(np.mean(hits)), float(np.mean(widths))


def calibrate(tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """For each rho the smallest range scale whose coverage reaches 95%; the pair with the narrowest ranges."""
    table = {}
    for rho in RHO_GRID:
        for scale in SCALE_GRID:
            cov, width = coverage(tracks, rho, scale)
            if cov >= 0.95:
                table[rho] = {"scale": scale, "coverage": round(cov, 4), "mean_width": round(width, 2)}
                break
    best = min(table, key=lambda r: table[r]["mean_width"]) if table else 1.0
    return {"by_rho": {str(k): v for k, v in table.items()}, "rho": best, "scale": table.get(best, {}).get("scale", 2.0)}


def clips(pipeline: AgePipeline, split: str, data: Path, count: int, seconds: float, seed: int) -> tuple[list, int, int]:
    rng = random.Random(seed)
    people = faces_of(split, data, count * 2, seed)
    tracks, faces_total, idsw = [], 0, 0
    for c in range(count):
        n = 1 if c % 3 == 0 else (2 if c % 3 == 1 else 3)
        chosen = [people[(c * 3 + j) % len(people)] for j in range(n)]
        faces_total += n
        more, switches = evaluate_clip(pipeline, chosen, seconds, rng)
        tracks += more
        idsw += switches
        print(f"{split} clip {c + 1}/{count}: {n} faces", flush=True)
    return tracks, faces_total, idsw


def speed(data: Path, seconds: float = 10.0) -> dict[str, Any]:
    faces = faces_of("test", data, 2, 7)
    out = {}
    with running_service() as (base, _):
        for name, size in (("480p", (854, 480)), ("720p", (1280, 720))):
            frames, _, _ = synthetic_clip([f for f, _ in faces], seconds, random.Random(3), size)
            clip = encode_clip(frames, fps=FPS, crf="28")
            walls = []
            for _ in range(3):
                t0 = time.monotonic()
                r = httpx.post(base + "/estimate/video", files={"file": ("c.mp4", clip)}, timeout=300)
                walls.append(time.monotonic() - t0)
                assert r.status_code == 200, r.text[:300]
            wall = statistics.median(walls)
            out[name] = {
                "clip_s": seconds,
                "bytes": len(clip),
                "wall_s_median": round(wall, 2),
                "realtime_factor": round(seconds / wall, 2),
                "decoded_fps": round(seconds * FPS / wall, 1),
                "tracks": len(r.json()["tracks"]),
            }
            print(name, out[name], flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utkface", type=Path, required=True, help="folder with labels.csv and images/")
    p.add_argument("--clips", type=int, default=60, help="test clips")
    p.add_argument("--val-clips", type=int, default=120, help="validation clips (the range calibration's)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--checkpoint", default="models/daa-faceres160-distilled-utkface.onnx")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/video_bench.json"))
    args = p.parse_args(argv)
    pipeline = AgePipeline.load(args.checkpoint)
    val_tracks, val_faces, val_idsw = clips(pipeline, "val", args.utkface, max(args.val_clips, 3), args.seconds, 1)
    chosen = calibrate(val_tracks)
    test_tracks, faces_total, idsw = clips(pipeline, "test", args.utkface, args.clips, args.seconds, 2)
    result = {
        "command": "python -m benchmarks.video_bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "calibration_on_validation_clips": chosen,
        "validation_chosen": summarise(val_tracks, val_faces, val_idsw, chosen["rho"], chosen["scale"]),
        "test_shipped": summarise(test_tracks, faces_total, idsw, FRAME_ERROR_CORRELATION, FUSED_RANGE_SCALE),
        "test_chosen": summarise(test_tracks, faces_total, idsw, chosen["rho"], chosen["scale"]),
        "test_single_frames_unscaled": summarise(test_tracks, faces_total, idsw, 1.0, 1.0),
        "speed": speed(args.utkface),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
