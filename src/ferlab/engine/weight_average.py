"""Weight-space interpolation of two models of one architecture (WiSE-FT: Wortsman et al., "Robust
fine-tuning of zero-shot models", CVPR 2022): w = (1 - alpha) * w_base + alpha * w_tuned.

A model fine-tuned from a base stays in the base's basin, so the straight line between the two is a
family of working models: alpha = 0 is the base, 1 the fine-tuned model, and points between often
keep most of the base's accuracy on its own data while keeping most of what fine-tuning added
elsewhere. Every floating-point tensor is interpolated (BatchNorm's running statistics too); integer
counters are taken from the tuned model. alpha is chosen on the selection splits, never on test.

A colour model fine-tuned from a gray one (`train.init_from`) is interpolated with that gray model
lifted to colour the way the fine-tuning started (its first convolution split over R, G and B by
OpenCV's gray weights), at the tuned model's input size: alpha = 0 is then the gray base reading each
colour face made gray.

    ferlab interpolate BASE TUNED OUT --alpha 0.5
"""
from __future__ import annotations

import torch

from ..data.colour import same_normalisation
from .checkpoint import grey_weights_for_colour, load_model, save_model


def interpolate_state(base: dict, tuned: dict, alpha: float) -> dict:
    if set(base) != set(tuned):
        raise ValueError("the two models have different weights: interpolation needs one architecture")
    out = {}
    for k, t in tuned.items():
        b = base[k]
        if b.shape != t.shape:
            raise ValueError(f"{k}: shapes {tuple(b.shape)} and {tuple(t.shape)} differ")
        out[k] = torch.lerp(b.float(), t.float(), float(alpha)).to(t.dtype) if t.is_floating_point() else t.clone()
    return out


def _gray_base_of_colour(bpre, tpre) -> bool:
    """Whether a gray base (`bpre`) can be read as a colour model of the tuned input (`tpre`)."""
    return bool(bpre and tpre and bpre.get("channels") == 1 and tpre.get("channels") == 3
                and same_normalisation(bpre, tpre))


def interpolate_models(base_path, tuned_path, alpha: float):
    """(model, meta) of the interpolation at `alpha` (meta from the tuned model, with provenance)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be between 0 (the base) and 1 (the tuned model), not {alpha}")
    base, bmeta = load_model(base_path)
    tuned, tmeta = load_model(tuned_path)
    lifted = _gray_base_of_colour(bmeta.get("preprocess"), tmeta.get("preprocess"))
    if bmeta["arch"] != tmeta["arch"] or bmeta["labels"] != tmeta["labels"] or \
            (bmeta.get("preprocess") != tmeta.get("preprocess") and not lifted):
        raise ValueError(f"{base_path} and {tuned_path} differ in architecture, labels or input: cannot interpolate")
    bsd = base.state_dict()
    if lifted:
        bsd = grey_weights_for_colour(bsd, tuned.state_dict())
    tuned.load_state_dict(interpolate_state(bsd, tuned.state_dict(), alpha))
    meta = {k: v for k, v in tmeta.items() if k not in ("temperature", "calibration", "exported_from", "dtype")}
    meta["interpolation"] = {"base": str(base_path), "tuned": str(tuned_path), "alpha": float(alpha)}
    if lifted:
        meta["interpolation"]["base_lifted"] = "gray base spread over R, G, B by OpenCV's gray weights"
    return tuned, meta


def write_interpolation(base_path, tuned_path, alpha: float, out) -> None:
    model, meta = interpolate_models(base_path, tuned_path, alpha)
    save_model(out, model, meta)


class WeightEMA:
    """An exponential moving average of a model's weights during training (`train.ema: DECAY`, e.g.
    0.998 per optimiser step): after each step the average moves `1 - DECAY` of the way to the
    trained weights, BatchNorm's running statistics too. The average is what an epoch is evaluated,
    selected and saved as; the trained weights travel in the resumable state (`state()` /
    `restore()`), so that --resume continues both. PyTorch's `AveragedModel` does the averaging."""

    def __init__(self, model: torch.nn.Module, decay):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        try:
            decay = float(decay)
        except (TypeError, ValueError):
            decay = -1.0
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be a decay between 0 and 1 (e.g. 0.998), not {decay!r}")
        self.decay, self.model = decay, model
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def module(self) -> torch.nn.Module:
        return self.average.module

    def update(self) -> None:
        self.average.update_parameters(self.model)

    def state(self) -> dict:
        """What --resume needs beside the saved (averaged) weights."""
        return {"ema_trained_weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "ema_steps": int(self.average.n_averaged)}

    def restore(self, saved_average: dict, st: dict) -> None:
        """After a resume: `saved_average` the checkpoint's weights, `st` its training state."""
        if "ema_trained_weights" not in st:
            raise ValueError("train.ema: the run being resumed was trained without it")
        self.average.module.load_state_dict(saved_average)
        self.model.load_state_dict(st["ema_trained_weights"])
        self.average.n_averaged.fill_(int(st["ema_steps"]))


def weight_ema(model: torch.nn.Module, tcfg: dict) -> WeightEMA | None:
    """The run's WeightEMA when its config sets train.ema, else None."""
    return None if tcfg.get("ema") is None else WeightEMA(model, tcfg["ema"])
