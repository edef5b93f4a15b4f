"""Run detection and cropping once per image and cache the crops, so epochs never decode JPEGs or run MTCNN.

The cache is one ``crops.npy`` (N x S x S x 3 uint8) and ``index.csv`` (name, age, subject, detected, score,
box) in a directory. Images are decoded by :func:`model.imaging.decode_image`, faces found by the detector that
:func:`model.detection.create_detector` builds from the service's settings, and crops made by
:func:`model.faces.crop_face`: the same three steps the service runs.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.detection import Detector, DetectorSettings, create_detector
from model.faces import CropSpec, crop_face, whole_image_detection
from model.imaging import decode_image
from model.options import PipelineLimits
from training.datasets import Sample

INDEX_FIELDS = ["name", "age", "subject", "detected", "score", "x1", "y1", "x2", "y2"]


@dataclass
class CropCache:
    crops: np.ndarray  # N x S x S x 3 uint8
    names: list[str]
    ages: np.ndarray  # float32
    subjects: list[str | None]
    detected: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: np.ndarray) -> CropCache:
        return CropCache(
            self.crops[indices],
            [self.names[i] for i in indices],
            self.ages[indices],
            [self.subjects[i] for i in indices],
            self.detected[indices],
        )


def load_image(path: Path) -> Image.Image:
    """Decode as the service does (:func:`model.imaging.decode_image`: EXIF orientation applied, alpha pasted on
    white, 16-bit rescaled, the same limits)."""
    return decode_image(path.read_bytes(), PipelineLimits().max_image_pixels).image


_worker_detector: Detector | None = None


def _init_worker(settings: DetectorSettings) -> None:
    global _worker_detector  # one detector per worker process, built once
    torch.set_num_threads(1)
    _worker_detector = create_detector(settings)


def _process_chunk(args: tuple[list[Sample], CropSpec]) -> list[tuple[np.ndarray, bool, float, tuple]]:
    samples, spec = args
    assert _worker_detector is not None
    images = [load_image(s.path) for s in samples]
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(im.size, []).append(i)
    results: list = [None] * len(images)
    for idxs in by_size.values():
        for i, faces in zip(idxs, _worker_detector.detect_batch([images[i] for i in idxs])):
            # The labelled person is the largest face; the fallback is the whole (already face-centred) image.
            det = faces[0] if faces else whole_image_detection(images[i])
            results[i] = (crop_face(images[i], det, spec), bool(faces), det.score, det.box)
    return results


def build_cache(
    samples: list[Sample],
    out_dir: Path,
    spec: CropSpec,
    settings: DetectorSettings | None = None,
    workers: int = 2,
    chunk: int = 64,
) -> dict:
    """Detect, crop and store every sample; returns (and writes) a summary with the no-face count."""
    settings = settings or DetectorSettings()
    out_dir.mkdir(parents=True, exist_ok=True)
    crops = np.lib.format.open_memmap(
        out_dir / "crops.tmp.npy", mode="w+", dtype=np.uint8, shape=(len(samples), spec.size, spec.size, 3)
    )
    chunks = [(samples[i : i + chunk], spec) for i in range(0, len(samples), chunk)]
    start = time.time()
    rows, missing = [], []
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
        for ci, result in enumerate(pool.imap(_process_chunk, chunks)):
            for j, (crop, detected, score, box) in enumerate(result):
                i = ci * chunk + j
                s = samples[i]
                crops[i] = crop
                rows.append([s.name, s.age, s.subject or "", int(detected), f"{score:.4f}", *(f"{v:.2f}" for v in box)])
                if not detected:
                    missing.append(s.name)
            if ci % 20 == 0:
                print(
                    f"preprocess: {min((ci + 1) * chunk, len(samples))}/{len(samples)} "
                    f"({time.time() - start:.0f}s, {len(missing)} without a face)",
                    flush=True,
                )
    crops.flush()
    del crops
    (out_dir / "crops.tmp.npy").replace(out_dir / "crops.npy")
    with open(out_dir / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(INDEX_FIELDS)
        writer.writerows(rows)
    summary = {
        "images": len(samples),
        "no_face": len(missing),
        "no_face_files": missing,
        "fallback": "whole image used as the face box, no rotation",
        "crop": spec.to_dict(),
        "detector": {**settings.__dict__, "options": dict(settings.options)},
        "seconds": round(time.time() - start, 1),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=list))
    return summary


def load_cache(cache_dir: Path, mmap: bool = True) -> CropCache:
    crops = np.load(cache_dir / "crops.npy", mmap_mode="r" if mmap else None)
    names, ages, subjects, detected = [], [], [], []
    with open(cache_dir / "index.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            names.append(row["name"])
            ages.append(float(row["age"]))
            subjects.append(row["subject"] or None)
            detected.append(row["detected"] == "1")
    if len(names) != len(crops):
        raise ValueError(f"{cache_dir}: index.csv has {len(names)} rows but crops.npy has {len(crops)}")
    return CropCache(crops, names, np.asarray(ages, dtype=np.float32), subjects, np.asarray(detected))
