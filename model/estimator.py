"""The model side of the pipeline: crops in, ages, spreads, age ranges and delta ages out (torch; the torch-free
one for exported graphs is ``model/onnx_estimator.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.config import CropSpec
from model.ensemble import networks
from model.factory import count_parameters
from model.inference import crops_to_input, predict_with_flip, resolve_device, zero_denormal_weights
from model.onnx_runtime import OrtEncoder, resolve_runtime
from model.options import RuntimeOptions
from model.results import CalibratedRanges, FaceResult

__all__ = ["Estimator", "FaceResult"]


class Estimator(CalibratedRanges):
    def __init__(
        self,
        checkpoint: str | Path,
        device: str = RuntimeOptions.device,
        flip_tta: bool = RuntimeOptions.flip_tta,
        runtime: str = RuntimeOptions.runtime,
        payload: dict[str, Any] | None = None,
        threads: int | None = RuntimeOptions.threads,
    ) -> None:
        """``payload``: the checkpoint as :func:`model.checkpoint.read_checkpoint` returned it, if already read.
        ``threads``: ONNX Runtime threads (default: torch's)."""
        self.device = resolve_device(device)
        model, self.metadata = load_checkpoint(checkpoint, map_location=self.device, payload=payload)
        self.model = zero_denormal_weights(model)
        self.config = self.model.config
        self.crop_spec: CropSpec = self.config.crop
        self.flip_tta = flip_tta
        self.parameters = count_parameters(self.model)
        self.runtime = resolve_runtime(runtime, self.device)
        if self.runtime == "onnxruntime":
            # The encoder is ~90% of the model's time; the DAA head stays in torch (its cached W*1 and folded BN).
            for net in networks(self.model):
                net.encoder = OrtEncoder(net.encoder, threads)
        self.num_references = self.config.num_references
        self._read_ranges()

    @property
    def name(self) -> str:
        return self.config.name

    @torch.inference_mode()
    def estimate(self, crops: np.ndarray, interval: int) -> list[FaceResult]:
        """crops: N x S x S x 3 uint8 from :func:`model.faces.crop_face`."""
        x = crops_to_input(torch.from_numpy(np.ascontiguousarray(crops)), self.device)
        out = predict_with_flip(self.model, x, interval, self.flip_tta)
        return [
            FaceResult(float(a), float(s), d.tolist())
            for a, s, d in zip(out.age.cpu(), out.spread.cpu(), out.deltas.float().cpu())
        ]
