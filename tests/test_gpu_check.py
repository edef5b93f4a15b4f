"""The prepared GPU check (benchmarks/gpu_check.sh) runs end to end as a CPU dry run, so it is ready the day a GPU
machine is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testkit import ROOT


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": sys.executable, "DAA_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    model = json.loads((tmp_path / "model_bench.json").read_text())
    service = json.loads((tmp_path / "service_bench.json").read_text())
    assert model["device"] == "cpu" and model["per_face_ms"]
    assert service["rows"] and all(r["statuses"] == {"200": 4} for r in service["rows"])
