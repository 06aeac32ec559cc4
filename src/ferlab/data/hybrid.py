"""Hybrid datasets and class balancing (paper 002): several datasets merged into one training set on
one label set, hold-out sets with equal counts per class, and minority classes filled up with
augmented copies made on the fly.

Config (data section)::

    dataset: hybrid
    labels: fer8                  # every source is mapped onto this label set
    sources:                      # any of the pipeline's datasets, each with its own options
      - {dataset: fer2013, root: /data/fer2013}
      - {dataset: ckplus, root: /data/CK+}
      - {dataset: affectnet, root: /data/AffectNet}
    holdout_per_class: 500        # valid and test: at most N per class, equal where possible ("min": the
                                  # smallest class count); works for a single dataset too
    balance_by_augmentation: true # train: generated copies up to the largest class's count

Each sample keeps its source in ``flags["source"]``, so reports and evaluation can split by source.
Splits a source lacks are left to the others (CK+ has no official test split: its images go to train,
with a stratified valid split carved out of them, as for every dataset without one).
"""
from __future__ import annotations

import numpy as np

from .readers import DatasetError, SampleList

# the paper's balancing augmentation for generated copies: rotation up to 10 degrees, RandomAutocontrast
# (applied on top of the recipe's own augmentation; everything else off)
BALANCE_AUGMENT = {"flip": False, "rotate": 10.0, "scale": None, "translate": 0.0, "brightness": 0.0,
                   "contrast": 0.0, "autocontrast": 0.5, "erasing": 0.0}


def merge_sources(per_source: list[tuple[str, dict[str, SampleList]]]) -> dict[str, SampleList]:
    """{split: merged SampleList} from [(source name, {split: SampleList})]; tags flags['source']."""
    from .splits import merge
    out = {}
    for split in ("train", "valid", "test"):
        parts = []
        for name, splits in per_source:
            if split in splits and len(splits[split]):
                s = splits[split]
                s.flags = {**s.flags, "source": np.array([name] * len(s))}
                s.source = name
                parts.append(s)
        if parts:
            out[split] = merge(parts)
    if "train" not in out:
        raise DatasetError("hybrid dataset: no source has any training images")
    return out


def source_names(sources: list[dict]) -> list[str]:
    """Unique display names for the sources: their dataset names, numbered when repeated."""
    names, seen = [], {}
    for src in sources:
        base = str(src.get("name") or src.get("dataset"))
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def balanced_holdout(s: SampleList, per_class, seed: int = 0) -> SampleList:
    """At most `per_class` samples of each class (`"min"`: the smallest present class count), drawn
    with a fixed seed; classes with fewer samples keep all of theirs."""
    counts = np.bincount(s.labels, minlength=len(s.label_set))
    if per_class == "min":
        k = int(counts[counts > 0].min())
    elif isinstance(per_class, int) and not isinstance(per_class, bool) and per_class >= 1:
        k = per_class
    else:
        raise DatasetError(f"holdout_per_class must be a positive whole number or 'min', not {per_class!r}")
    rng = np.random.RandomState(seed)
    keep = []
    for c in range(len(s.label_set)):
        idx = np.flatnonzero(s.labels == c)
        keep.append(idx if len(idx) <= k else rng.choice(idx, k, replace=False))
    return s.subset(np.sort(np.concatenate(keep)))


def balance_plan(labels: np.ndarray, num_classes: int, seed: int = 0, target=None) -> np.ndarray:
    """Source indices of the generated copies that bring every present class up to `target` samples
    (default: the largest class's count). Each copy re-uses a real image of its class (cycling
    through them in a seeded order, so every image is copied about equally often); the copy's
    augmentation is drawn anew every epoch, so nothing is written to disk."""
    counts = np.bincount(labels, minlength=num_classes)
    if target in (None, "max"):
        target = int(counts.max())
    elif not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise DatasetError(f"balance_target must be a positive whole number or 'max', not {target!r}")
    rng = np.random.RandomState(seed)
    copies = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        need = target - len(idx)
        if len(idx) == 0 or need <= 0:
            continue
        cycle = np.concatenate([rng.permutation(idx) for _ in range(need // len(idx) + 1)])
        copies.append(cycle[:need])
    return np.sort(np.concatenate(copies)) if copies else np.zeros(0, np.int64)


def composition(s: SampleList) -> dict:
    """Per-source and per-class counts of one split (the paper's Fig. 2 statistics)."""
    report = {"total": s.class_counts()}
    src = s.flags.get("source")
    if src is not None:
        for name in dict.fromkeys(src.tolist()):
            report[name] = s.subset(np.flatnonzero(src == name)).class_counts()
    return report
