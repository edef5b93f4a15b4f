"""Every registered detector side by side: what it finds and what it costs.

    python -m benchmarks.detector_bench --utkface ../shared/data/utkface/images \
        --split models/utkface-split-seed0.json [--detectors mtcnn,yunet] [--pasted 200] [--rounds 30]

- **No-face rate** on the split's test chips (UTKFace's aligned 200x200 photos: one clear, frame-filling face
  each), with the detector as the service runs it (its default settings, minimum face 40 px).
- **Small faces**: test chips scaled so the face is ``--face-640`` px (default 60) and pasted at random into a
  640x480 scene, and ``--face-1080`` px (default 100) into a 1920x1080 one; the scene is a fixture photo without
  faces (``rocket.jpg``), blurred and resized, so there is clutter to be fooled by. Found: a detection whose
  centre lies within the pasted chip and whose side is 0.3-1.5 of it.
- **Multi-face composites**: 2-5 chips of 80-240 px pasted without overlap into a 1280x720 scene: recall, and
  spurious faces (detections matching no chip) per photo.
- **Time** per photo at 200x200, 640x480 and 1920x1080, one thread, interleaved across detectors (A B A B),
  medians; ratio to the first detector.

Writes JSON (``--out``) and prints a table. The photos are made here from the data folder; nothing is committed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from model.detection import Detector, DetectorSettings, create_detector, list_detectors
from model.imaging import decode_image
from testkit import FIXTURES


def variant(spec: str) -> DetectorSettings:
    """``yunet`` or ``yunet:detail=24:target_side=480``: a registered detector with settings (the generic ones by
    their :class:`DetectorSettings` name, the rest passed to the detector as its own options)."""
    name, *pairs = spec.split(":")
    generic: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        number = float(value) if "." in value else int(value)
        (generic if key in DetectorSettings.__dataclass_fields__ else options)[key] = number
    return DetectorSettings(name=name, options=options, **generic)


def scene(size: tuple[int, int]) -> Image.Image:
    return Image.open(FIXTURES / "rocket.jpg").convert("RGB").resize(size).filter(ImageFilter.GaussianBlur(1))


def load_chip(path: Path) -> Image.Image:
    return decode_image(path.read_bytes(), 40_000_000).image


def pasted(chips: list[Path], size: tuple[int, int], face: int, rng: np.random.Generator) -> list[tuple[Image.Image, list]]:
    """One chip per photo, scaled so its side is ``face`` / 0.85 (a UTKFace chip's face spans ~85% of it)."""
    out = []
    side = round(face / 0.85)
    for path in chips:
        canvas = scene(size)
        x, y = int(rng.integers(0, size[0] - side)), int(rng.integers(0, size[1] - side))
        canvas.paste(load_chip(path).resize((side, side), Image.Resampling.LANCZOS), (x, y))
        out.append((canvas, [(x, y, x + side, y + side)]))
    return out


def composites(chips: list[Path], count: int, rng: np.random.Generator) -> list[tuple[Image.Image, list]]:
    out, pool = [], itertools.cycle(chips)
    for _ in range(count):
        canvas, boxes = scene((1280, 720)), []
        for _ in range(int(rng.integers(2, 6))):
            side = int(rng.integers(80, 241))
            for _ in range(50):  # a free spot
                x, y = int(rng.integers(0, 1280 - side)), int(rng.integers(0, 720 - side))
                if all(x + side < a or c < x or y + side < b or d < y for a, b, c, d in boxes):
                    break
            else:
                continue
            canvas.paste(load_chip(next(pool)).resize((side, side), Image.Resampling.LANCZOS), (x, y))
            boxes.append((x, y, x + side, y + side))
        out.append((canvas, boxes))
    return out


def matches(det: Any, box: tuple[int, int, int, int]) -> bool:
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    side = (det.width + det.height) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3] and 0.3 <= side / (box[2] - box[0]) <= 1.5


def score(detector: Detector, photos: list[tuple[Image.Image, list]]) -> dict[str, float]:
    found = total = spurious = 0
    for image, boxes in photos:
        faces = detector.detect(image)
        found += sum(any(matches(f, b) for f in faces) for b in boxes)
        spurious += sum(not any(matches(f, b) for b in boxes) for f in faces)
        total += len(boxes)
    return {
        "recall": round(found / max(total, 1), 4),
        "faces": total,
        "spurious_per_photo": round(spurious / len(photos), 3),
    }


def timing(detectors: dict[str, Detector], rounds: int) -> dict[str, dict[str, float]]:
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    astronaut = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
    photos = {
        "200x200": astronaut.crop((60, 0, 260, 200)),
        "640x480": group.resize((640, 480)),
        "1920x1080": group.resize((1920, 1080)),
    }
    ms: dict[str, dict[str, list[float]]] = {d: {k: [] for k in photos} for d in detectors}
    for _ in range(rounds + 1):  # the first round warms up
        for kind, image in photos.items():
            for name, det in detectors.items():
                t0 = time.perf_counter()
                det.detect(image)
                ms[name][kind].append((time.perf_counter() - t0) * 1000)
    return {d: {k: round(statistics.median(v[1:]), 2) for k, v in kinds.items()} for d, kinds in ms.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utkface", type=Path, required=True, help="UTKFace images folder")
    p.add_argument("--split", type=Path, required=True, help="split JSON (its test part is used)")
    p.add_argument(
        "--detectors",
        default=",".join(d for d in list_detectors() if d != "none"),
        help="registered names, each optionally with its own options: yunet:detail=24",
    )
    p.add_argument("--pasted", type=int, default=200, help="photos per pasted set and composites")
    p.add_argument("--face-640", type=int, default=60)
    p.add_argument("--face-1080", type=int, default=100)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/detector_bench.json"))
    args = p.parse_args(argv)
    names = args.detectors.split(",")
    detectors = {n: create_detector(variant(n), threads=1) for n in names}
    test = sorted(json.loads(args.split.read_text())["test"])
    rng = np.random.default_rng(0)
    sample = [args.utkface / n for n in rng.permutation(test)[: args.pasted]]
    sets = {
        f"{args.face_640} px faces in 640x480": pasted(sample, (640, 480), args.face_640, np.random.default_rng(1)),
        f"{args.face_1080} px faces in 1920x1080": pasted(sample, (1920, 1080), args.face_1080, np.random.default_rng(2)),
        "multi-face composites 1280x720": composites(sample, args.pasted // 2, np.random.default_rng(3)),
    }
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "test_chips": len(test),
        "detectors": {},
    }
    for name, det in detectors.items():
        t0 = time.perf_counter()
        missed = [n for n in test if not det.detect(load_chip(args.utkface / n))]
        r: dict[str, Any] = {
            "no_face": len(missed),
            "no_face_rate": round(len(missed) / len(test), 5),
            "no_face_files": missed,
            "chips_seconds": round(time.perf_counter() - t0, 1),
        }
        r.update({label: score(det, photos) for label, photos in sets.items()})
        result["detectors"][name] = r
        print(f"{name}: {len(missed)} of {len(test)} test chips without a face", flush=True)
    times = timing(detectors, args.rounds)
    first = names[0]
    print("\n| detector | test chips without a face | " + " | ".join(sets) + " | ms 200x200 | ms 640x480 | ms 1080p |")
    print("|" + " --- |" * (5 + len(sets)))
    for name in names:
        r = result["detectors"][name]
        r["ms"] = times[name]
        cells = [f"{r['no_face']} ({100 * r['no_face_rate']:.2f}%)"]
        for label in sets:
            cells.append(f"{r[label]['recall']:.3f} ({r[label]['spurious_per_photo']:.2f} spurious/photo)")
        for kind, v in times[name].items():
            cells.append(f"{v:.1f} ({v / times[first][kind]:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
