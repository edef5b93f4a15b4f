"""Dataset listings: which image files exist, their ages, and (where known) their subjects.

Every dataset becomes a list of :class:`Sample`; everything after this (splits, preprocessing, training) is
dataset-agnostic.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$")
FGNET_NAME = re.compile(r"^(\d{3})A(\d{2})[a-zA-Z]?\.(jpg|JPG)$")


@dataclass(frozen=True)
class Sample:
    path: Path
    age: float
    subject: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def load_utkface(root: Path) -> list[Sample]:
    """UTKFace: ages from the file names (``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg``).

    Files whose names do not parse are skipped, as the dataset's own ``labels.csv`` does.
    """
    images = root / "images" if (root / "images").is_dir() else root
    samples = []
    for path in sorted(images.iterdir()):
        m = UTKFACE_NAME.match(path.name)
        if m:
            samples.append(Sample(path=path, age=float(m.group(1))))
    if not samples:
        raise FileNotFoundError(f"no UTKFace images (names like 25_0_1_2017...jpg.chip.jpg) under {images}")
    return samples


def load_fgnet(root: Path) -> list[Sample]:
    """FG-NET: ``001A02.JPG`` is subject 001 at age 2. Subjects drive the leave-one-person-out protocol."""
    images = root / "images" if (root / "images").is_dir() else root
    samples = []
    for path in sorted(images.iterdir()):
        m = FGNET_NAME.match(path.name)
        if m:
            samples.append(Sample(path=path, age=float(m.group(2)), subject=m.group(1)))
    if not samples:
        raise FileNotFoundError(f"no FG-NET images (names like 001A02.JPG) under {images}")
    return samples


def load_csv(csv_path: Path) -> list[Sample]:
    """A generic ``path,age[,subject]`` CSV (MORPH II, MegaAge-Asian, IMDB-WIKI...). Paths are relative to the CSV."""
    samples = []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"path", "age"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: needs a header with at least 'path' and 'age' columns")
        for line, row in enumerate(reader, start=2):
            try:
                age = float(row["age"])
            except ValueError as exc:
                raise ValueError(f"{csv_path}:{line}: age {row['age']!r} is not a number") from exc
            path = Path(row["path"])
            samples.append(
                Sample(
                    path=path if path.is_absolute() else csv_path.parent / path, age=age, subject=row.get("subject") or None
                )
            )
    return samples


LOADERS = {"utkface": load_utkface, "fgnet": load_fgnet, "csv": load_csv}


def load_dataset(kind: str, location: Path) -> list[Sample]:
    if kind not in LOADERS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose from {sorted(LOADERS)}")
    return LOADERS[kind](Path(location))
