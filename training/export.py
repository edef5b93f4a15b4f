"""Export a trained checkpoint for serving: weights and config as trained, metadata completed with the test
report's metrics, a version and the data licence, and no optimiser state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.checkpoint import load_checkpoint, save_checkpoint
from model.ensemble import DAAEnsemble, from_networks, networks
from model.factory import DAAModel
from model.ranges import fit_range_model, range_report
from training.metrics import range_coverage


def range_factor(report: dict, coverage: float = 0.95) -> float:
    """The multiple of the spread that covers ``coverage`` of the absolute errors in an evaluation report.

    The raw spread of y - delta_y over references is informative (it ranks errors) but not a standard error:
    on UTKFace validation +-1.96 spread covered only about a third of the true ages. The service's age range uses
    this factor, fitted on the validation split, so that it means what it says."""
    p = report["predictions"]
    ratio = np.abs(np.asarray(p["pred"]) - np.asarray(p["true"])) / np.maximum(np.asarray(p["spread"]), 1e-6)
    return float(np.quantile(ratio, coverage))


def network_weights(models: list[DAAModel], weights: list[float] | None) -> list[float] | None:
    """Per-network weights for checkpoint-level ``weights``: a checkpoint's weight is shared among its networks
    as that checkpoint pooled them (its own ensemble weights, or equally)."""
    if weights is None:
        return None
    if len(weights) != len(models):
        raise ValueError(f"{len(weights)} weights for {len(models)} checkpoints")
    out: list[float] = []
    for w, model in zip(weights, models):
        inner = model.config.member_weights() if isinstance(model, DAAEnsemble) else [1.0]
        out.extend(w * v for v in inner)
    return out


def load_members(
    checkpoints: list[Path], name: str | None = None, weights: list[float] | None = None
) -> tuple[DAAModel, dict]:
    """One checkpoint as it is, or several as one :class:`model.ensemble.DAAEnsemble` whose metadata lists each
    member's. Members must come from the same split file, or the ensemble's test figures would be meaningless.
    ``weights``: one per checkpoint (``python -m training blend`` chooses them on validation)."""
    loaded = [load_checkpoint(c) for c in checkpoints]
    metas = [{k: v for k, v in meta.items() if k != "train_state"} for _, meta in loaded]
    if len(loaded) == 1:
        if weights is not None and len(weights) != 1:
            raise ValueError(f"{len(weights)} weights for 1 checkpoint")
        if name:
            loaded[0][0].config.name = name
        return loaded[0][0], metas[0]
    splits = {json.dumps((m.get("split") or {}).get("file")) for m in metas}
    if len(splits) > 1:
        raise ValueError(f"ensemble members were trained on different split files: {sorted(splits)}")
    per_network = network_weights([m for m, _ in loaded], weights)
    model = from_networks([net for member, _ in loaded for net in networks(member)], name or "", per_network)
    meta = {
        "split": metas[0].get("split"),
        "data": metas[0].get("data"),
        "members": [{"checkpoint": str(c), **m} for c, m in zip(checkpoints, metas)],
    }
    return model, meta


def export(
    checkpoint: Path | list[Path],
    report: Path | None,
    out: Path,
    version: str,
    licence: str,
    val_report: Path | None = None,
    name: str | None = None,
    weights: list[float] | None = None,
) -> Path:
    model, meta = load_members(checkpoint if isinstance(checkpoint, list) else [checkpoint], name, weights)
    rep = json.loads(report.read_text()) if report is not None else None
    if rep is not None:
        first = next(iter(rep["results"]))
        meta["metrics"] = {
            "subset": rep.get("subset"),
            "images": rep["images"],
            "flip_tta": rep["flip_tta"],
            **{
                k: v
                for k, v in rep["results"][first].items()
                if k in ("mae", "ca3", "ca5", "ca7", "per_decade", "uncertainty")
            },
            "mae_by_reference_interval": {k: v["mae"] for k, v in rep["results"].items()},
        }
    if val_report is not None:
        val = json.loads(val_report.read_text())
        factor = range_factor(val)
        meta["range_factor_95"] = round(factor, 4)
        vp = val["predictions"]
        ranges = fit_range_model(vp["pred"], vp["true"], vp["spread"])
        meta["range_model"] = ranges.to_dict()
        if rep is not None:
            p = rep["predictions"]
            meta["metrics"]["age_range"] = range_report(ranges, p["pred"], p["true"], p["spread"])
            meta["metrics"]["uncertainty"]["range_coverage_calibrated"] = round(
                range_coverage(p["pred"], p["true"], p["spread"], factor), 4
            )
    meta.update(version=version, licence=licence)
    return save_checkpoint(out, model, meta)
