"""Confidence that means something: one temperature per model, fitted on its selection splits.

A network trained with cross-entropy is usually over-confident: among faces it calls 99 % sure, far
fewer than 99 % are right. With several sources in the valid split (FER+ and ExpW), each source
counts the same in the fit, as in model selection, so the many FER+ faces do not drown the rest. Temperature scaling (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017) divides the logits by one number T > 0 chosen to minimise the negative log-
likelihood on held-out faces; the predicted class never changes, only how sure the model says it is.
T is stored in the model's JSON (`temperature`) and applied wherever ferlab turns logits into
probabilities (the analyser, `predict`, `video`, `serve`, evaluation).

    ferlab calibrate MODEL [--config CONFIG]   # the valid split of the model's own training data
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax

from ..data.arrays import load_splits, restrict_labels
from ..data.cache import atomic_write_bytes
from .checkpoint import load_meta, load_model
from .evaluate import predict_logits
from ..models import needs_landmarks
from .inputs import model_input_images, model_input_landmarks
from .metrics import expected_calibration_error


def fit_temperature(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The T > 0 minimising the (weighted) mean negative log-likelihood of softmax(logits / T) (a
    search on log T: the loss is smooth and has one minimum)."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    if len(z) == 0:
        raise ValueError("no samples to fit a temperature on")
    w = torch.ones(len(z), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(z / log_t.exp(), y, reduction="none") * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """NLL and ECE before (T = 1) and after (T = temperature)."""
    out = {}
    for name, t in (("before", 1.0), ("after", temperature)):
        p = softmax(np.asarray(logits, np.float64) / t, axis=1)
        nll = float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))))
        out[name] = {"temperature": t, "nll": nll,
                     "ece": expected_calibration_error(p.max(1), p.argmax(1) == labels)}
    return out


def selection_split(data_cfg: dict):
    """The valid split a model was selected on (FER+ by its majority labels), for calibration."""
    cfg = copy.deepcopy(data_cfg)
    cfg["label_mode"] = "majority"
    for src in cfg.get("sources", []) or []:
        if isinstance(src, dict) and "label_mode" in src:
            src["label_mode"] = "majority"
    splits = load_splits(cfg)
    if "valid" not in splits:
        raise ValueError("the data has no valid split to calibrate on")
    return splits["valid"]


def calibrate(model_path, data_cfg: dict | None = None, write: bool = True, log=print) -> dict:
    """Fit the temperature of the model at `model_path` (PATH.safetensors + PATH.json) on the valid
    split of `data_cfg` (default: the data of its own training config) and, with `write`, store it
    in PATH.json (atomically). Returns the report."""
    model, meta = load_model(model_path)
    if data_cfg is None:
        data_cfg = meta.get("config", {}).get("data")
        if not data_cfg:
            raise ValueError(f"{model_path}: its JSON holds no training config; give --config")
    pre = meta["preprocess"]
    valid = restrict_labels(selection_split(data_cfg), tuple(meta["labels"]))
    imgs, ok = model_input_images(valid, pre["img_size"], pre["channels"], pre.get("framing", "fer2013"))
    keep = np.flatnonzero(ok)
    valid, imgs = valid.subset(keep), imgs[keep]
    points = model_input_landmarks(valid, pre["img_size"]) if needs_landmarks(model) else None
    logits = predict_logits(model, imgs, pre, torch.device("cpu"), landmarks=points)
    src = valid.flags.get("source")
    weights = None
    if src is not None:  # several sources: each counts the same, as in model selection
        names, inverse, counts = np.unique(src, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
    t = fit_temperature(logits, valid.labels, weights)
    report = {"n": int(len(valid)), "source": valid.source, "sources_weighted_equally": src is not None,
              **calibration_report(logits, valid.labels, t)}
    if src is not None:
        report["per_source"] = {n: calibration_report(logits[src == n], valid.labels[src == n], t)
                                for n in dict.fromkeys(src.tolist())}
    log(f"temperature {t:.3f} on {len(valid)} valid faces: ECE {report['before']['ece']:.4f} -> "
        f"{report['after']['ece']:.4f}, NLL {report['before']['nll']:.4f} -> {report['after']['nll']:.4f}")
    if write:
        meta = load_meta(model_path)
        meta["temperature"] = t
        meta["calibration"] = report
        atomic_write_bytes(Path(model_path).with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())
    return report
