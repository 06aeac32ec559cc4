"""Knowledge distillation (Hinton et al. 2015) for ferlab's fast students: the KL divergence from
the teacher's softened distribution, scaled by T^2 so its gradients keep their size across
temperatures, mixed with cross-entropy on the labels (FER+ vote distributions or one-hot)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DistillationLoss(nn.Module):
    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"distill.temperature must be more than 0, not {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill.alpha must be between 0 and 1, not {alpha}")
        self.t, self.alpha = float(temperature), float(alpha)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        s = student_logits.float()
        kd = F.kl_div(F.log_softmax(s / self.t, 1), F.log_softmax(teacher_logits.float() / self.t, 1),
                      reduction="batchmean", log_target=True) * self.t ** 2
        ce = F.cross_entropy(s, targets)
        return self.alpha * kd + (1 - self.alpha) * ce
