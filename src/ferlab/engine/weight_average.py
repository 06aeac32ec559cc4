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


def check_same_weights(a: dict, b: dict, what: str) -> None:
    """Two state dicts of one architecture (the same keys and shapes), else one clear error."""
    if set(a) != set(b):
        raise ValueError(f"the models have different weights: {what} needs one architecture")
    for k, t in b.items():
        if a[k].shape != t.shape:
            raise ValueError(f"{k}: shapes {tuple(a[k].shape)} and {tuple(t.shape)} differ")


def interpolate_state(base: dict, tuned: dict, alpha: float) -> dict:
    check_same_weights(base, tuned, "interpolation")
    out = {}
    for k, t in tuned.items():
        b = base[k]
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


def average_states(states: list[dict]) -> dict:
    """The mean of several state dicts of one architecture, every floating-point tensor (BatchNorm's
    running statistics too); integer counters from the first."""
    first = states[0]
    for st in states[1:]:
        check_same_weights(first, st, "a soup")
    return {k: torch.stack([st[k].float() for st in states]).mean(0).to(t.dtype) if t.is_floating_point() else t.clone()
            for k, t in first.items()}


def soup_models(paths, data_cfg: dict | None = None, greedy: bool = True, log=print):
    """A model soup (Wortsman et al., "Model soups", ICML 2022): the weight-space mean of models
    trained from one starting point (other seeds, temperatures, schedules) -> (model, meta). `greedy`:
    the models ranked by their selection score (the selection splits of `data_cfg`, default the first
    model's training data: FER+ valid and ExpW valid), each added only if the soup's score does not
    fall; else the uniform mean of all. No test set is looked at."""
    from .ensemble import selection_faces, selection_score
    from .evaluate import predict_probs
    if len(paths) < 2:
        raise ValueError("a soup needs at least two models")
    loaded = [load_model(p) for p in paths]
    first = loaded[0][1]
    for (_, mt), p in zip(loaded[1:], paths[1:]):
        if (mt["arch"], mt["labels"], mt.get("preprocess")) != (first["arch"], first["labels"], first.get("preprocess")):
            raise ValueError(f"{paths[0]} and {p} differ in architecture, labels or input: no soup")
    # copies: scoring loads each candidate into the first model, whose state_dict() would follow it
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m, _ in loaded]
    model = loaded[0][0]
    if data_cfg is None:
        data_cfg = first.get("config", {}).get("data")
        if not data_cfg:
            raise ValueError(f"{paths[0]}: its JSON holds no training config to choose on; give --config")
    valid, imgs = selection_faces(first, data_cfg)

    def score(state) -> float:
        model.load_state_dict(state)
        probs = predict_probs(model.eval(), imgs, first["preprocess"], torch.device("cpu"))
        return selection_score(probs, valid.labels, valid.flags.get("source"))["score"]

    alone = [score(st) for st in states]
    for p, sc in zip(paths, alone):
        log(f"  {str(p):60s} alone: selection {sc:.4f}")
    trials = []  # the greedy soup's tries: (models in it, score)
    if greedy:
        order = sorted(range(len(states)), key=lambda i: -alone[i])
        kept, best = [order[0]], alone[order[0]]
        for i in order[1:]:
            trial = score(average_states([states[j] for j in kept + [i]]))
            trials.append({"with": [str(paths[j]) for j in kept + [i]], "selection": float(trial)})
            log(f"  + {paths[i]}: {trial:.4f} ({'kept' if trial >= best else 'left out'})")
            if trial >= best:
                kept, best = kept + [i], trial
    else:
        kept = list(range(len(states)))
        best = score(average_states(states))
    model.load_state_dict(average_states([states[j] for j in kept]))
    meta = {k: v for k, v in first.items() if k not in ("temperature", "calibration", "exported_from", "dtype", "epoch",
                                                        "valid", "summary")}
    meta["soup"] = {"greedy": bool(greedy), "selection": float(best), "n_valid_faces": int(len(valid)),
                    "ingredients": [{"path": str(p), "selection": float(sc), "kept": i in kept}
                                    for i, (p, sc) in enumerate(zip(paths, alone))],
                    **({"greedy_trials": trials} if greedy else {})}
    log(f"  soup of {len(kept)} of {len(paths)}: selection {best:.4f}")
    return model, meta


def write_soup(paths, out, data_cfg: dict | None = None, greedy: bool = True, log=print) -> dict:
    model, meta = soup_models(paths, data_cfg, greedy, log)
    save_model(out, model, meta)
    return meta


class WeightEMA:
    """An exponential moving average of a model's weights during training (`train.ema: DECAY`, e.g.
    0.998 per optimiser step): after each step the average moves `1 - DECAY` of the way to the
    trained weights, BatchNorm's running statistics too. The average is what an epoch is evaluated,
    selected and saved as; the trained weights travel in the resumable state (`state()` /
    `restore()`), so that --resume continues both. PyTorch's `AveragedModel` does the averaging."""

    def __init__(self, model: torch.nn.Module, decay):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be a decay between 0 and 1 (e.g. 0.998), not {decay!r}")
        self.decay, self.model = float(decay), model
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


def restore_weights(model: torch.nn.Module, ema: WeightEMA | None, saved: dict, st: dict) -> None:
    """A resumed run's weights: the saved ones, or with a WeightEMA the saved average and the trained
    weights from the state. A run and its resume must agree on train.ema (the saved weights of a run
    with it are its average, not what it was training)."""
    if ema is not None:
        ema.restore(saved, st)
    elif "ema_trained_weights" in st:
        raise ValueError("train.ema: the run being resumed was trained with it; resume with the same setting")
    else:
        model.load_state_dict(saved)
