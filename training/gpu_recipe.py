"""One command for the paper's ResNet18+DAA on UTKFace on a single GPU, then the test-split evaluation.

    python -m training.gpu_recipe                       # 200 epochs, configs/resnet18-utkface-gpu.json
    python -m training.gpu_recipe --config configs/resnet18-utkface-gpu-8min.json   # the 8-minute run: 120
        # epochs cut at 5.5 min of training (cache built on the GPU first, evaluation after; no GPU has run it yet)
    python -m training.gpu_recipe --steps 2 --device cpu  # dry run (CI runs one on CPU)

The whole uint8 crop set (15k x 128 x 128 x 3 = 0.7 GB) is held on the GPU, batches are indexed and augmented
there, and the model runs in bf16 autocast with channels_last: no data loader, no host-device copies per step.
Any ``python -m training train`` option can be appended and overrides the defaults here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.__main__ import main as training_main

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="utkface")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "utkface"))
    p.add_argument("--cache", default=str(ROOT / "cache" / "utkface128"))
    p.add_argument("--split", default=str(ROOT / "models" / "utkface-split-seed0.json"))
    p.add_argument("--out", default=str(ROOT / "runs" / "resnet18-gpu"))
    p.add_argument("--config", default=str(ROOT / "configs" / "resnet18-utkface-gpu.json"))
    args, rest = p.parse_known_args(argv if argv is not None else sys.argv[1:])
    common = ["--dataset", args.dataset, "--data", args.data, "--cache", args.cache, "--split", args.split]
    training_main(["train", *common, "--out", args.out, "--config", args.config, *rest])
    device = rest[rest.index("--device") + 1] if "--device" in rest else "auto"
    training_main(
        [
            "evaluate",
            *common,
            "--checkpoint",
            str(Path(args.out) / "best.pt"),
            "--device",
            device,
            "--intervals",
            "1,2,5,10,20,50",
            "--flip",
            "--out",
            str(Path(args.out) / "test_eval.json"),
            "--plots",
            str(Path(args.out) / "plots"),
        ]
    )


if __name__ == "__main__":
    main()
