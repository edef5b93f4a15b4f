"""The robustness benchmark on a made-up cache: every degradation measured for every graph, and the damage real."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.robustness_bench import DEGRADATIONS, degrade, main
from model.onnx_estimator import OnnxEstimator
from testkit import ROOT, made_up_cache

FAST = ROOT / "models" / "daa-dlib64-distilled-utkface.int8.onnx"


def test_every_degradation_is_measured_and_changes_the_crops(tmp_path):
    cache = tmp_path / "cache"
    names = made_up_cache(cache, OnnxEstimator(FAST).crop_spec.size, count=12)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": names, "test": []}))
    out = tmp_path / "r.json"
    main(["--cache", str(cache), "--split", str(split), "--graphs", str(FAST), "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["images"] == 12 and set(result["mae"]) == set(DEGRADATIONS)
    assert all(0 < r[str(FAST)] < 100 for r in result["mae"].values())
    crops = np.load(cache / "crops.npy")
    for label, how in DEGRADATIONS.items():
        damaged = degrade(crops, how)
        assert damaged.shape == crops.shape and damaged.dtype == np.uint8
        assert (label == "clean") == np.array_equal(damaged, crops)
