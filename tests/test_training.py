"""Datasets, splits, augmentation, metrics, and the training CLI's dry run (train, resume, evaluate) on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.factory import build_model
from testkit import FIXTURES
from training.augment import AugmentConfig, augment_batch
from training.datasets import Sample, load_csv, load_fgnet, load_utkface
from training.metrics import age_metrics
from training.splits import leave_one_subject_out, make_split

ROOT = Path(__file__).resolve().parent.parent


def test_utkface_and_fgnet_names(tmp_path):
    for name in (
        "25_0_1_20170116174525125.jpg.chip.jpg",
        "3_1_2_20161219140530307.jpg.chip.jpg",
        "39_1_20170116174525125.jpg.chip.jpg",
    ):  # the last is malformed (no race): skipped
        (tmp_path / name).write_bytes(b"x")
    assert sorted(s.age for s in load_utkface(tmp_path)) == [3.0, 25.0]
    fg = tmp_path / "fg"
    fg.mkdir()
    for name in ("001A02.JPG", "001A10.JPG", "002A33a.JPG"):
        (fg / name).write_bytes(b"x")
    samples = load_fgnet(fg)
    assert [(s.subject, s.age) for s in samples] == [("001", 2.0), ("001", 10.0), ("002", 33.0)]
    folds = leave_one_subject_out(samples)
    assert [(f[0], len(f[1]), len(f[2])) for f in folds] == [("001", 1, 2), ("002", 2, 1)]


def test_csv_loader(tmp_path):
    (tmp_path / "d.csv").write_text("path,age,subject\na.jpg,31,p1\n/abs/b.jpg,40.5,\n")
    samples = load_csv(tmp_path / "d.csv")
    assert samples[0].path == tmp_path / "a.jpg" and samples[0].subject == "p1"
    assert samples[1].path == Path("/abs/b.jpg") and samples[1].age == 40.5 and samples[1].subject is None
    (tmp_path / "bad.csv").write_text("path,age\na.jpg,old\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        load_csv(tmp_path / "bad.csv")


def test_split_keeps_duplicates_together_and_drops_conflicts(tmp_path):
    samples = []
    for i in range(60):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(f"image {i % 50}".encode())  # 10 byte-identical pairs
        samples.append(Sample(p, age=float(i % 50) if i < 55 else 99.0))  # pairs 5..9 disagree on the age
    split = make_split(samples, seed=3, val=0.1, test=0.2)
    assert split == make_split(samples, seed=3, val=0.1, test=0.2)  # deterministic
    assert split["counts"]["dropped"] == 10
    where = {n: k for k in ("train", "val", "test") for n in split[k]}
    for i in range(50, 55):  # agreeing duplicates share a split
        assert where[f"{i}.jpg"] == where[f"{i - 50}.jpg"]
    assert not set(split["dropped"]) & set(where)
    assert 8 <= len(split["test"]) <= 12


def test_split_by_subject(tmp_path):
    samples = []
    for i in range(40):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(f"img{i}".encode())
        samples.append(Sample(p, age=float(i), subject=f"s{i // 4}"))
    split = make_split(samples, seed=0)
    for k in ("train", "val", "test"):
        subjects = {int(n.split(".")[0]) // 4 for n in split[k]}
        for other in {"train", "val", "test"} - {k}:
            assert not subjects & {int(n.split(".")[0]) // 4 for n in split[other]}


def test_augment_identity_and_shapes():
    x = torch.rand(4, 3, 32, 32)
    same = augment_batch(x, AugmentConfig(flip=0.0, scale=(1.0, 1.0), rotation_deg=0.0, translate=0.0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flipped = augment_batch(x, AugmentConfig(flip=1.0, scale=(1.0, 1.0), rotation_deg=0.0, translate=0.0))
    torch.testing.assert_close(flipped, torch.flip(x, dims=[3]), atol=1e-5, rtol=0)
    assert augment_batch(x, AugmentConfig()).shape == x.shape


def test_metrics():
    m = age_metrics(np.array([10.0, 22.0, 35.0, 61.0]), np.array([12.0, 26.0, 35.0, 70.0]))
    assert m["mae"] == pytest.approx((2 + 4 + 0 + 9) / 4)
    assert (m["ca3"], m["ca5"], m["ca7"]) == (50.0, 75.0, 75.0)
    assert m["per_decade"]["20-29"] == {"mae": 4.0, "count": 1}


def make_fixture_dataset(root: Path) -> Path:
    """Ten labelled images made from the public-domain fixtures (ages are made up: this only exercises the code)."""
    base = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
    rows = ["path,age"]
    for i in range(10):
        im = ImageOps.mirror(base) if i % 2 else base
        im = ImageEnhance.Brightness(im).enhance(0.8 + 0.05 * i).rotate(i - 5)
        im.save(root / f"face{i}.jpg", quality=90)
        rows.append(f"face{i}.jpg,{20 + 4 * i}")
    (root / "faces.csv").write_text("\n".join(rows) + "\n")
    return root / "faces.csv"


@pytest.mark.slow
def test_training_cli_dry_run_resume_and_evaluate(tmp_path):
    csv_path = make_fixture_dataset(tmp_path)
    common = [
        "--dataset",
        "csv",
        "--data",
        str(csv_path),
        "--cache",
        str(tmp_path / "cache"),
        "--split",
        str(tmp_path / "split.json"),
        "--val",
        "0.2",
        "--test",
        "0.2",
        "--workers",
        "1",
    ]
    train = [
        sys.executable,
        "-m",
        "training",
        "train",
        *common,
        "--out",
        str(tmp_path / "run"),
        "--encoder",
        "c3ae",
        "--batch-size",
        "4",
        "--epochs",
        "3",
        "--reference-loss-weight",
        "1.0",
    ]
    first = subprocess.run([*train, "--steps", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "preprocessed 10 images" in first.stdout
    second = subprocess.run([*train, "--steps", "4", "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from" in second.stdout
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[-1]["step"] == 4
    model, meta = load_checkpoint(tmp_path / "run" / "best.pt")
    assert meta["split"]["counts"]["train"] == 6 and meta["command"].startswith("python -m training train")
    # A time budget stops after the epoch that passes it; a teacher adds the distillation term.
    budget = [*train[: train.index("--out") + 1], str(tmp_path / "budget"), *train[train.index("--out") + 2 :]]
    taught = subprocess.run(
        [*budget, "--max-minutes", "0", "--teacher", str(tmp_path / "run" / "best.pt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert taught.returncode == 0, taught.stderr[-2000:]
    budget_lines = (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()
    assert len(budget_lines) == 1  # 3 epochs asked, the budget ended it after the first
    assert load_checkpoint(tmp_path / "budget" / "best.pt")[1]["teacher"].endswith("best.pt")
    ev = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "evaluate",
            *common,
            "--checkpoint",
            str(tmp_path / "run" / "best.pt"),
            "--intervals",
            "1,10,50",
            "--flip",
            "--out",
            str(tmp_path / "eval.json"),
            "--plots",
            str(tmp_path / "plots"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr[-2000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["results"]) == {"1", "10", "50"}
    assert {"mae", "ca3", "ca5", "ca7", "per_decade"} <= set(report["results"]["1"])
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"mae_per_decade.png", "pred_vs_true.png", "style_s_t.png"}
    # A model (or teacher) that reads another crop than the cache holds is refused, not trained on wrong crops.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": {"encoder": "c3ae", "crop": {"size": 96, "scale": 1.5}}}))
    refused = subprocess.run(
        [*train, "--config", str(other), "--steps", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert refused.returncode != 0 and "crops, but the model" in refused.stderr
    wide = build_model(ModelConfig(encoder="c3ae", crop={"size": 96, "scale": 1.5}))
    wide_teacher = save_checkpoint(tmp_path / "wide.pt", wide, {})
    untaught = subprocess.run(
        [*train, "--teacher", str(wide_teacher), "--steps", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert untaught.returncode != 0 and "reads CropSpec(size=96, scale=1.5, align=True) crops" in untaught.stderr


@pytest.mark.slow
def test_gpu_recipe_dry_run_on_cpu(tmp_path):
    csv_path = make_fixture_dataset(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.gpu_recipe",
            "--dataset",
            "csv",
            "--data",
            str(csv_path),
            "--cache",
            str(tmp_path / "cache"),
            "--split",
            str(tmp_path / "split.json"),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--eval-batch-size",
            "8",
            "--val",
            "0.2",
            "--test",
            "0.2",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "test_eval.json").read_text())
    assert report["model"]["encoder"] == "resnet18" and set(report["results"]) == {"1", "2", "5", "10", "20", "50"}
