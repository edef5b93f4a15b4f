"""Seeded train/val/test splits that keep byte-identical images together and drop contradictory duplicates.

The split is written to a JSON file that ships with every result (checkpoint metadata, evaluation reports).
Datasets with subjects are split by subject (no person on both sides); groups of byte-identical files always
land in one split, and groups whose copies disagree on the age are dropped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from training.datasets import Sample


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def make_split(samples: list[Sample], seed: int = 0, val: float = 0.1, test: float = 0.2) -> dict:
    """Assign every sample name to train, val or test (or dropped), deterministically from ``seed``."""
    by_digest: dict[str, list[Sample]] = {}
    for s in samples:
        by_digest.setdefault(file_digest(s.path), []).append(s)
    dropped = sorted(s.name for g in by_digest.values() if len({x.age for x in g}) > 1 for s in g)
    dropped_set = set(dropped)
    # Units that must not be separated: a subject's images, joined with every byte-identical copy.
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for digest, group in by_digest.items():
        for s in group:
            if s.name in dropped_set:
                continue
            parent[find("n:" + s.name)] = find("d:" + digest)
            if s.subject is not None:
                parent[find("s:" + s.subject)] = find("d:" + digest)
    units: dict[str, list[str]] = {}
    for s in samples:
        if s.name not in dropped_set:
            units.setdefault(find("n:" + s.name), []).append(s.name)
    keys = sorted(units)
    order = np.random.default_rng(seed).permutation(len(keys))
    total = sum(len(v) for v in units.values())
    parts: dict[str, list[str]] = {"test": [], "val": [], "train": []}
    for i in order:
        names = units[keys[i]]
        if len(parts["test"]) < test * total:
            parts["test"] += names
        elif len(parts["val"]) < val * total:
            parts["val"] += names
        else:
            parts["train"] += names
    return {
        "seed": seed,
        "fractions": {"val": val, "test": test},
        "counts": {k: len(v) for k, v in parts.items()} | {"dropped": len(dropped)},
        **{k: sorted(v) for k, v in parts.items()},
        "dropped": dropped,
    }


def leave_one_subject_out(samples: list[Sample]) -> list[tuple[str, list[str], list[str]]]:
    """FG-NET's protocol: one fold per subject, (subject, train names, test names)."""
    subjects = sorted({s.subject for s in samples if s.subject is not None})
    return [
        (subj, [s.name for s in samples if s.subject != subj], [s.name for s in samples if s.subject == subj])
        for subj in subjects
    ]


def save_split(split: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=0))


def load_split(path: Path) -> dict:
    split = json.loads(Path(path).read_text())
    for key in ("train", "val", "test"):
        if key not in split:
            raise ValueError(f"{path}: split file has no {key!r} list")
    return split
