"""Every checkpoint shipped in models/ serves a real photo through the one pipeline, carries what its card and
the service report (version, licence, test metrics, calibrated range), and is described in the model card.
Adding a checkpoint to models/ adds it to these tests."""

from __future__ import annotations

import pytest

from model.checkpoint import read_checkpoint
from model.pipeline import AgePipeline
from testkit import ROOT, fixture_bytes

SHIPPED = sorted((ROOT / "models").glob("*.pt"))


def test_models_are_shipped():
    assert SHIPPED, "no checkpoint in models/"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_serves_a_photo_and_documents_itself(path):
    payload = read_checkpoint(path)
    meta = payload["metadata"]
    assert meta["version"] and "non-commercial" in meta["licence"]
    assert meta["metrics"]["subset"] == "test" and 0 < meta["metrics"]["mae"] < 10
    assert meta["range_model"] and 0.93 < meta["metrics"]["age_range"]["coverage"] < 0.97
    card = (ROOT / "models" / "MODEL_CARD.md").read_text()
    assert f"`{payload['config']['name']}`" in card and f"`models/{path.name}`" in card  # what /model reports
    pipeline = AgePipeline.load(path, device="cpu", runtime="torch", payload=payload)
    result = pipeline.run(fixture_bytes("astronaut.jpg"))
    assert len(result.faces) == 1
    face = result.faces[0]
    assert 20 < face.age < 70 and face.age_range[0] < face.age < face.age_range[1]
    assert len(face.deltas) == len(result.reference_ages) == 100
