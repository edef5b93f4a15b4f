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


def distillation_loss(student: DAAOutput, teacher: DAAOutput) -> torch.Tensor:
    """Smooth L1 between the student's and the teacher's per-reference estimates y - delta_y (equivalently their
    deltas), averaged over references and batch. Matching every reference, not only the mean, passes on the
    teacher's whole Eq. 9 picture: its age, and how its estimates spread over the references."""
    return F.smooth_l1_loss(student.deltas.float(), teacher.deltas.float().to(student.deltas.device))
