"""Training losses: Eq. 10, the per-reference term, and distillation from a teacher's per-reference estimates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.network import DAAOutput


def daa_loss(age: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 10: smooth L1 between the predicted (Eq. 9) and true ages, averaged over the batch."""
    return F.smooth_l1_loss(age, target.to(age.dtype))


def reference_loss(out: DAAOutput, target: torch.Tensor) -> torch.Tensor:
    """Smooth L1 between the true age and each reference's estimate y - delta_y, averaged over references and batch."""
    estimates = out.references.to(out.deltas.dtype).unsqueeze(0) - out.deltas.float()
    return F.smooth_l1_loss(estimates, target.to(estimates.dtype).unsqueeze(1).expand_as(estimates))


def distillation_loss(student: DAAOutput, teacher: DAAOutput, spread: bool = False) -> torch.Tensor:
    """Smooth L1 between the student's and the teacher's per-reference estimates y - delta_y (equivalently their
    deltas), averaged over references and batch. Matching every reference, not only the mean, passes on the
    teacher's whole Eq. 9 picture: its age, and how its estimates spread over the references.

    ``spread``: match the teacher's reported spread too. An ensemble's deltas are its members' mean, whose spread
    over the references lacks the members' disagreement (the part of an ensemble's spread that ranks its errors:
    Spearman 0.39 for the FaceRes teacher against 0.09 for one network). The targets are then the teacher's
    estimates with their deviations from its age stretched to its pooled spread: the same age, the same shape over
    the references, and the spread the student should report for this face."""
    target = teacher.references.to(teacher.deltas.device).float().unsqueeze(0) - teacher.deltas.float()
    if spread:
        centre = target.mean(1, keepdim=True)
        own = (target - centre).pow(2).mean(1, keepdim=True).sqrt()
        stretch = (teacher.spread.float().unsqueeze(1) / own.clamp_min(1e-3)).clamp(1.0, 10.0)
        target = centre + (target - centre) * stretch
    estimates = student.references.to(student.deltas.device).float().unsqueeze(0) - student.deltas.float()
    return F.smooth_l1_loss(estimates, target.to(estimates.device))
