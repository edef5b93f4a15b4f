"""``python -m training {preprocess,split,train,evaluate,export,export-onnx,quantize,blend,groups,convert-dlib}``: the
researcher's command line.

Every training option is a flag, and ``--config FILE.json`` supplies any of them (flags given on the command line
win). Example, the paper's ResNet18 recipe on UTKFace:

    python -m training train --dataset utkface --data ../shared/data/utkface --cache cache/utkface \
        --split runs/split.json --out runs/resnet18 --encoder resnet18
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import read_checkpoint
from model.config import DAA_MODES, ModelConfig
from model.faces import CropSpec
from model.factory import parse_config
from training.augment import AugmentConfig
from training.datasets import LOADERS, load_dataset
from training.preprocess import build_cache, load_cache
from training.quantize import CALIBRATIONS, DEFAULT_CALIBRATION
from training.splits import load_split, make_split, save_split
from training.train import TrainConfig, train


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=sorted(LOADERS), default="utkface")
    p.add_argument("--data", type=Path, help="dataset folder (or the CSV file for --dataset csv)")
    p.add_argument("--cache", type=Path, required=True, help="crop cache folder (made on first use)")
    p.add_argument("--split", type=Path, help="split JSON (made on first use from --seed, --val, --test)")
    p.add_argument("--seed", type=int, default=None, help="split and training seed (default 0)")
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=2, help="detection processes for preprocessing")
    p.add_argument(
        "--detector", help="face detector for a new cache (default: the service's, DAA_DETECTOR); see list_detectors()"
    )


def detector_settings(args: argparse.Namespace):
    """The service's detector settings (``DAA_*`` variables), with ``--detector`` choosing another detector."""
    from dataclasses import replace

    from app.settings import Settings

    settings = Settings().detector_settings()
    if getattr(args, "detector", None) and args.detector != settings.name:
        settings = replace(settings, name=args.detector, options={})
    return settings


def ensure_cache(args: argparse.Namespace, spec: CropSpec, reader: str | None = None):
    """The crop cache, built with ``spec`` on first use. ``reader`` (what will read the crops): refuse a cache
    made with another crop, whose figures would silently be wrong."""
    if not (args.cache / "crops.npy").exists():
        if args.data is None:
            raise SystemExit(f"{args.cache} holds no crops yet; give --data to build it")
        summary = build_cache(
            load_dataset(args.dataset, args.data), args.cache, spec, detector_settings(args), workers=args.workers
        )
        print(
            f"preprocessed {summary['images']} images in {summary['seconds']}s; "
            f"{summary['no_face']} without a detected face (fallback: {summary['fallback']})"
        )
    elif reader is not None and (args.cache / "summary.json").exists():
        summary = json.loads((args.cache / "summary.json").read_text())
        made = summary.get("crop")
        if made is not None and CropSpec.from_dict(made) != spec:
            raise SystemExit(f"{args.cache} holds {CropSpec.from_dict(made)} crops, but {reader} reads {spec}")
        found_by = (summary.get("detector") or {}).get("name", "mtcnn")  # caches before the registry: MTCNN
        if getattr(args, "detector", None) and args.detector != found_by:
            raise SystemExit(f"{args.cache} holds crops of faces found by {found_by}, not {args.detector}")
    return load_cache(args.cache)


def ensure_split(args: argparse.Namespace) -> dict:
    if args.split and args.split.exists():
        return load_split(args.split)
    if args.data is None:
        raise SystemExit("no split file yet; give --data so one can be made")
    split = make_split(load_dataset(args.dataset, args.data), seed=args.seed or 0, val=args.val, test=args.test)
    path = args.split or args.cache / "split.json"
    save_split(split, path)
    print(f"wrote split {path}: {split['counts']}")
    return split


def subset(cache, names: list[str]):
    pos = {n: i for i, n in enumerate(cache.names)}
    missing = [n for n in names if n not in pos]
    if missing:
        raise SystemExit(f"{len(missing)} split entries are not in the crop cache (first: {missing[0]})")
    return cache.subset(np.asarray(sorted(pos[n] for n in names), dtype=np.int64))


def cmd_preprocess(args: argparse.Namespace) -> None:
    ensure_cache(args, CropSpec())


def cmd_split(args: argparse.Namespace) -> None:
    ensure_split(args)


def cmd_train(args: argparse.Namespace) -> None:
    file_cfg = json.loads(args.config.read_text()) if args.config else {}
    model_fields = dict(file_cfg.get("model", {}))
    for f in ("encoder", "encoder_input_size", "daa_mode", "init_age", "name"):
        if getattr(args, f) is not None:
            model_fields[f] = getattr(args, f)
    model_cfg = ModelConfig.from_dict(model_fields)
    train_cfg = TrainConfig(**{k: v for k, v in file_cfg.get("train", {}).items() if k != "augment"})
    train_cfg.augment = AugmentConfig(**file_cfg.get("train", {}).get("augment", {}))
    for option in fields(TrainConfig):
        if option.name != "augment" and getattr(args, option.name, None) is not None:
            setattr(train_cfg, option.name, getattr(args, option.name))
    if args.seed is not None:
        train_cfg.seed = args.seed
    # The dlib weights' activations go denormal; flushing them made CPU training ~1.6x faster. The flag is
    # process-wide, so the command that owns the process sets it, not the library.
    torch.set_flush_denormal(True)
    cache = ensure_cache(args, model_cfg.crop, f"the model {model_cfg.name!r}")
    split = ensure_split(args)
    tr, va = subset(cache, split["train"]), subset(cache, split["val"])
    if "init_age" not in model_fields:
        model_cfg.init_age = float(tr.ages.mean())
    print(f"train {len(tr)} / val {len(va)} images; model {model_cfg.name}; device {train_cfg.device}")
    metadata = {
        "data": {
            "dataset": args.dataset,
            "location": str(args.data) if args.data else None,
            "cache": str(args.cache),
            "train_images": len(tr),
            "val_images": len(va),
        },
        "split": {"file": str(args.split) if args.split else None, "seed": split.get("seed"), "counts": split.get("counts")},
        "command": "python -m training " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "init_encoder": str(args.init_encoder) if args.init_encoder else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    metadata["init_checkpoint"] = str(args.init_checkpoint) if args.init_checkpoint else None
    summary = train(
        model_cfg,
        train_cfg,
        tr,
        va,
        args.out,
        resume=args.resume,
        init_encoder=args.init_encoder,
        init_checkpoint=args.init_checkpoint,
        metadata=metadata,
        teacher=args.teacher,
    )
    print(json.dumps(summary))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from training.evaluate import evaluate, evaluate_graph, write_report

    intervals = [int(k) for k in args.intervals.split(",")]
    payload = None
    if args.checkpoint.suffix == ".onnx":  # an exported graph, served by ONNX Runtime
        from model.onnx_estimator import OnnxEstimator

        cache = ensure_cache(args, OnnxEstimator(args.checkpoint).crop_spec, str(args.checkpoint))
        data = subset(cache, ensure_split(args)[args.subset])
        report = evaluate_graph(args.checkpoint, data, intervals, flip=args.flip)
    else:
        payload = read_checkpoint(args.checkpoint)  # read once: its crop picks the cache, then it is evaluated
        cache = ensure_cache(args, parse_config(payload["config"]).crop, str(args.checkpoint))
        data = subset(cache, ensure_split(args)[args.subset])
        report = evaluate(args.checkpoint, data, intervals, args.device, flip=args.flip, payload=payload)
    report["subset"], report["split_file"] = args.subset, str(args.split)
    write_report(report, args.out)
    if args.plots and payload is not None:  # the style curves need the torch network
        from model.checkpoint import load_checkpoint
        from training.plots import plot_decades, plot_pred_vs_true, plot_style_curves

        args.plots.mkdir(parents=True, exist_ok=True)
        first = report["results"][str(intervals[0])]
        plot_decades(first, args.plots / "mae_per_decade.png")
        pred = report["predictions"]
        plot_pred_vs_true(np.asarray(pred["true"]), np.asarray(pred["pred"]), args.plots / "pred_vs_true.png")
        model, _ = load_checkpoint(args.checkpoint, payload=payload)
        plot_style_curves(model, args.plots / "style_s_t.png")
    print(f"wrote {args.out}")


def cmd_export_onnx(args: argparse.Namespace) -> None:
    import warnings

    from training.export_onnx import export_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants (the graph is checked by the tests)
        print("wrote", export_onnx(args.checkpoint, args.out))


def cmd_quantize(args: argparse.Namespace) -> None:
    from model.onnx_estimator import OnnxEstimator
    from training.quantize import Selection, quantise

    cache = ensure_cache(args, OnnxEstimator(args.graph).crop_spec, str(args.graph))
    selection = Selection(stem=args.quantize_stem, depthwise=args.quantize_depthwise, decoder=not args.float_decoder)
    figures = quantise(
        args.graph, cache, ensure_split(args), args.out, args.calibrate, method=args.calibration, selection=selection
    )
    print(json.dumps(figures, indent=1))
    print("wrote", args.out)


def cmd_triton(args: argparse.Namespace) -> None:
    from training.triton import write_repository

    print("wrote", write_repository(args.graph, args.out, args.max_batch_size))


def cmd_export(args: argparse.Namespace) -> None:
    from training.export import export

    print(
        "wrote",
        export(
            args.checkpoint,
            args.report,
            args.out,
            args.version,
            args.licence,
            args.val_report,
            name=args.name,
            weights=args.weights,
        ),
    )


def cmd_blend(args: argparse.Namespace) -> None:
    from training.blend import main as blend_main

    blend_main(args.report, args.step)


def cmd_groups(args: argparse.Namespace) -> None:
    from training.groups import main as groups_main

    groups_main(args.report, args.labels)


def cmd_convert_dlib(args: argparse.Namespace) -> None:
    from training.convert_dlib_age import main as convert_main

    convert_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("preprocess", help="detect, crop and cache every image once")
    _data_args(p)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("split", help="write a seeded split file")
    _data_args(p)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", help="train a DAA network")
    _data_args(p)
    p.add_argument("--out", type=Path, required=True, help="run folder: last.pt, best.pt, metrics.jsonl")
    p.add_argument("--config", type=Path, help='JSON {"model": {...}, "train": {...}}; flags override it')
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init-encoder", type=Path, help="encoder weights, e.g. from convert-dlib")
    p.add_argument(
        "--init-checkpoint",
        type=Path,
        help="start from a whole trained network (same architecture), or the matching member of an ensemble",
    )
    p.add_argument("--teacher", type=Path, help="distil from this checkpoint's per-reference estimates (--distill-weight)")
    p.add_argument("--name", help="model name stored in the checkpoint")
    p.add_argument("--encoder", help="resnet18, c3ae, dlib_resnet or any registered encoder")
    p.add_argument("--encoder-input-size", type=int)
    p.add_argument("--daa-mode", choices=DAA_MODES)
    p.add_argument("--init-age", type=float, help="age the untrained head starts at (default: mean train age)")
    for f in fields(TrainConfig):
        if f.name in ("augment", "betas", "seed"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool",):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" |")[0], str)
            p.add_argument(flag, type=kind, default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="MAE, CA(3/5/7) and per-decade MAE of a checkpoint")
    _data_args(p)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--subset", choices=("test", "val", "train"), default="test")
    p.add_argument("--intervals", default="1", help="reference intervals, e.g. 1,2,5,10,20,50 (Table 7)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored crop")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, required=True, help="report JSON")
    p.add_argument("--plots", type=Path, help="folder for PNG plots")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write a serving checkpoint with the test report's metrics")
    p.add_argument(
        "--checkpoint",
        type=Path,
        nargs="+",
        required=True,
        help="one trained checkpoint, or several (trained on one split) to export as one ensemble",
    )
    p.add_argument("--name", help="the ensemble's model name (default: the members' names joined by '+')")
    p.add_argument(
        "--weights", type=float, nargs="+", help="one weight per --checkpoint (from `blend`); default: equal per network"
    )
    p.add_argument("--report", type=Path, help="evaluate's JSON on the test split")
    p.add_argument("--val-report", type=Path, help="evaluate's JSON on the validation split (calibrates age_range)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--licence", default="")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-onnx", help="write a checkpoint as one ONNX graph, for serving without torch")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, help="default: the checkpoint's path with .onnx")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("triton", help="a Triton model repository (config.pbtxt + model.onnx) for an exported graph")
    p.add_argument("--graph", type=Path, required=True, help="an export-onnx graph")
    p.add_argument("--out", type=Path, required=True, help="the model repository folder")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.set_defaults(func=cmd_triton)

    p = sub.add_parser("blend", help="choose ensemble weights from the members' validation reports")
    p.add_argument("--report", type=Path, nargs="+", required=True, help="evaluate's JSON per member, --subset val")
    p.add_argument("--step", type=float, default=0.05, help="weight grid step")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("groups", help="MAE and CA(5) by decade, gender and ethnicity (UTKFace labels), as markdown")
    p.add_argument("--report", type=Path, required=True, help="evaluate's JSON")
    p.add_argument("--labels", type=Path, required=True, help="labels.csv with file,age,gender,race")
    p.set_defaults(func=cmd_groups)

    p = sub.add_parser("quantize", help="an export-onnx graph with its encoder in int8 (the range refitted)")
    _data_args(p)  # the split's train part calibrates, its val part refits the range
    p.add_argument("--graph", type=Path, required=True, help="an export-onnx graph")
    p.add_argument("--calibrate", type=int, default=256, help="train crops to calibrate the activations on")
    p.add_argument("--calibration", choices=list(CALIBRATIONS), default=DEFAULT_CALIBRATION, help="activation ranges")
    p.add_argument("--quantize-stem", action="store_true", help="the first convolution in int8 too")
    p.add_argument("--quantize-depthwise", action="store_true", help="the depthwise convolutions in int8 too")
    p.add_argument("--float-decoder", action="store_true", help="keep the AgeDecoder's convolution float")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("convert-dlib", help="convert the CC0 dlib age network into encoder weights")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_convert_dlib)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
