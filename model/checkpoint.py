"""The one checkpoint format: a single file holding the state_dict, the model config and metadata.

Loaded with ``torch.load(weights_only=True)``: only tensors and plain Python containers, never pickled code.
Every failure raises :class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from model.errors import CheckpointError
from model.factory import DAAModel, build_model

FORMAT = "daa-age-checkpoint"
FORMAT_VERSION = 1


__all__ = ["CheckpointError", "load_checkpoint", "read_checkpoint", "save_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike, model: DAAModel, metadata: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Write atomically (temp file + rename), so a crash mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw payload, validated for format and version (no model is built)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "file is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(path, f"not a readable checkpoint (truncated or corrupt?): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(path, f"not a {FORMAT} file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(path, f"format version {payload.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(path, f"missing {key!r}")
    return payload


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", payload: dict[str, Any] | None = None
) -> tuple[DAAModel, dict[str, Any]]:
    """Rebuild the network (a ``DAANet`` or a ``DAAEnsemble``) from its stored config and load the weights strictly.
    ``payload``: what :func:`read_checkpoint` already returned for ``path`` (the file is then not read again).
    Returns (model in eval mode, metadata)."""
    payload = payload if payload is not None else read_checkpoint(path)
    try:
        model = build_model(payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"invalid model config: {exc}") from exc
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not match the model config: {exc}") from exc
    return model.to(map_location).eval(), dict(payload.get("metadata") or {})
