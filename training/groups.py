"""Error by group (age decade, gender, ethnicity as UTKFace labels them) from an evaluation report, for the model
card: ``python -m training groups --report test.json --labels ../shared/data/utkface/labels.csv``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

GENDERS = {"0": "male", "1": "female"}
RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}


def group_metrics(report: dict[str, Any], labels: Path) -> dict[str, dict[str, dict[str, float]]]:
    with open(labels, newline="") as fh:
        meta = {row["file"]: row for row in csv.DictReader(fh)}
    p = report["predictions"]
    err = np.abs(np.asarray(p["pred"], dtype=np.float64) - np.asarray(p["true"], dtype=np.float64))
    keys: dict[str, list[str]] = {"decade": [], "gender": [], "ethnicity": []}
    for name, true in zip(p["names"], p["true"]):
        row = meta.get(Path(name).name, {})
        keys["decade"].append(f"{int(true) // 10 * 10}s")
        keys["gender"].append(GENDERS.get(row.get("gender", ""), "unknown"))
        keys["ethnicity"].append(RACES.get(row.get("race", ""), "unknown"))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind, values in keys.items():
        arr = np.asarray(values)
        out[kind] = {
            g: {
                "mae": round(float(err[arr == g].mean()), 2),
                "ca5": round(float((err[arr == g] < 5).mean() * 100), 1),
                "count": int((arr == g).sum()),
            }
            for g in sorted(set(values), key=_order)
        }
    return out


def _order(group: str) -> tuple[int, str]:
    return (int(group[:-1]), "") if group.endswith("s") and group[:-1].isdigit() else (10_000, group)


def markdown(groups: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = []
    for kind, rows in groups.items():
        lines += [
            f"| {kind} | " + " | ".join(rows) + " |",
            "| --- |" + " --- |" * len(rows),
            "| images | " + " | ".join(str(int(r["count"])) for r in rows.values()) + " |",
            "| MAE | " + " | ".join(f"{r['mae']:.2f}" for r in rows.values()) + " |",
            "| CA(5) | " + " | ".join(f"{r['ca5']:.1f}" for r in rows.values()) + " |",
            "",
        ]
    return "\n".join(lines)


def main(report: Path, labels: Path) -> None:
    print(markdown(group_metrics(json.loads(report.read_text()), labels)))
