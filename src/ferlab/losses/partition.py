"""Partition loss (paper 001, DAN, eq. 6): make the k attention heads differ,

    L_pt = 1/(N C) sum_i sum_j log(1 + k / sigma_ij^2),

sigma_ij^2 the variance across the k heads of channel j of sample i (the heads' outputs after the
AFN's log-softmax). Zero for a single head. ``reduction="code"`` gives the authors' code instead:
log(1 + k / mean_ij sigma_ij^2), the log taken once of the mean variance.
"""
from __future__ import annotations

import torch


def partition_loss(heads: torch.Tensor, reduction: str = "paper") -> torch.Tensor:
    """heads: (N, k, C)."""
    k = heads.shape[1]
    if k < 2:
        return heads.new_zeros(())
    var = heads.float().var(dim=1)  # unbiased, as torch.var
    if reduction == "code":
        return torch.log1p(k / var.mean())
    if reduction != "paper":
        raise ValueError(f"partition loss reduction must be 'paper' or 'code', not {reduction!r}")
    return torch.log1p(k / var.clamp_min(1e-12)).mean()
