"""Fusion training's losses beside the cross-entropy: class weights, consistency, distillation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def class_weights(counts: np.ndarray, loss: str, beta: float = 0.999) -> np.ndarray:
    """Per-class loss weights with mean 1 over the classes present.

    ``balanced``: the effective number of samples (Cui et al. 2019), ``(1 - beta) / (1 - beta^n)``;
    otherwise inverse square-root frequency, so rare classes count more without swamping the rest.
    """
    present = counts > 0
    n = np.maximum(counts, 1)
    w = (1 - beta) / (1 - beta**n) if loss == "balanced" else 1 / np.sqrt(n)
    w = np.where(present, w, 0.0)
    return w / w[present].mean()


def consistency_loss(
    img_logits: torch.Tensor, act_logits: torch.Tensor, hi: torch.Tensor, ha: torch.Tensor
) -> torch.Tensor:
    """Symmetric KL divergence between the branch heads, on cells that have both inputs."""
    both = (hi[:, 0] > 0) & (ha[:, 0] > 0)
    if not both.any():
        return img_logits.sum() * 0
    li = nn.functional.log_softmax(img_logits[both], dim=1)
    la = nn.functional.log_softmax(act_logits[both], dim=1)
    kl = nn.functional.kl_div
    return 0.5 * (
        kl(li, la, log_target=True, reduction="batchmean")
        + kl(la, li, log_target=True, reduction="batchmean")
    )


def teacher_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL from a trained teacher's softened predictions to the student's (Hinton et al. 2015).

    ``teacher``: the teacher's logits for the same cells (fixed). Scaled by the temperature
    squared, so that its gradients keep their size beside the cross-entropy's.
    """
    target = nn.functional.log_softmax(teacher / temperature, dim=1)
    learner = nn.functional.log_softmax(student / temperature, dim=1)
    kl = nn.functional.kl_div(learner, target, log_target=True, reduction="batchmean")
    return kl * temperature**2


def distillation_loss(
    fused: torch.Tensor,
    branches: tuple[torch.Tensor, torch.Tensor],
    hi: torch.Tensor,
    ha: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """KL from the fused head's softened predictions (a fixed teacher) to each branch head's.

    On the cells with both inputs, where the fused head sees more than either branch; scaled by
    the temperature squared, as in Hinton et al. 2015, so its gradients do not shrink with it.
    """
    both = (hi[:, 0] > 0) & (ha[:, 0] > 0)
    if not both.any():
        return fused.sum() * 0
    teacher = nn.functional.log_softmax(fused[both].detach() / temperature, dim=1)
    total = fused.new_zeros(())
    for logits in branches:
        student = nn.functional.log_softmax(logits[both] / temperature, dim=1)
        total = total + nn.functional.kl_div(
            student, teacher, log_target=True, reduction="batchmean"
        )
    return total * temperature**2
