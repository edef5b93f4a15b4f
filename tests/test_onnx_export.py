"""The whole network as one ONNX graph: equal to the torch network on real crops for every shipped checkpoint, at
every reference interval and with flip averaging; and a service path that imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from model.detection import DetectorSettings, create_detector
from model.estimator import Estimator
from model.faces import crop_face
from model.onnx_estimator import OnnxEstimator
from testkit import FIXTURES, ROOT
from training.export_onnx import export_onnx

SHIPPED = sorted((ROOT / "models").glob("*.pt"))
DEFAULT_GRAPH = ROOT / "models" / "daa-faceres160-distilled-utkface.onnx"


def real_crops(spec) -> np.ndarray:
    detector = create_detector(DetectorSettings(name="yunet"))
    crops = []
    for name in ("group.jpg", "astronaut.jpg"):
        image = Image.open(FIXTURES / name).convert("RGB")
        crops += [crop_face(image, f, spec) for f in detector.detect(image)]
    return np.stack(crops)


def assert_same(a, b, age_tol: float = 0.01) -> None:
    for x, y in zip(a, b, strict=True):
        assert abs(x.age - y.age) < age_tol and abs(x.spread - y.spread) < age_tol
        np.testing.assert_allclose(x.deltas, y.deltas, atol=2 * age_tol)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_the_graph_equals_the_torch_network(checkpoint, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_onnx(checkpoint, tmp_path / "m.onnx")
    torch_est = Estimator(checkpoint, "cpu", runtime="torch")
    crops = real_crops(torch_est.crop_spec)
    for flip in (False, True):
        onnx_est = OnnxEstimator(graph, flip_tta=flip)
        torch_est.flip_tta = flip
        for interval in (1, 10):
            assert_same(onnx_est.estimate(crops, interval), torch_est.estimate(crops, interval))
    assert (onnx_est.name, onnx_est.version, onnx_est.crop_spec) == (torch_est.name, torch_est.version, torch_est.crop_spec)
    assert onnx_est.range_model == torch_est.range_model and onnx_est.references(20) == torch_est.references(20)


def test_the_shipped_graph_is_the_default_checkpoint_exported():
    torch_est = Estimator(DEFAULT_GRAPH.with_suffix(".pt"), "cpu", runtime="torch")
    crops = real_crops(torch_est.crop_spec)
    assert_same(OnnxEstimator(DEFAULT_GRAPH).estimate(crops, 1), torch_est.estimate(crops, 1), age_tol=1e-3)


def test_the_decoders_convolution_of_ones_is_a_constant_and_enlarging_is_plain_bilinear(tmp_path):
    import onnx

    # FaceRes at 160 px reads the 150 px crop: its one resize enlarges
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = onnx.load(str(export_onnx(DEFAULT_GRAPH.with_suffix(".pt"), tmp_path / "m.onnx")))
    decoder = [n for n in graph.graph.node if n.op_type == "Conv" and "/encoder/" not in n.name]
    assert len(decoder) == 1  # W * 1 is folded in: one convolution per face, not a second one of ones per call
    (resize,) = [n for n in graph.graph.node if n.op_type == "Resize"]
    assert next(a.i for a in resize.attribute if a.name == "antialias") == 0


TORCH_FREE = r"""
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
from model.detection import DetectorSettings
from model.pipeline import AgePipeline
pipeline = AgePipeline.load(sys.argv[1], detector_settings=DetectorSettings(name="yunet"))
result = pipeline.run(open(sys.argv[2], "rb").read())
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
print(json.dumps([f.age for f in result.faces]))
"""


def test_a_photo_is_served_without_torch():
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(DEFAULT_GRAPH), str(FIXTURES / "group.jpg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ages = json.loads(proc.stdout)
    from model.pipeline import AgePipeline

    torch_pipeline = AgePipeline.load(DEFAULT_GRAPH.with_suffix(".pt"), runtime="torch")
    expected = [f.age for f in torch_pipeline.run((FIXTURES / "group.jpg").read_bytes()).faces]
    assert len(ages) == len(expected) == 3
    assert np.allclose(ages, expected, atol=0.01)


def test_a_torch_checkpoint_without_torch_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from model.pipeline import load_estimator\n"
        f"load_estimator({str(DEFAULT_GRAPH.with_suffix('.pt'))!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "daa-age[torch]" in proc.stderr


def test_mtcnn_without_torch_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from model.detection import DetectorSettings, create_detector\n"
        "create_detector(DetectorSettings(name='mtcnn'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "daa-age[torch]" in proc.stderr


def test_the_default_model_is_the_int8_form_of_the_graph():
    from app.settings import default_checkpoint

    assert default_checkpoint() == DEFAULT_GRAPH.with_suffix(".int8.onnx")


def test_a_corrupt_graph_is_a_checkpoint_error(tmp_path):
    from model.errors import CheckpointError
    from model.pipeline import load_estimator

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="not a readable DAA graph"):
        load_estimator(bad)


@pytest.mark.slow
def test_the_service_serves_the_graph_without_torch():
    import httpx

    from testkit import fixture_bytes, running_service

    wrapper = "import sys, runpy; sys.modules['torch'] = None; runpy.run_module('app', run_name='__main__')"
    env = {"DAA_CHECKPOINT": str(DEFAULT_GRAPH), "DAA_DETECTOR": "yunet"}
    with running_service(env, python_args=["-c", wrapper]) as (base, _):
        r = httpx.post(base + "/estimate", files={"file": ("g.jpg", fixture_bytes("group.jpg"))}, timeout=60)
        assert r.status_code == 200 and len(r.json()["faces"]) == 3
        info = httpx.get(base + "/model").json()
        assert info["runtime"] == "onnxruntime" and info["name"] == "daa-faceres160-distilled-utkface"


def parse_pbtxt(text: str):
    """A small protobuf text-format reader (messages, lists, scalars): enough to check a config.pbtxt."""
    import re

    tokens = re.findall(r'"[^"]*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        return tok.strip('"') if tok.startswith('"') else (int(tok) if tok.lstrip("-").isdigit() else tok)

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            out[key] = value()
        pos += 1
        return out

    return message(None)


def test_the_triton_repository_describes_the_graph(tmp_path):
    import onnxruntime as ort

    from training.triton import write_repository

    folder = write_repository(DEFAULT_GRAPH, tmp_path / "repo")
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert (folder / "1" / "model.onnx").read_bytes() == DEFAULT_GRAPH.read_bytes()
    assert config["name"] == folder.name == "daa-faceres160-distilled-utkface"
    assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 64
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]
    session = ort.InferenceSession(str(DEFAULT_GRAPH), providers=["CPUExecutionProvider"])
    (crops,) = config["input"]
    assert (crops["name"], crops["data_type"], crops["dims"]) == ("crops", "TYPE_UINT8", [150, 150, 3])
    declared = {o["name"]: o for o in config["output"]}
    assert list(declared) == [o.name for o in session.get_outputs()]
    assert declared["estimates"]["dims"] == [1, 100] and declared["deltas"]["dims"] == [100]
    assert declared["age"]["dims"] == [1] and declared["age"]["reshape"] == {"shape": []}


def test_serving_the_graph_does_not_import_torch_even_where_it_is_installed():
    code = (
        "import sys\n"
        "from app.service import Service\n"
        "from app.settings import Settings\n"
        "Service.load(Settings())\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-1000:]
