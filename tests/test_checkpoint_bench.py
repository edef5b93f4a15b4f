"""The checkpoint benchmark runs the served Estimator on each checkpoint's own crop size and reports ratios."""

from __future__ import annotations

import json

import torch

from benchmarks.checkpoint_bench import main
from model.checkpoint import save_checkpoint
from model.config import ModelConfig
from model.factory import build_model


def test_checkpoint_bench_measures_each_checkpoint_on_its_crop(tmp_path, capsys):
    torch.manual_seed(0)
    a = save_checkpoint(tmp_path / "a.pt", build_model(ModelConfig(encoder="c3ae", name="a")).eval(), {})
    wide = ModelConfig(encoder="c3ae", crop={"size": 96, "scale": 1.5}, name="b")
    b = save_checkpoint(tmp_path / "b.pt", build_model(wide).eval(), {})
    out = tmp_path / "bench.json"
    main(["--checkpoints", str(a), str(b), "--batches", "1,4", "--runtime", "torch", "--seconds", "0", "--rounds", "3",
          "--out", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [(r["checkpoint"], r["batch"]) for r in rows] == [(str(a), 1), (str(b), 1), (str(a), 4), (str(b), 4)]
    assert all(r["ms_per_face"] > 0 and r["rounds"] == 3 for r in rows)
    assert rows[0]["ratio_to_first"] == 1.0
    assert "ms/face" in capsys.readouterr().out
