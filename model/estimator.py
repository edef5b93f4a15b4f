"""The model side of the service: crops in, ages, spreads and delta ages out. Runs on one worker thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.ensemble import networks
from model.faces import CropSpec
from model.network import count_parameters, crops_to_input, predict_with_flip
from model.onnx_runtime import OrtEncoder, resolve_runtime


@dataclass
class FaceResult:
    age: float
    spread: float
    deltas: list[float]


class Estimator:
    def __init__(self, checkpoint: str, device: str = "auto", flip_tta: bool = True, runtime: str = "torch") -> None:
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        torch.set_flush_denormal(True)
        self.model, self.metadata = load_checkpoint(checkpoint, map_location=self.device)
        self.config = self.model.config
        self.crop_spec = CropSpec.from_dict(self.config.crop)
        self.flip_tta = flip_tta
        self.parameters = count_parameters(self.model)
        self.runtime = resolve_runtime(runtime, self.device)
        if self.runtime == "onnxruntime":
            # The encoder is ~90% of the model's time; the DAA head stays in torch (its cached W*1 and folded BN).
            for net in networks(self.model):
                net.encoder = OrtEncoder(net.encoder)
        # age_range = age +- range_scale x spread; the factor is fitted on validation data at export (95% coverage).
        self.range_scale = float(self.metadata.get("uncertainty_scale_95", 1.96))
        self.calls = 0  # model calls made; the batching test reads it

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", self.metadata.get("code_version", "unknown")))

    def references(self, interval: int) -> list[int]:
        return list(range(0, self.config.num_references, interval))

    @torch.inference_mode()
    def estimate(self, crops: np.ndarray, interval: int) -> list[FaceResult]:
        """crops: N x S x S x 3 uint8 from :func:`model.faces.crop_face`."""
        self.calls += 1
        x = crops_to_input(torch.from_numpy(np.ascontiguousarray(crops)), self.device)
        out = predict_with_flip(self.model, x, interval, self.flip_tta)
        return [FaceResult(float(a), float(s), d.tolist())
                for a, s, d in zip(out.age.cpu(), out.spread.cpu(), out.deltas.float().cpu())]
