"""The int8 graph: the shipped CPU default against the float graph it came from, and ``training quantize``
end to end on a small cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.onnx_estimator import OnnxEstimator
from model.pipeline import AgePipeline
from testkit import fixture_bytes, made_up_cache

ROOT = Path(__file__).resolve().parent.parent
FLOAT = ROOT / "models" / "daa-dlibface150-distilled-utkface.onnx"
INT8 = ROOT / "models" / "daa-dlibface150-distilled-utkface.int8.onnx"
FAST = ROOT / "models" / "daa-dlib64-distilled-utkface.int8.onnx"
ACCURATE = ROOT / "models" / "daa-faceres160-distilled-utkface.int8.onnx"
FACERES = ROOT / "models" / "daa-faceres160-distilled-utkface.pt"
# Every shipped int8 graph, the float network it was quantised from, and how much validation MAE int8 may cost it
# (the MobileNet's depthwise features lose more to int8 than the ResNets: +0.08).
SHIPPED = [
    (INT8, FLOAT, 0.05),
    (FAST, ROOT / "models" / "daa-dlib64-distilled-utkface.pt", 0.05),
    (ACCURATE, FACERES, 0.1),
]


def test_the_default_is_the_faceres_students_int8_graph():
    from app.settings import Settings

    assert Settings().checkpoint.resolve() == ACCURATE.resolve()


@pytest.mark.parametrize("int8,source,cost", SHIPPED, ids=[p.name for p, _, _ in SHIPPED])
def test_a_shipped_int8_graph_keeps_its_float_networks_error_and_has_its_own_range(int8, source, cost):
    quantised, floating = AgePipeline.load(int8), AgePipeline.load(source)
    q, f = quantised.estimator, floating.estimator
    figures = q.metadata["quantisation"]
    assert figures["val_images"] > 2000 and figures["val_mae_int8"] - figures["val_mae_float"] < cost
    assert q.name == f.name and q.version == f.version + "+int8"
    assert q.range_model is not None and q.range_model != f.range_model  # refitted on the int8 graph's errors
    for name in ("astronaut.jpg", "group.jpg"):
        a, b = quantised.run(fixture_bytes(name)), floating.run(fixture_bytes(name))
        assert len(a.faces) == len(b.faces) >= 1
        for x, y in zip(a.faces, b.faces):
            assert abs(x.age - y.age) < 3.0 and x.detection.box == y.detection.box


def test_training_quantize_writes_a_servable_graph_with_a_refitted_range(tmp_path):
    from training.__main__ import main

    cache = tmp_path / "cache"
    names = made_up_cache(cache, OnnxEstimator(FLOAT).crop_spec.size)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:24], "val": names[24:], "test": []}))
    out = tmp_path / "q.onnx"
    main(
        [
            "quantize",
            "--graph",
            str(FLOAT),
            "--cache",
            str(cache),
            "--split",
            str(split),
            "--calibrate",
            "16",
            "--out",
            str(out),
        ]
    )
    q = OnnxEstimator(out)
    figures = q.metadata["quantisation"]
    assert figures["calibration_crops"] == 16 and figures["val_images"] == 16
    assert figures["stem"] == figures["depthwise"] == "float" and figures["decoder_conv"] == "int8"
    assert figures["calibration"] == "percentile"
    assert out.stat().st_size < FLOAT.stat().st_size / 2  # int8 weights
    (result,) = q.estimate(np.asarray(np.load(cache / "crops.npy")[:1]), 1)
    assert np.isfinite(result.age) and q.age_range(result.age, result.spread)[1] > result.age


def test_the_stem_stays_float_unless_asked():
    import onnx

    from training.quantize import Selection

    graph = onnx.load(str(FLOAT))
    every = Selection(stem=True).convolutions(graph)
    assert Selection().convolutions(graph) == every[1:] and len(every) == 28  # 27 encoder convolutions, the decoder's
    # the stem is the convolution that reads the graph's input (through the normalisation), nothing quantised before it
    stem = next(n for n in graph.graph.node if n.name == every[0])
    producers = {o: n for n in graph.graph.node for o in n.output}
    seen, frontier = set(), list(stem.input)
    while frontier:
        name = frontier.pop()
        node = producers.get(name)
        if node is not None and name not in seen:
            seen.add(name)
            assert node.op_type != "Conv"
            frontier.extend(node.input)


def test_depthwise_convolutions_stay_float_and_the_decoders_goes_int8_by_default(tmp_path):
    import onnx

    from training.export_onnx import export_onnx
    from training.quantize import Selection

    graph = onnx.load(str(export_onnx(FACERES, tmp_path / "faceres.onnx")))
    convs = {n.name: n for n in graph.graph.node if n.op_type == "Conv"}
    groups = {name: next((a.i for a in n.attribute if a.name == "group"), 1) for name, n in convs.items()}
    chosen = Selection().convolutions(graph)
    assert chosen and all(groups[c] == 1 for c in chosen)
    depthwise = {c for c, g in groups.items() if g > 1}
    assert len(depthwise) == 13 and depthwise <= set(Selection(depthwise=True).convolutions(graph))
    decoder = [c for c in convs if "/encoder/" not in c]
    assert len(decoder) == 1 and decoder[0] in chosen and decoder[0] not in Selection(decoder=False).convolutions(graph)
