"""The metrics the five papers report, from scikit-learn, plus report files and bootstrap intervals."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true, y_pred, label_set: Sequence[str]) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(label_set)))
    present = sorted(set(y_true.tolist()))
    out = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0}
    if not len(y_true):
        return out
    # mean class accuracy = mean recall over the classes present in y_true
    out["mean_class_accuracy"] = float(balanced_accuracy_score(y_true, y_pred)) if len(present) > 1 else \
        out["accuracy"]
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                               "support": int(s[i])} for i, name in enumerate(label_set)}
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def expected_calibration_error(confidence, correct, bins: int = 15) -> float:
    """Expected calibration error: the mean, over equal-width confidence bins weighted by their
    share of samples, of |accuracy - mean confidence| (top-label confidence; 15 bins as in Guo et
    al. 2017). 0 for a perfectly calibrated model; NaN for no samples."""
    conf = np.asarray(confidence, np.float64).reshape(-1)
    ok = np.asarray(correct, np.float64).reshape(-1)
    if not len(conf):
        return float("nan")
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(ok[m].mean() - conf[m].mean())
    return float(ece)


def write_confusion(cm, label_set, out_prefix: Path, title: str = "", cols=None) -> None:
    """A confusion matrix as CSV + PNG; `cols`: predicted classes when they differ from the true
    ones (label_set), e.g. a model's 8 classes plus "no face" against a dataset's 7."""
    out_prefix = Path(out_prefix)
    cols = list(label_set) if cols is None else list(cols)
    with open(out_prefix.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ pred", *cols])
        for name, row in zip(label_set, cm):
            w.writerow([name, *row])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm, dtype=float)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(6.4 * max(1.0, len(cols) / len(label_set)), 5.6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(label_set)), label_set)
    for i in range(len(label_set)):
        for j in range(len(cols)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(out_prefix.with_suffix(".png"), dpi=110)
    plt.close(fig)


def write_predictions(path: Path, names, y_true, probs, label_set, flags: dict | None = None) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        extra = sorted(k for k, v in (flags or {}).items() if np.asarray(v).ndim == 1)  # per-image columns
        w.writerow(["image", "true", "pred", *extra, *[f"p_{n}" for n in label_set]])
        for i, name in enumerate(names):
            pred = int(np.argmax(probs[i]))
            w.writerow([name, label_set[int(y_true[i])], label_set[pred], *[flags[k][i] if flags[k].dtype.kind in 'US' else int(flags[k][i]) for k in extra],
                        *[f"{p:.5f}" for p in probs[i]]])


def write_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def score(true: np.ndarray, pred: np.ndarray, classes: list[int]) -> dict:
    """Accuracy and macro recall over `classes` (true labels as class indices; pred may be -1)."""
    out = {"n": int(len(true)), "accuracy": float(np.mean(true == pred)) if len(true) else 0.0}
    rec = {c: float(np.mean(pred[true == c] == c)) for c in classes if (true == c).any()}
    out["macro_recall"] = float(np.mean(list(rec.values()))) if rec else 0.0
    out["recall"] = rec
    return out


def bootstrap(true, pred, classes, groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """95 % percentile intervals of accuracy and macro recall; resamples groups (subjects) when
    given, with all of a group's images, else images."""
    rng = np.random.RandomState(seed)
    if groups is not None:
        ids = sorted(set(groups))
        members = {g: np.flatnonzero(np.asarray(groups) == g) for g in ids}
    acc, mr = [], []
    for _ in range(n_boot):
        if groups is not None:
            pick = np.concatenate([members[ids[i]] for i in rng.randint(len(ids), size=len(ids))])
        else:
            pick = rng.randint(len(true), size=len(true))
        s = score(true[pick], pred[pick], classes)
        acc.append(s["accuracy"])
        mr.append(s["macro_recall"])
    return {"resampled": "subjects" if groups is not None else "images", "n_boot": n_boot,
            "accuracy_95": np.percentile(acc, [2.5, 97.5]).round(4).tolist(),
            "macro_recall_95": np.percentile(mr, [2.5, 97.5]).round(4).tolist()}
