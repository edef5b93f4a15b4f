"""Calibrate a detector's face frame to MTCNN's, the frame the shipped models were trained on.

    python -m training.calibrate_detector --detector yunet --images ../shared/data/utkface/images \\
        --split models/utkface-split-seed0.json --count 3000

On photos of the split's *train* part, MTCNN and the detector each find the largest face. MTCNN's box frame
(:func:`model.detection.box_frame`) is the reference; the detector's five landmarks are mapped into it (centre 0,
side 1, eyes level), and their mean over the photos is the template that the detector's similarity fit uses
(``TEMPLATE`` in its module). It prints the template and how closely the fitted frames then agree with MTCNN's on
the *validation* part: IoU of the two frame squares, centre error and side ratio (relative to the side) and the
roll difference, as medians and 10th/90th percentiles.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from model.detection import DetectorSettings, FaceDetection, FaceFrame, create_detector, frame_of
from model.imaging import decode_image


def frame_coords(points: np.ndarray, frame: FaceFrame) -> np.ndarray:
    """Image points -> the frame's unit coordinates (centre 0, side 1, the frame's roll undone)."""
    c, s = math.cos(-frame.angle), math.sin(-frame.angle)
    d = (points - (frame.cx, frame.cy)) / frame.side
    return d @ np.array([[c, s], [-s, c]])


def square_iou(a: FaceFrame, b: FaceFrame) -> float:
    """IoU of the two frames' axis-aligned squares (rolls are a few degrees here; their difference is reported)."""

    def box(f: FaceFrame) -> tuple[float, float, float, float]:
        return f.cx - f.side / 2, f.cy - f.side / 2, f.cx + f.side / 2, f.cy + f.side / 2

    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = box(a), box(b)
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    return inter / (a.side**2 + b.side**2 - inter)


def pairs(names: list[str], images: Path, detector_name: str) -> list[tuple[FaceFrame, np.ndarray, FaceDetection]]:
    reference = create_detector(DetectorSettings(name="mtcnn"))
    other = create_detector(DetectorSettings(name=detector_name))
    out = []
    for name in names:
        image = decode_image((images / name).read_bytes(), 40_000_000).image
        ref, det = reference.detect(image), other.detect(image)
        if ref and det and len(det[0].landmarks) == 5:
            out.append((frame_of(ref[0]), np.asarray(det[0].landmarks), det[0]))
    return out


def summary(values: np.ndarray) -> dict[str, float]:
    return {k: round(float(np.percentile(values, q)), 4) for k, q in (("p10", 10), ("median", 50), ("p90", 90))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detector", required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True, help="split JSON: train photos fit, val photos check")
    p.add_argument("--count", type=int, default=3000, help="train photos to fit on (and up to a third as many to check)")
    p.add_argument("--out", type=Path, help="write the figures as JSON")
    args = p.parse_args(argv)
    split = json.loads(args.split.read_text())
    rng = np.random.default_rng(0)
    fit_names = list(rng.permutation(split["train"])[: args.count])
    check_names = list(rng.permutation(split["val"])[: max(1, args.count // 3)])

    fit = pairs(fit_names, args.images, args.detector)
    template = np.mean([frame_coords(points, ref) for ref, points, _ in fit], axis=0)
    from model.detectors.yunet import similarity_frame

    # The box carries what five points cannot (forehead, chin): a linear map from the detector's box, in the
    # landmark frame's coordinates, to where MTCNN's frame lies in them (offset x, y and log side ratio).
    feats, targets = [], []
    for ref, points, det in fit:
        lm = similarity_frame(points, template)
        feats.append(box_features(det.box, lm))
        r = frame_coords(np.array([[ref.cx, ref.cy]]), lm)[0]
        targets.append([r[0], r[1], math.log(ref.side / lm.side)])
    correction, *_ = np.linalg.lstsq(np.array(feats), np.array(targets), rcond=None)

    check = pairs(check_names, args.images, args.detector)
    report_by = {}
    for variant in ("landmarks", "landmarks+box"):
        report_by[variant] = agreement(check, template, correction.T if variant == "landmarks+box" else None)
    report = {
        "detector": args.detector,
        "fit_photos": len(fit),
        "fit_asked": len(fit_names),
        "check_photos": len(check),
        "template": np.round(template, 4).tolist(),
        "box_correction": np.round(correction.T, 4).tolist(),
        "check": report_by,
    }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


def box_features(box: tuple[float, float, float, float], frame: FaceFrame) -> list[float]:
    """The box's corners in the frame's unit coordinates, and a constant."""
    corners = frame_coords(np.array([[box[0], box[1]], [box[2], box[3]]]), frame)
    return [1.0, *corners.ravel().tolist()]


def agreement(check: list, template: np.ndarray, correction: np.ndarray | None) -> dict:
    from model.detectors.yunet import box_correction, similarity_frame

    ious, centre, ratio, roll = [], [], [], []
    for ref, points, det in check:
        got = similarity_frame(points, template)
        if correction is not None:
            got = box_correction(got, det.box, correction)
        ious.append(square_iou(got, ref))
        centre.append(math.hypot(got.cx - ref.cx, got.cy - ref.cy) / ref.side)
        ratio.append(got.side / ref.side)
        roll.append(math.degrees(abs(got.angle - ref.angle)))
    return {
        "iou": summary(np.array(ious)),
        "centre_error_per_side": summary(np.array(centre)),
        "side_ratio": summary(np.array(ratio)),
        "roll_difference_deg": summary(np.array(roll)),
    }


if __name__ == "__main__":
    main()
