"""The trainer: Adam + cosine decay + smooth L1 on Eq. 9, on CPU or CUDA, resumable, one metrics line per epoch."""

from __future__ import annotations

import json
import math
import random
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.factory import count_parameters
from model.inference import crops_to_input, predict, resolve_device
from model.network import DAANet
from training.augment import AugmentConfig, augment_batch
from training.losses import daa_loss, distillation_loss, reference_loss
from training.metrics import age_metrics
from training.preprocess import CropCache


@dataclass
class TrainConfig:
    """Paper section 4.2 defaults: Adam, weight decay 5e-4, lr 1e-3 with cosine decay, batch 128, 200 epochs."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    encoder_lr: float | None = None  # None: same as lr; a pretrained encoder wants ~1e-4
    # lr of the AgeDecoder's final Linear (None: same as lr). Its outputs are delta ages in years, ~50x the
    # unit-scale BN/ReLU activations it reads, and Adam moves each weight by ~lr per step: at 1e-3 the weights need
    # ~1,000 steps (~9 UTKFace epochs at batch 128) just to reach that scale, which is what the slow first epochs
    # of the dlib runs were.
    output_lr: float | None = None
    weight_decay: float = 5e-4
    # Weight of an extra smooth-L1 term on every reference's own estimate y - delta_y (0: the paper's Eq. 10 only).
    # Eq. 10 constrains only the mean, so delta_y can collapse to a constant: the per-reference deltas then mean
    # nothing, the spread is just the spread of the reference ages, and sparse reference sets (Table 7) shift the
    # age. The term trains what section 3.2 states, y - x = f_D(delta(x, y)), for each y.
    reference_loss_weight: float = 0.0
    # Weight of the distillation term (training/losses.py) when a teacher checkpoint is given: the student matches
    # the teacher's per-reference estimates on the same augmented batch, besides the labels.
    distill_weight: float = 1.0
    # Distil the teacher's reported spread as well as its estimates (training/losses.py), so that one network
    # reports the disagreement of the ensemble it learns from: the uncertainty that ranks errors.
    distill_spread: bool = False
    optimizer: str = "adam"  # "adamw": decoupled decay, which leaves a pretrained encoder's small weights alone
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    steps: int | None = None  # stop after this many optimiser steps in all (dry run)
    # Stop after the first epoch that ends past this many minutes of training (a budget, e.g. a lent GPU's time);
    # best.pt is then the best epoch so far, and the cosine schedule is cut short, not stretched.
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only (measured slower on CPUs without bf16 units)
    channels_last: bool = True  # CUDA only
    data_on_device: bool = True  # hold the uint8 crops on the GPU and augment there
    eval_interval: int = 1
    eval_batch_size: int = 256
    threads: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pick_templates(train: CropCache, num_references: int, seed: int) -> torch.Tensor:
    """One random training crop per reference age (nearest age where none exists): Table 5's template baselines."""
    rng = np.random.default_rng(seed)
    ages = np.round(train.ages).astype(int)
    chosen = []
    for y in range(num_references):
        nearest = np.abs(ages - y).min()
        chosen.append(rng.choice(np.flatnonzero(np.abs(ages - y) == nearest)))
    return torch.as_tensor(np.asarray(train.crops[np.asarray(chosen)])).permute(0, 3, 1, 2).contiguous()


def build_optimizer(model: DAANet, cfg: TrainConfig) -> torch.optim.Optimizer:
    enc = list(model.encoder.parameters())
    out = list(model.decoder.fc.parameters())
    taken = {id(p) for p in enc + out}
    rest = [p for p in model.parameters() if id(p) not in taken]
    groups = [
        {"params": enc, "lr": cfg.encoder_lr or cfg.lr},
        {"params": rest, "lr": cfg.lr},
        {"params": out, "lr": cfg.output_lr or cfg.lr},
    ]
    if cfg.optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be adam or adamw, got {cfg.optimizer!r}")
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    train_set: CropCache,
    val_set: CropCache,
    out_dir: Path,
    resume: bool = False,
    init_encoder: Path | None = None,
    init_checkpoint: Path | None = None,
    metadata: dict | None = None,
    teacher: Path | None = None,
) -> dict:
    """Train, writing ``last.pt`` (resumable) every epoch, ``best.pt`` on the best validation MAE, and
    ``metrics.jsonl``. Returns the final summary.

    ``teacher``: a trained checkpoint (one network or an ensemble) whose per-reference estimates the model learns
    to match as well as the labels (distillation, weight ``cfg.distill_weight``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    return _train(
        model_cfg, cfg, train_set, val_set, out_dir, device, resume, init_encoder, init_checkpoint, metadata, teacher
    )


def initial_state(path: Path, model_cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Weights to start from: a single network's, or the member of an ensemble with the same architecture."""
    payload = read_checkpoint(path)
    members = payload["config"].get("members")
    if members is None:
        return payload["state_dict"]
    wanted = {k: v for k, v in model_cfg.to_dict().items() if k not in ("name", "init_age")}
    for i, member in enumerate(members):
        if {k: v for k, v in member.items() if k not in ("name", "init_age")} == wanted:
            prefix = f"members.{i}."
            return {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    raise ValueError(f"no member of the ensemble {path} has the architecture of {model_cfg.name!r}")


def _train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    train_set: CropCache,
    val_set: CropCache,
    out_dir: Path,
    device: torch.device,
    resume: bool,
    init_encoder: Path | None,
    init_checkpoint: Path | None,
    metadata: dict | None,
    teacher: Path | None,
) -> dict:
    cuda = device.type == "cuda"

    model = DAANet(model_cfg)
    if init_encoder:
        state = torch.load(init_encoder, map_location="cpu", weights_only=True)
        if isinstance(state.get("encoder"), dict):  # convert_dlib_face's file: the whole trunk, maybe more levels
            own = model.encoder.state_dict()
            model.encoder.load_state_dict({k: v for k, v in state["encoder"].items() if k in own}, strict=True)
        elif state.get("encoder") != model_cfg.encoder:
            raise ValueError(f"{init_encoder} holds a {state.get('encoder')!r} encoder, not {model_cfg.encoder!r}")
        else:
            model.encoder.load_state_dict(state["state_dict"])
    if init_checkpoint:
        # Whole-network initialisation, e.g. fine-tuning a 64 px model at 128 px: convolutions and the DAA head
        # do not depend on the input size, so the weights carry over.
        model.load_state_dict(initial_state(init_checkpoint, model_cfg))
    if model_cfg.daa_mode.startswith("template"):
        model.set_templates(pick_templates(train_set, model_cfg.num_references, cfg.seed))
    model.to(device)
    channels_last = cfg.channels_last and cuda
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    teacher_model = load_checkpoint(teacher, map_location=device)[0] if teacher else None
    if teacher_model is not None and teacher_model.config.crop != model_cfg.crop:
        # The teacher sees the student's batch: it must read the same crop (an ensemble reads its loosest).
        raise ValueError(f"the teacher {teacher} reads {teacher_model.config.crop} crops, the model {model_cfg.crop}")
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    start_epoch, step, best, history = 0, 0, math.inf, []
    last_path = out_dir / "last.pt"
    if resume and last_path.exists():
        payload = read_checkpoint(last_path)
        model.load_state_dict(payload["state_dict"])
        state = payload["train_state"]
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, best, history = state["epoch"], state["step"], state["best_mae"], state["history"]
        torch.set_rng_state(state["rng"])
        print(f"resumed from {last_path} at epoch {start_epoch}, step {step}")

    crops = torch.as_tensor(np.asarray(train_set.crops))
    if cuda and cfg.data_on_device:
        crops = crops.to(device)  # the whole uint8 set lives on the GPU: no loader, no host copies per step
    ages = torch.as_tensor(train_set.ages).to(crops.device)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + start_epoch)
    meta = {
        "model_parameters": count_parameters(model),
        "train_config": json.loads(json.dumps(asdict(cfg))),
        "code_version": code_version(),
        "teacher": str(teacher) if teacher else None,
        **(metadata or {}),
    }
    summary: dict = {}
    started = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        perm = torch.randperm(len(train_set), generator=gen).to(crops.device)
        t0 = time.time()
        run_loss = run_mae = 0.0
        seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=5)
        for i in bar:
            if cfg.steps is not None and step >= cfg.steps:
                break
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = crops_to_input(crops[idx], device, channels_last)
            y = ages[idx].to(device)
            x = augment_batch(x, cfg.augment)
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * lr_factor(step, total_steps, cfg.warmup_steps)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.amp):
                out = model(x)
                if teacher_model is not None:
                    with torch.no_grad():
                        taught = teacher_model(x)
            loss = daa_loss(out.age.float(), y)
            if cfg.reference_loss_weight:
                loss = loss + cfg.reference_loss_weight * reference_loss(out, y)
            if teacher_model is not None:
                loss = loss + cfg.distill_weight * distillation_loss(out, taught, cfg.distill_spread)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            n = len(idx)
            seen += n
            run_loss += float(loss.detach()) * n
            run_mae += float((out.age.detach().float() - y).abs().sum())
            bar.set_postfix(loss=f"{run_loss / seen:.3f}", mae=f"{run_mae / seen:.2f}", refresh=False)
        bar.close()
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": run_loss / max(seen, 1),
            "train_mae": run_mae / max(seen, 1),
            "lr": optimizer.param_groups[1]["lr"],
            "seconds": round(time.time() - t0, 1),
        }
        done = cfg.steps is not None and step >= cfg.steps
        done = done or (cfg.max_minutes is not None and time.time() - started > 60 * cfg.max_minutes)
        if len(val_set) and ((epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs or done):
            pred, _ = predict(model, val_set.crops, device, cfg.eval_batch_size, channels_last=channels_last)
            val = age_metrics(pred, val_set.ages)
            record.update(val_mae=val["mae"], val_ca5=val["ca5"])
            if val["mae"] < best:
                best = val["mae"]
                save_checkpoint(out_dir / "best.pt", model, {**meta, "epoch": epoch + 1, "val": val})
        history.append(record)
        print(json.dumps(record), flush=True)
        with open(out_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        state = {
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "step": step,
            "best_mae": best,
            "history": history,
            "rng": torch.get_rng_state(),
        }
        save_checkpoint(last_path, model, {**meta, "epoch": epoch + 1}, extra={"train_state": state})
        summary = {"epochs_done": epoch + 1, "steps": step, "best_val_mae": best, "last": record}
        if done:
            break
    return summary
