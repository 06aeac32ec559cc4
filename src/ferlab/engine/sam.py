"""Sharpness-Aware Minimization (Foret et al. 2021; paper 002 trains Swin-SE with it) around any
torch optimiser and any ferlab model.

One SAM step is two forward/backward passes:
  1. gradient g at the weights w;
  2. move to w + e, e = rho * g / ||g|| (ASAM, `adaptive=True`: e = rho * |w|^2 g / || |w| g ||);
  3. gradient at w + e; move back to w; the base optimiser steps with that gradient.

Selected from the config: ``optim: {name: sgd, ..., sam: {rho: 0.05, adaptive: false}}``.

Mixed precision: with a GradScaler the first-pass gradients are scaled; `perturb(grad_scale=...)`
divides the scale out before taking the norm, and makes no move when they are not finite (the
scaler then skips the step as usual). Weights are restored before `scaler.step`, so a skipped step
never leaves them perturbed.
BatchNorm running statistics see both passes (as in the reference implementations); the reported
training loss and accuracy are the first pass's, at w.
DDP: run the first pass under `model.no_sync()`, so each process perturbs with its own gradient
(the paper's m-sharpness, m = the per-process batch); the second pass is all-reduced as usual, so
every process takes the same step.
"""
from __future__ import annotations

import torch


class SAM:
    def __init__(self, optimizer: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False):
        if rho <= 0:
            raise ValueError(f"SAM rho must be positive, got {rho}")
        self.optimizer, self.rho, self.adaptive = optimizer, float(rho), bool(adaptive)
        self._moved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _params(self):
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def perturb(self, grad_scale: float = 1.0) -> bool:
        """Move the weights to w + e from their current gradients (divided by `grad_scale`).
        Returns False (and moves nothing) when the gradients are not finite or all zero."""
        self._moved = []
        params = self._params()
        if not params:
            return False
        scaled = [(p.abs() if self.adaptive else 1.0) * p.grad.float() / grad_scale for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        if not torch.isfinite(norm) or norm == 0:
            return False
        for p, s in zip(params, scaled):
            e = (s * (p.abs() if self.adaptive else 1.0) * (self.rho / norm)).to(p.dtype)
            p.add_(e)
            self._moved.append((p, e))
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """Move the weights back to w (call after the second backward pass, before stepping)."""
        for p, e in self._moved:
            p.sub_(e)
        self._moved = []


def build_sam(cfg: dict, optimizer: torch.optim.Optimizer) -> SAM | None:
    """SAM around `optimizer` when the config's optim section has a `sam` entry, else None."""
    s = cfg["optim"].get("sam")
    if not s:
        return None
    if s is True:
        s = {}
    if not isinstance(s, dict) or set(s) - {"rho", "adaptive"}:
        raise ValueError(f"optim.sam must be a mapping with rho (default 0.05) and adaptive (default false), got {s!r}")
    return SAM(optimizer, rho=float(s.get("rho", 0.05)), adaptive=bool(s.get("adaptive", False)))
