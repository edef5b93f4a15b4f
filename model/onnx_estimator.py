"""The model side of the pipeline without torch: a checkpoint exported as one ONNX graph
(``python -m training export-onnx``) run by ONNX Runtime, with numpy around it.

The graph gives every member's estimate y - delta_y for every reference; this computes what the torch network
computes from them for any reference interval (paper Table 7) and with flip averaging: the age is the weighted
mean of the members' estimates at the interval's references (Eq. 9), the spread their weighted standard
deviation, the deltas the members' weighted mean. Only numpy, onnxruntime and the standard library are imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model.config import CropSpec, ModelConfig
from model.options import RuntimeOptions
from model.ort_sessions import providers_for, session_options
from model.results import CalibratedRanges, FaceResult


class OnnxConfig:
    """What the service reads of a model's configuration, from the graph's metadata."""

    def __init__(self, config: dict[str, Any], crop: CropSpec, num_references: int) -> None:
        self._config, self.crop, self.num_references = config, crop, num_references
        self.name = str(config.get("name", ""))

    def to_dict(self) -> dict[str, Any]:
        return dict(self._config)


class OnnxEstimator(CalibratedRanges):
    """Crops in, ages, spreads, age ranges and delta ages out, as :class:`model.estimator.Estimator` gives them."""

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str = RuntimeOptions.device,
        flip_tta: bool = RuntimeOptions.flip_tta,
        threads: int | None = RuntimeOptions.threads,
    ) -> None:
        import onnxruntime as ort

        providers = providers_for(device)
        self.session = ort.InferenceSession(str(path), session_options(threads or 1), providers=providers)
        props = self.session.get_modelmeta().custom_metadata_map
        if "daa.config" not in props:
            raise ValueError(f"{path} is not a DAA graph (python -m training export-onnx writes one)")
        self.device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        self.flip_tta = flip_tta
        self.crop_spec = CropSpec.from_dict(json.loads(props["daa.crop"]))
        self.weights = np.asarray(json.loads(props["daa.weights"]), dtype=np.float64)
        num_references = int(props["daa.num_references"])
        raw = json.loads(props["daa.config"])
        self.config: OnnxConfig | ModelConfig = OnnxConfig(raw, self.crop_spec, num_references)
        self.parameters = int(props.get("daa.parameters", 0))
        self.metadata: dict[str, Any] = json.loads(props.get("daa.metadata", "{}"))
        self.metadata.setdefault("version", props.get("daa.version", "unknown"))
        self._name = props.get("daa.name", raw.get("name", ""))
        self.num_references = num_references
        self._read_ranges()

    @property
    def name(self) -> str:
        return self._name

    def _pooled(self, estimates: np.ndarray, interval: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Age, spread and deltas at ``interval`` from N x M x R estimates (float64, as the sums in torch are)."""
        refs = np.arange(0, self.num_references, interval)
        est = estimates[:, :, refs].astype(np.float64)
        w = (self.weights / len(refs))[None, :, None]
        age = (est * w).sum((1, 2))
        spread = np.sqrt(np.clip((((est - age[:, None, None]) ** 2) * w).sum((1, 2)), 0, None))
        deltas = (self.weights[None, :, None] * (refs[None, None, :] - est)).sum(1)
        return age, spread, deltas

    def estimate(self, crops: np.ndarray, interval: int) -> list[FaceResult]:
        """crops: N x S x S x 3 uint8 from :func:`model.faces.crop_face`."""
        x = np.ascontiguousarray(crops, dtype=np.uint8)
        n = len(x)
        if self.flip_tta:
            x = np.concatenate([x, x[:, :, ::-1]])
        (estimates,) = self.session.run(["estimates"], {"crops": x})
        age, spread, deltas = self._pooled(estimates, interval)
        if self.flip_tta:  # as model.inference.predict_with_flip: the two crops' estimates pooled
            a, b = age[:n], age[n:]
            spread = np.sqrt((spread[:n] ** 2 + spread[n:] ** 2) / 2 + ((a - b) / 2) ** 2)
            age, deltas = (a + b) / 2, (deltas[:n] + deltas[n:]) / 2
        return [FaceResult(float(a), float(s), [float(v) for v in d]) for a, s, d in zip(age, spread, deltas)]
