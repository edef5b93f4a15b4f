"""Ensembles: pooled estimates, one checkpoint, export from several runs, served like one network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.ensemble import DAAEnsemble, EnsembleConfig, from_networks, networks
from model.estimator import Estimator
from model.factory import build_model
from model.inference import predict_with_flip
from model.network import DAANet
from training.export import export


def two_networks() -> list[DAANet]:
    torch.manual_seed(0)
    return [build_model(ModelConfig(encoder="c3ae", name=f"m{i}")).eval() for i in range(2)]


def pooled_estimates(outs) -> torch.Tensor:
    return torch.cat([o.references.float() - o.deltas for o in outs], 1)


def test_ensemble_pools_members_estimates():
    nets = two_networks()
    ens = from_networks(nets)
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        outs, out = [n(x) for n in nets], ens(x)
    assert ens.config.name == "m0+m1" and len(networks(ens)) == 2
    torch.testing.assert_close(out.age, (outs[0].age + outs[1].age) / 2)
    torch.testing.assert_close(out.deltas, (outs[0].deltas + outs[1].deltas) / 2)
    torch.testing.assert_close(out.spread, pooled_estimates(outs).std(1, unbiased=False))
    assert torch.all(out.spread >= torch.minimum(outs[0].spread, outs[1].spread))


def test_flip_on_an_ensemble_keeps_the_members_disagreement():
    nets = two_networks()
    ens = from_networks(nets)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        both = predict_with_flip(ens, x, flip=True)
        outs = [n(v) for n in nets for v in (x, torch.flip(x, dims=[3]))]
    estimates = pooled_estimates(outs)
    torch.testing.assert_close(both.age, estimates.mean(1))
    torch.testing.assert_close(both.spread, estimates.std(1, unbiased=False))


def test_ensemble_checkpoint_round_trip(tmp_path):
    ens = from_networks(two_networks())
    path = save_checkpoint(tmp_path / "ens.pt", ens, {"version": "t"})
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, DAAEnsemble) and meta == {"version": "t"}
    assert loaded.config.to_dict() == ens.config.to_dict()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).age, ens(x).age)


def test_members_must_share_crop_and_references():
    a, b = ModelConfig(encoder="c3ae"), ModelConfig(encoder="c3ae", crop={"size": 96, "scale": 1.05, "align": True})
    with pytest.raises(ValueError, match="share the crop"):
        EnsembleConfig([a, b])
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleConfig([])
    with pytest.raises(ValueError, match="unknown ensemble config keys"):
        build_model({"members": [a.to_dict()], "weights": 1})


def test_export_builds_an_ensemble_from_runs_on_one_split(tmp_path):
    paths = []
    for i, net in enumerate(two_networks()):
        paths.append(save_checkpoint(tmp_path / f"run{i}.pt", net, {"split": {"file": "s.json"}, "train_state": {}}))
    out = export(paths, None, tmp_path / "ens.pt", "2.0.0", "research only", name="pair")
    model, meta = load_checkpoint(out)
    assert isinstance(model, DAAEnsemble) and model.config.name == "pair"
    assert meta["version"] == "2.0.0" and [m["checkpoint"] for m in meta["members"]] == [str(p) for p in paths]
    assert all("train_state" not in m for m in meta["members"])
    other = save_checkpoint(tmp_path / "other.pt", two_networks()[0], {"split": {"file": "t.json"}})
    with pytest.raises(ValueError, match="different split files"):
        export([paths[0], other], None, tmp_path / "bad.pt", "2.0.0", "")


def test_estimator_serves_an_ensemble_with_onnx_runtime(tmp_path):
    path = save_checkpoint(tmp_path / "ens.pt", from_networks(two_networks()), {})
    crops = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    ref = Estimator(str(path), device="cpu", runtime="torch").estimate(crops, 1)
    est = Estimator(str(path), device="cpu", runtime="onnxruntime")
    assert est.name == "m0+m1" and all(type(n.encoder).__name__ == "OrtEncoder" for n in networks(est.model))
    got = est.estimate(crops, 1)
    for r, g in zip(ref, got):
        assert abs(r.age - g.age) < 1e-3 and abs(r.spread - g.spread) < 1e-3


def test_range_model_covers_95_percent_and_narrows_where_errors_are_small():
    from model.ranges import RangeModel, fit_range_model, range_report

    rng = np.random.default_rng(0)
    true = rng.uniform(0, 90, 4000)
    sigma = 1 + 0.1 * true  # errors grow with age, as on UTKFace
    pred = true + rng.normal(0, sigma)
    spread = np.abs(rng.normal(1, 0.2, 4000))
    model = fit_range_model(pred[:2000], true[:2000], spread[:2000])
    report = range_report(model, pred[2000:], true[2000:], spread[2000:])
    assert 0.93 < report["coverage"] < 0.97
    decades = report["per_decade"]
    assert decades["0-9"]["mean_width"] < decades["80-89"]["mean_width"] / 3
    assert RangeModel.from_dict(model.to_dict()).half_width(30, 1) == pytest.approx(model.half_width(30, 1), rel=1e-3)
