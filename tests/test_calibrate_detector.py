"""The frame calibration runs end to end on made-up chips and recovers a template that agrees with MTCNN."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from testkit import FIXTURES
from training.calibrate_detector import main

pytestmark = pytest.mark.slow


def test_calibration_fits_a_template_and_reports_agreement(tmp_path):
    group = Image.open(FIXTURES / "group.jpg").convert("RGB")
    astronaut = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
    sources = [astronaut.crop((70, 0, 270, 200))] + [group.crop(box) for box in ((0, 40, 220, 300), (200, 20, 440, 330))]
    names = []
    for i, chip in enumerate(sources * 3):  # each also mirrored and slightly rotated
        chip = chip.resize((200, 200)).rotate(4 * (i % 3 - 1))
        if i % 2:
            chip = chip.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        names.append(f"chip{i}.jpg")
        chip.save(tmp_path / names[-1])
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names, "val": names}))
    out = tmp_path / "calib.json"
    main(["--detector", "yunet", "--images", str(tmp_path), "--split", str(split), "--count", "9", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["fit_photos"] >= 6 and len(report["template"]) == 5 and len(report["box_correction"]) == 3
    (lx, ly), (rx, ry) = report["template"][:2]
    assert lx < 0 < rx and ly < 0 and ry < 0  # the eyes left and right of the centre, above it
    assert report["check"]["landmarks+box"]["iou"]["median"] > 0.8
