"""The detector benchmark runs end to end on a tiny made-up data folder (its figures come from real runs)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks.detector_bench import main
from testkit import FIXTURES

pytestmark = pytest.mark.slow


def test_detector_bench_runs_and_reports_every_detector(tmp_path, capsys):
    face = Image.open(FIXTURES / "astronaut.jpg").convert("RGB").crop((90, 10, 190, 130)).resize((200, 200))
    names = []
    for i, angle in enumerate((0, 5, -5)):
        name = f"{30 + i}_0_0_2017{i}.jpg.chip.jpg"
        face.rotate(angle).save(tmp_path / name)
        names.append(name)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": names, "val": [], "train": []}))
    out = tmp_path / "bench.json"
    main(["--utkface", str(tmp_path), "--split", str(split), "--pasted", "3", "--rounds", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["detectors"]) == {"mtcnn", "yunet"}
    for r in result["detectors"].values():
        assert r["no_face"] == 0 and set(r["ms"]) == {"200x200", "640x480", "1920x1080"}
        assert r["multi-face composites 1280x720"]["faces"] >= 3
    assert "| yunet |" in capsys.readouterr().out


def test_a_variant_sets_generic_settings_and_the_detectors_own_options():
    from benchmarks.detector_bench import variant

    v = variant("yunet:detail=24:target_side=480:min_score=0.6")
    assert v.name == "yunet" and v.detail == 24 and v.min_score == 0.6 and v.options == {"target_side": 480}
