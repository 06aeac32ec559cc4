"""Adapting a trained model to a user's own labelled faces: the recipe (`fit`) and head surgery.

The faces arrive already aligned by the shipped front end (`app.adapt` does that), so the model
sees them framed as at inference. The recipe is built not to forget what the base model knew on
faces the user did not give:

- `mode`: which weights move. `head` (the classifier only), `last` (the last stage, the model's
  Grad-CAM layer, and the classifier) or `full` (every weight). Batch-norm statistics stay frozen
  at the base's in every mode: a few dozen faces cannot re-estimate them.
- replay (when faces of the base's own kind are at hand, e.g. FER+ train): each step also takes a
  batch of them, and the adapted model is held to the base's predictions on them (distillation at
  temperature 2 over the labels both models share, weight `replay`). Measured on unseen performers
  (benchmarks/adapt.py --recipes), this is what keeps FER+; distilling the base's predictions on
  the user's own faces (`distill`, off by default) held the model to the base's mistakes there and
  kept FER+ no better;
- an L2 pull of every moving weight towards its base value (`l2sp`);
- early stopping on the held-out part's log-loss (less noisy than its accuracy on a few faces),
  checked every `eval_every` steps from step 0 (the base itself), stopping after `patience`
  checks without a better one; the best step's weights are kept;
- the number of steps scaled to the data: about `epochs` passes over the training faces, within
  [`min_steps`, `max_steps`].
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.arrays import standardise
from ..data.augment import augment_batch

MODES = ("head", "last", "full")
AUGMENT = {"flip": True, "rotate": 10, "scale": [0.9, 1.1], "translate": 0.06, "brightness": 0.2, "contrast": 0.2,
           "erasing": 0.0}


@dataclass
class Recipe:
    mode: str = "full"
    lr: float = 3e-4
    weight_decay: float = 0.0
    distill: float = 0.0
    replay: float = 1.0
    l2sp: float = 0.0
    label_smoothing: float = 0.1
    batch_size: int = 32
    epochs: float = 15.0
    min_steps: int = 60
    max_steps: int = 600
    steps: int | None = None  # fixed number of steps (no scaling)
    eval_every: int = 10
    patience: int = 10
    early_stop: bool = True  # False: keep the last step's weights (the held-out part is only reported)
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"adapt mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"adapt steps must be at least 1 (got {self.steps})")

    def n_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return int(min(self.max_steps, max(self.min_steps, math.ceil(self.epochs * n_train / self.batch_size))))

    def as_dict(self) -> dict:
        return asdict(self)


def head_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier's output layer (its module name, the layer)."""
    clf = model.get_classifier()
    layers = [clf] if isinstance(clf, nn.Linear) else [m for m in clf.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{type(model).__name__}: its classifier has no linear output layer to adapt")
    lin = layers[-1]
    name = next(n for n, m in model.named_modules() if m is lin)
    return name, lin


def remap_head(model: nn.Module, old_labels: list[str], new_labels: list[str], seed: int = 0) -> None:
    """Give the model an output per name of `new_labels`: a row the base had is copied, a new name
    starts from small random weights (and a bias that makes it rare until trained)."""
    name, lin = head_linear(model)
    g = torch.Generator().manual_seed(seed)
    new = nn.Linear(lin.in_features, len(new_labels), bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(torch.randn(new.weight.shape, generator=g) * 0.01)
        if new.bias is not None:
            new.bias.fill_(float(lin.bias.min()) if lin.bias is not None else 0.0)
        for i, lab in enumerate(new_labels):
            if lab in old_labels:
                j = old_labels.index(lab)
                new.weight[i] = lin.weight[j]
                if new.bias is not None:
                    new.bias[i] = lin.bias[j]
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], new)
    model.num_classes = len(new_labels)


def trainable(model: nn.Module, mode: str) -> list[nn.Parameter]:
    """The parameters `mode` moves (the rest are frozen)."""
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    if mode != "full":
        parts = [model.get_classifier()]
        if mode == "last":
            if not hasattr(model, "gradcam_layer"):
                raise ValueError(f"{type(model).__name__}: mode 'last' needs a model that names its last stage")
            parts.append(model.gradcam_layer())
        for part in parts:
            for p in part.parameters():
                p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _train_mode_frozen_bn(model: nn.Module) -> None:
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _logits(model, x_u8: torch.Tensor, norm: dict, batch: int = 256) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            out.append(model(standardise(x_u8[i:i + batch].float() / 255.0, norm)).float())
    return torch.cat(out) if out else torch.zeros(0)


def fit(model: nn.Module, base: nn.Module, norm: dict, train_u8: np.ndarray, train_y: np.ndarray,
        valid_u8: np.ndarray, valid_y: np.ndarray, shared: list[tuple[int, int]], recipe: Recipe,
        replay_u8: np.ndarray | None = None, progress: bool = True, log=print) -> dict:
    """Adapt `model` (already given its output labels) in place. `train_y`/`valid_y`: indices into
    the model's outputs; `shared`: (model output, base output) pairs of the labels both have, for
    distillation; `replay_u8`: faces of the base's own kind, at the model's input (or None).
    Returns the history (held-out log-loss and accuracy per check, the step chosen)."""
    torch.manual_seed(recipe.seed)
    g = torch.Generator().manual_seed(recipe.seed)
    params = trainable(model, recipe.mode)
    anchors = [p.detach().clone() for p in params]
    head_w = head_linear(model)[1].weight
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.n_steps(len(train_u8))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.1)
    xt, yt = torch.from_numpy(train_u8), torch.from_numpy(train_y).long()
    xv, yv = torch.from_numpy(valid_u8), torch.from_numpy(valid_y).long()
    mo = torch.tensor([m for m, _ in shared], dtype=torch.long)
    bo = torch.tensor([b for _, b in shared], dtype=torch.long)
    base.eval()

    def check(step):
        model.eval()
        lv = _logits(model, xv, norm)
        nll = float(F.cross_entropy(lv, yv)) if len(yv) else 0.0
        acc = float((lv.argmax(1) == yv).float().mean()) if len(yv) else 0.0
        return {"step": step, "valid_log_loss": round(nll, 5), "valid_accuracy": round(acc, 5)}

    history = [check(0)]
    best, best_state, stale = history[0], copy.deepcopy(model.state_dict()), 0
    from tqdm import tqdm
    bar = tqdm(total=steps, desc=f"adapting ({recipe.mode})", unit="step", disable=not progress, leave=False)
    order, pos = torch.randperm(len(xt), generator=g), 0
    for step in range(1, steps + 1):
        if pos + recipe.batch_size > len(order):
            order, pos = torch.randperm(len(xt), generator=g), 0
        idx = order[pos:pos + recipe.batch_size]
        pos += recipe.batch_size
        x = augment_batch(xt[idx].float() / 255.0, AUGMENT, g)
        x = standardise(x, norm)
        _train_mode_frozen_bn(model)
        logits = model(x).float()
        loss = F.cross_entropy(logits, yt[idx], label_smoothing=recipe.label_smoothing)
        if recipe.distill and len(shared):
            with torch.no_grad():
                target = F.softmax(base(x).float()[:, bo] / 2.0, 1)
            loss = loss + recipe.distill * 4.0 * F.kl_div(F.log_softmax(logits[:, mo] / 2.0, 1), target,
                                                          reduction="batchmean")
        if replay_u8 is not None and len(replay_u8) and recipe.replay and len(shared):
            r_idx = torch.randint(len(replay_u8), (recipe.batch_size,), generator=g)
            xr = standardise(augment_batch(torch.from_numpy(replay_u8[r_idx.numpy()]).float() / 255.0, AUGMENT, g), norm)
            with torch.no_grad():
                target = F.softmax(base(xr).float()[:, bo] / 2.0, 1)
            loss = loss + recipe.replay * 4.0 * F.kl_div(F.log_softmax(model(xr).float()[:, mo] / 2.0, 1), target,
                                                         reduction="batchmean")
        if recipe.l2sp:
            pull = sum(((p - a) ** 2).sum() for p, a in zip(params, anchors) if p is not head_w
                       and p.shape == a.shape)
            loss = loss + recipe.l2sp * pull
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
        if step % recipe.eval_every == 0 or step == steps:
            rec = check(step)
            rec["train_loss"] = round(float(loss.detach()), 5)
            history.append(rec)
            if not recipe.early_stop or rec["valid_log_loss"] < best["valid_log_loss"] - 1e-4:
                best, best_state, stale = rec, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if recipe.early_stop and stale >= recipe.patience:
                    break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"steps_planned": steps, "steps_run": history[-1]["step"], "best_step": best["step"], "history": history}
