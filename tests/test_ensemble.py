"""Ensembles: pooled estimates, one checkpoint, export from several runs, served like one network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import CropSpec, ModelConfig
from model.ensemble import DAAEnsemble, EnsembleConfig, crop_window, from_networks, networks
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


def test_members_must_share_references_and_alignment():
    a = ModelConfig(encoder="c3ae")
    with pytest.raises(ValueError, match="number of references"):
        EnsembleConfig([a, ModelConfig(encoder="c3ae", num_references=50)])
    with pytest.raises(ValueError, match="eye alignment"):
        EnsembleConfig([a, ModelConfig(encoder="c3ae", crop={"size": 128, "scale": 1.5, "align": False})])
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleConfig([])
    with pytest.raises(ValueError, match="one positive number per member"):
        EnsembleConfig([a, a], weights=[1.0, 0.0])
    with pytest.raises(ValueError, match="unknown ensemble config keys"):
        build_model({"members": [a.to_dict()], "scale": 1})


def test_weighted_members_pool_with_their_weights():
    nets = two_networks()
    ens = from_networks(nets, weights=[3, 1])
    assert ens.config.weights == [0.75, 0.25]
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        outs, out = [n(x) for n in nets], ens(x)
    torch.testing.assert_close(out.age, 0.75 * outs[0].age + 0.25 * outs[1].age)
    torch.testing.assert_close(out.deltas, 0.75 * outs[0].deltas + 0.25 * outs[1].deltas)
    estimates = pooled_estimates(outs)
    w = torch.cat([torch.full((100,), 0.75 / 100), torch.full((100,), 0.25 / 100)])
    torch.testing.assert_close(out.spread, (((estimates - out.age[:, None]) ** 2) @ w).sqrt())
    again = build_model(ens.config.to_dict())
    assert isinstance(again, DAAEnsemble) and again.config.weights == [0.75, 0.25]


def test_a_tighter_member_reads_its_own_crop_as_a_window_of_the_canvas():
    """The window the ensemble resamples equals what crop_face makes for that member's spec directly (same
    centre, angle and framing), up to resampling: checked on a smooth photo with a tilted face box."""
    from PIL import Image

    from model.faces import FaceDetection, crop_face

    yy, xx = np.mgrid[0:400, 0:400].astype(np.float32)
    photo = np.stack([128 + 100 * np.sin(xx / 23), 128 + 100 * np.cos(yy / 31), (xx + yy) / 4], -1)
    image = Image.fromarray(photo.clip(0, 255).astype(np.uint8))
    det = FaceDetection((140.0, 120.0, 260.0, 270.0), 0.99, ((170.0, 170.0), (230.0, 182.0)))
    tight, loose = CropSpec(128, 1.05, True), CropSpec(150, 1.5, True)
    members = [ModelConfig(encoder="c3ae", crop=tight, name="t"), ModelConfig(encoder="c3ae", crop=loose, name="l")]
    assert EnsembleConfig(members).crop == loose
    canvas = torch.from_numpy(crop_face(image, det, loose).copy()).permute(2, 0, 1)[None].float()
    window = crop_window(canvas, loose, tight)[0].permute(1, 2, 0).numpy()
    direct = crop_face(image, det, tight).astype(np.float32)
    assert window.shape == direct.shape
    assert np.abs(window - direct)[8:-8, 8:-8].mean() < 0.6  # grey levels of 255
    shifted = crop_window(canvas, loose, CropSpec(128, 1.0, True))[0].permute(1, 2, 0).numpy()
    assert np.abs(shifted - direct)[8:-8, 8:-8].mean() > 4 * np.abs(window - direct)[8:-8, 8:-8].mean()


def test_an_ensemble_of_different_crops_serves_from_one_canvas_crop(tmp_path):
    torch.manual_seed(0)
    tight = build_model(ModelConfig(encoder="c3ae", name="tight")).eval()
    loose_cfg = ModelConfig(encoder="c3ae", encoder_input_size=64, crop={"size": 96, "scale": 1.5}, name="loose")
    loose = build_model(loose_cfg).eval()
    ens = from_networks([tight, loose])
    assert ens.config.crop == CropSpec(96, 1.5, True)
    path = save_checkpoint(tmp_path / "mixed.pt", ens, {})
    est = Estimator(str(path), device="cpu", runtime="torch", flip_tta=False)
    assert est.crop_spec == CropSpec(96, 1.5, True)
    crops = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    got = est.estimate(crops, 1)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        a = tight(crop_window(x, CropSpec(96, 1.5, True), tight.config.crop)).age
        b = loose(x).age
    for g, want in zip(got, ((a + b) / 2).tolist()):
        assert g.age == pytest.approx(want, abs=1e-4)


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


def test_blend_finds_the_weights_that_cancel_opposite_biases(tmp_path):
    import json

    from training.blend import main as blend
    from training.blend import simplex

    assert all(abs(sum(w) - 1) < 1e-9 and min(w) > 0 for w in simplex(3, 0.1)) and len(simplex(3, 0.1)) == 36
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 80, 500)
    reports = []
    for i, pred in enumerate((true + 3 + rng.normal(0, 0.2, 500), true - 1 + rng.normal(0, 0.2, 500))):
        order = rng.permutation(500)  # reports list images in any order
        names = [f"img{k}" for k in order]
        body = {"predictions": {"names": names, "true": true[order].tolist(), "pred": pred[order].tolist()}}
        reports.append(tmp_path / f"m{i}.json")
        reports[-1].write_text(json.dumps(body))
    result = blend(reports, 0.05)
    assert result["weights"] == [0.25, 0.75]  # 0.25 x 3 - 0.75 x 1 = 0
    assert result["mae"] < min(result["member_mae"]) and result["mae"] < result["equal_weights_mae"]


def test_export_weights_are_per_checkpoint_and_shared_among_its_networks(tmp_path):
    nets = two_networks()
    pair = save_checkpoint(tmp_path / "pair.pt", from_networks(nets, weights=[1, 3]), {"split": {"file": "s.json"}})
    third = build_model(ModelConfig(encoder="c3ae", name="m2")).eval()
    single = save_checkpoint(tmp_path / "single.pt", third, {"split": {"file": "s.json"}})
    out = export([pair, single], None, tmp_path / "ens.pt", "3.0.0", "", weights=[0.6, 0.4])
    model, _ = load_checkpoint(out)
    assert model.config.weights == pytest.approx([0.15, 0.45, 0.4])
    renamed, _ = load_checkpoint(export([out], None, tmp_path / "renamed.pt", "3.0.1", "", name="shipped"))
    assert renamed.config.name == "shipped" and renamed.config.weights == pytest.approx([0.15, 0.45, 0.4])
    with pytest.raises(ValueError, match="2 weights for 1 checkpoint"):
        export([single], None, tmp_path / "bad.pt", "3.0.0", "", weights=[0.5, 0.5])
