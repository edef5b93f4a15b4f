"""The image runs what CI runs: same install, same start command, a healthcheck on /ready; compose is valid."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from testkit import ROOT, fixture_bytes, running_service

DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()


def dockerfile_cmd() -> list[str]:
    """The images' start command (every final stage has the same one)."""
    (cmd,) = {line for line in re.findall(r"^CMD (\[.*\])$", DOCKERFILE, re.M)}
    return json.loads(cmd)


def dockerfile_stage(name: str) -> str:
    """One build stage's text, from its FROM line to the next."""
    return re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S).group(0)


def test_image_start_command_is_the_readme_command():
    assert dockerfile_cmd() == ["python", "-m", "app"]
    serve = next(line for line in README.splitlines() if line.startswith("pip install -c requirements/lock.txt -e . &&"))
    assert serve.split("&&")[1].split() == dockerfile_cmd()
    # The tests and benchmarks that start the service start it with the same command.
    assert '[sys.executable, *(python_args or ["-m", "app"])]' in (ROOT / "testkit.py").read_text()


def test_image_installs_this_checkout_with_pip_and_checks_ready():
    # The project's own pyproject, held to the lock (no second list of packages): the CPU image without extras
    # (no torch; the build fails if anything pulls it in), the GPU image with [torch].
    cpu, gpu = dockerfile_stage("build-cpu"), dockerfile_stage("build-gpu")
    assert "pip install -c /tmp/src/requirements/lock.txt /tmp/src " in cpu and "find_spec('torch') is None" in cpu
    assert 'pip install -c /tmp/src/requirements/lock.txt "/tmp/src[torch]"' in gpu and "ARG TORCH_INDEX_URL" in gpu
    assert "ARG PIP_FIND_LINKS" in cpu and "ENV PIP_FIND_LINKS" not in DOCKERFILE
    runtime = dockerfile_stage("runtime")  # what both final images are built on
    assert re.search(r"^HEALTHCHECK .*\n.*/ready", runtime, re.M)
    assert re.search(r"^USER daa$", runtime, re.M)  # not root
    for target, model in (("cpu", ".onnx"), ("gpu", ".pt")):
        final = dockerfile_stage(target)
        assert final.startswith(f"FROM runtime AS {target}")
        # Only the builder's venv reaches the image, and it serves the bundled model of its runtime.
        assert f"COPY --from=build-{target} /opt/daa /opt/daa" in final
        assert re.search(rf"^ENV DAA_CHECKPOINT=/opt/daa/share/daa-age/models/daa-\S+{re.escape(model)}$", final, re.M)
    assert DOCKERFILE.rstrip().split("\n\n")[-1].startswith("FROM runtime AS cpu")  # the default target
    assert "ARG BASE_IMAGE" in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"tests", "data", "cache", "runs", ".git"} <= set(ignored)
    # README's test command is the script, and CI runs that same script (with the checks) in a fresh venv.
    ci = (ROOT / ".ci" / "run").read_text()
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert "\nbash scripts/test.sh\n" in README
    assert "bash scripts/test.sh --checks" in ci
    assert "python3 -m venv" in ci and "rm -rf" in ci  # a fresh venv every run
    assert 'pip install -q -c requirements/lock.txt -e ".[dev]"' in script and "python -m pytest" in script
    assert all(tool in script for tool in ("chromium", "chromium-driver", "docker-compose", "apt-get install"))
    assert all(check in script for check in ("ruff check", "ruff format --check", "mypy"))


def test_compose_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    daa, gpu = compose["services"]["daa"], compose["services"]["daa-gpu"]
    assert daa["build"]["dockerfile"] == "docker/Dockerfile" and daa["ports"] == ["${DAA_PUBLISH_PORT:-8000}:8000"]
    assert (daa["build"]["target"], gpu["build"]["target"]) == ("cpu", "gpu")
    # Each service serves the model its image can run: ONNX without torch, the .pt with it.
    assert daa["environment"]["DAA_CHECKPOINT"].endswith(".onnx}") and gpu["environment"]["DAA_CHECKPOINT"].endswith(".pt}")
    test = daa["healthcheck"]["test"]
    # One CMD-SHELL string: podman 4.3 splits an exec-form test on spaces, which could never pass.
    assert test[0] == "CMD-SHELL" and len(test) == 2 and "/ready" in test[1]
    assert daa["restart"].startswith("on-failure:")  # an OOM kill restarts a few times, not for ever
    assert daa["mem_limit"] and daa["cpus"] and daa["pids_limit"]
    assert daa["volumes"][0].endswith(":/checkpoints:ro")
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["DAA_DEVICE"] == "cuda"
    # The GPU service keeps every shared setting (a plain environment: block would replace them).
    assert set(daa["environment"]) - {"DAA_MAX_BATCH_SIZE"} <= set(gpu["environment"])


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (compose v1) not installed")
def test_docker_compose_config_validates():
    for profile in ([], ["--profile", "gpu"]):
        proc = subprocess.run(
            ["docker-compose", *profile, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_start_command_serves_ready_and_estimate():
    """What the image's CMD and HEALTHCHECK do, outside Docker: start, wait for /ready, call /estimate."""
    with running_service() as (base, _):
        assert httpx.get(base + "/ready").json()["ready"] is True
        r = httpx.post(
            base + "/estimate", files={"file": ("a.jpg", fixture_bytes("astronaut.jpg"), "image/jpeg")}, timeout=60
        )
        assert r.status_code == 200 and len(r.json()["faces"]) == 1


@pytest.mark.slow
def test_two_worker_processes_share_the_port():
    with running_service({"DAA_WORKERS": "2"}) as (base, proc):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) == 2
        for _ in range(4):
            r = httpx.post(base + "/estimate", files={"file": ("a.jpg", fixture_bytes("astronaut.jpg"))}, timeout=60)
            assert r.status_code == 200 and len(r.json()["faces"]) == 1


@pytest.mark.slow
def test_the_wheel_ships_the_model_and_the_page_and_nothing_else(tmp_path):
    import shutil
    import sys
    import zipfile

    # Built from a copy of the tracked files: setuptools writes build/ and *.egg-info beside the sources it builds,
    # and the checkout must not gain them (nor an untracked file reach the wheel).
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    src = tmp_path / "src"
    for name in (t.decode() for t in tracked if t):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    before = set(ROOT.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("daa_age-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {"app", "model", "training", "bulk"} <= tops and "models" not in tops and "tests" not in tops
    default = "share/daa-age/models/daa-faceres160-distilled-utkface.pt"  # what default_checkpoint() finds
    assert any(n.endswith(default) for n in names)
    assert any(n.endswith(default.replace(".pt", ".onnx")) for n in names)  # the same network, servable without torch
    assert any(n.endswith(default.replace(".pt", ".int8.onnx")) for n in names)  # and in int8: the CPU default
    assert any(n.endswith("share/daa-age/models/yunet.onnx") for n in names)  # the default detector
    assert {"app/static/index.html", "app/static/app.js", "app/static/style.css"} <= set(names)
    assert {"app/py.typed", "model/py.typed"} <= set(names)  # typed packages, as declared
    assert set(ROOT.iterdir()) == before
