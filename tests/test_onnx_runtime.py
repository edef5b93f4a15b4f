"""ONNX Runtime paths compute what the torch modules they replace compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.config import ModelConfig
from model.detection import DetectorSettings
from model.detectors.mtcnn import MTCNNDetector
from model.estimator import Estimator
from model.faces import crop_face
from model.factory import build_model
from model.onnx_runtime import OrtEncoder, resolve_runtime
from testkit import DEFAULT_NETWORK, FIXTURES


@pytest.mark.parametrize("encoder,size", [("dlib_resnet", 64), ("c3ae", None), ("resnet18", None)])
def test_encoder_body_matches_torch(encoder, size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=encoder, encoder_input_size=size)).eval()
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        ref = model.encoder(x)
        ort = OrtEncoder(model.encoder)(x)
    assert ort.shape == ref.shape
    torch.testing.assert_close(ort, ref, atol=1e-4 * max(1.0, float(ref.abs().max())), rtol=1e-4)


def test_detector_finds_the_same_faces():
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    torch_faces = MTCNNDetector(DetectorSettings(min_face_size=20), runtime="torch").detect(group)
    ort_faces = MTCNNDetector(DetectorSettings(min_face_size=20), runtime="onnxruntime").detect(group)
    assert len(ort_faces) == len(torch_faces) >= 3
    for a, b in zip(ort_faces, torch_faces):
        np.testing.assert_allclose(a.box, b.box, atol=0.05)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)


def test_served_ages_match_torch():
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    faces = MTCNNDetector(DetectorSettings(min_face_size=20)).detect(group)
    a_est = Estimator(str(DEFAULT_NETWORK), "cpu", True, runtime="torch")
    b_est = Estimator(str(DEFAULT_NETWORK), "cpu", True, runtime="onnxruntime")
    # The crops the served model reads (its own crop spec: 150 px, scale 1.5 for the default).
    crops = np.stack([crop_face(group, f, a_est.crop_spec) for f in faces])
    a, b = a_est.estimate(crops, 1), b_est.estimate(crops, 1)
    for x, y in zip(a, b):
        assert abs(x.age - y.age) < 0.01 and abs(x.spread - y.spread) < 0.01
        np.testing.assert_allclose(x.deltas, y.deltas, atol=0.02)


def test_runtime_choice():
    assert resolve_runtime("auto", "cpu") == "onnxruntime"
    assert resolve_runtime("torch", "cpu") == "torch"
    assert resolve_runtime("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_runtime("onnxruntime", "cuda")
    with pytest.raises(ValueError, match="runtime must be"):
        resolve_runtime("tensorrt", "cpu")
