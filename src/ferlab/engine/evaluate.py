"""Evaluation of a saved model on a dataset split: metrics JSON, per-image predictions CSV,
confusion matrix CSV + PNG. For FER+ test, accuracy is also given on the de-duplicated subset
(test images with no pixel-identical copy in Train/Valid)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.arrays import load_splits, restrict_labels, standardise
from ..models import model_args, needs_landmarks
from .checkpoint import load_model
from .inputs import model_input_images, model_input_landmarks
from .metrics import classification_metrics, expected_calibration_error, write_confusion, write_json, write_predictions


def normalise(x_u8: torch.Tensor, norm: dict) -> torch.Tensor:
    return standardise(x_u8.float() / 255.0, norm)


@torch.no_grad()
def predict_logits(model, images_u8: np.ndarray, norm: dict, device, batch_size=256, amp=None,
                   landmarks: np.ndarray | None = None) -> np.ndarray:
    """Class logits of uint8 (N, C, S, S) images; `landmarks` ((N, 68, 2) in pixels of the images)
    for models that need them."""
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = normalise(torch.from_numpy(images_u8[i:i + batch_size]).to(device), norm)
        lm = None if landmarks is None else landmarks[i:i + batch_size]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(*model_args(model, x, lm))
        out.append(logits.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def predict_probs(model, images_u8: np.ndarray, norm: dict, device, batch_size=256, amp=None,
                  landmarks: np.ndarray | None = None, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities (softmax of the logits / `temperature`) of uint8 (N, C, S, S) images."""
    logits = predict_logits(model, images_u8, norm, device, batch_size, amp, landmarks)
    if not len(logits):
        return np.zeros((0, 0), np.float32)
    return torch.softmax(torch.from_numpy(logits) / float(temperature), 1).numpy()


def evaluate_checkpoint_on_split(ckpt, samples, images_u8=None, out_prefix=None, device=None,
                                 landmarks=None) -> dict:
    device = device or torch.device("cpu")
    model, meta = load_model(ckpt, device)
    pre = meta["preprocess"]
    labels = tuple(meta["labels"])
    samples = restrict_labels(samples, labels)
    want_landmarks = needs_landmarks(model) and landmarks is None
    if images_u8 is None or len(images_u8) != len(samples):
        images_u8, ok = model_input_images(samples, pre["img_size"], pre["channels"], pre.get("framing", "fer2013"))
        if want_landmarks:  # of every sample (the caches' keys), then of the faces kept
            landmarks = model_input_landmarks(samples, pre["img_size"])
        keep = np.flatnonzero(ok)
        samples, images_u8 = samples.subset(keep), images_u8[keep]
        landmarks = None if landmarks is None else landmarks[keep]
    elif want_landmarks:
        landmarks = model_input_landmarks(samples, pre["img_size"])
    # reported numbers come from float32 inference, as users run the model (no autocast)
    probs = predict_probs(model, images_u8, pre, device, 256, None, landmarks, float(meta.get("temperature", 1.0)))
    y, pred = samples.labels, probs.argmax(1)
    m = classification_metrics(y, pred, labels)
    m["ece"] = expected_calibration_error(probs.max(1), pred == y) if len(y) else float("nan")
    for flag, mask in samples.flags.items():
        if mask.dtype == bool and mask.any():
            sub = classification_metrics(y[~mask], pred[~mask], labels)
            m[f"without_{flag}"] = {k: v for k, v in sub.items() if not isinstance(v, (dict, list))}
            m[f"n_{flag}"] = int(mask.sum())
    src = samples.flags.get("source")
    if src is not None:  # hybrid datasets: the same metrics per source dataset
        m["per_source"] = {}
        for name in dict.fromkeys(src.tolist()):
            sel = src == name
            m["per_source"][name] = {k: v for k, v in classification_metrics(y[sel], pred[sel], labels).items()
                                     if not isinstance(v, (dict, list))}
            m["per_source"][name]["ece"] = expected_calibration_error(probs[sel].max(1), pred[sel] == y[sel])
    m["skipped"] = [list(s) for s in samples.skipped]
    if out_prefix is not None:
        out_prefix = Path(out_prefix)
        out_prefix.parent.mkdir(parents=True, exist_ok=True)
        write_json(out_prefix.with_name(out_prefix.name + "_metrics.json"), m)
        write_predictions(out_prefix.with_name(out_prefix.name + "_predictions.csv"),
                          [p.name for p in samples.paths], y, probs, labels, samples.flags)
        write_confusion(m["confusion_matrix"], labels, out_prefix.with_name(out_prefix.name + "_confusion"))
    return m


def evaluate(ckpt, data_cfg: dict, split: str = "test", out_prefix=None) -> dict:
    splits = load_splits(data_cfg)
    if split not in splits:
        raise ValueError(f"split {split!r} not in dataset (has {', '.join(splits)})")
    return evaluate_checkpoint_on_split(ckpt, splits[split], None, out_prefix)
