"""Splits: stratified hold-out, subject-independent k-fold (CK+, JAFFE), Monte-Carlo CV (paper 000)."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit, train_test_split

from .readers.base import SampleList


def stratified_holdout(s: SampleList, fraction: float, seed: int = 0) -> tuple[SampleList, SampleList]:
    idx = np.arange(len(s))
    counts = np.bincount(s.labels)
    n_classes, n_held = int((counts > 0).sum()), int(np.ceil(fraction * len(s)))
    # stratify where every class can give one sample to each side (small sets: a plain random split)
    strat = s.labels if counts[counts > 0].min() >= 2 and n_classes <= min(n_held, len(s) - n_held) else None
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    return s.subset(np.sort(tr)), s.subset(np.sort(va))


def subject_kfold(s: SampleList, k: int = 10, seed: int = 0):
    """Yield (train, test) SampleLists with no subject in both (needs `groups`)."""
    if s.groups is None:
        raise ValueError(f"{s.source}: subject-independent folds need subject ids (groups)")
    n_subjects = len(set(s.groups))
    if n_subjects < k:
        raise ValueError(f"{s.source}: {n_subjects} subjects cannot make {k} subject-independent folds")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, te in cv.split(np.zeros(len(s)), s.labels, groups=s.groups):
        yield s.subset(tr), s.subset(te)


def monte_carlo_splits(s: SampleList, repeats: int = 5, test_fraction: float = 0.2, seed: int = 0):
    """Repeated random stratified splits (Monte-Carlo cross-validation, as paper 000 reports)."""
    cv = StratifiedShuffleSplit(n_splits=repeats, test_size=test_fraction, random_state=seed)
    for tr, te in cv.split(np.zeros(len(s)), s.labels):
        yield s.subset(tr), s.subset(te)


def merge(parts: list[SampleList]) -> SampleList:
    """Concatenate SampleLists that share a label set."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("nothing to merge")
    ls = parts[0].label_set
    if any(p.label_set != ls for p in parts):
        raise ValueError("cannot merge SampleLists with different label sets")
    groups = None
    if all(p.groups is not None for p in parts):
        groups = [g for p in parts for g in p.groups]
    keys = list(dict.fromkeys(k for p in parts for k in p.flags))
    flags = {k: np.concatenate([p.flags[k] if k in p.flags else _missing_flag(next(q.flags[k] for q in parts
                                                                                  if k in q.flags), len(p))
                                for p in parts]) for k in keys}
    return SampleList(paths=[x for p in parts for x in p.paths], labels=np.concatenate([p.labels for p in parts]),
                      label_set=ls, targets=np.concatenate([p.targets for p in parts]), groups=groups, flags=flags,
                      skipped=[x for p in parts for x in p.skipped], source="+".join(p.source for p in parts))


def _missing_flag(like: np.ndarray, n: int) -> np.ndarray:
    """The value of a flag for samples of a part that lacks it: False, NaN or '' (shaped like `like`)."""
    shape = (n, *like.shape[1:])
    if like.dtype == bool:
        return np.zeros(shape, bool)
    if np.issubdtype(like.dtype, np.floating):
        return np.full(shape, np.nan, like.dtype)
    if np.issubdtype(like.dtype, np.integer):
        return np.full(shape, -1, like.dtype)
    return np.full(shape, "", like.dtype)
