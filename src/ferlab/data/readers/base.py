"""What every dataset reader returns: a `SampleList` per split, plus a report of skipped items."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..labels import UnknownLabelError, canonical_name, index_map

DATASET_READERS: dict[str, Callable] = {}


def register_dataset(name: str):
    def deco(fn):
        DATASET_READERS[name] = fn
        return fn
    return deco


class DatasetError(ValueError):
    """A dataset folder or file that cannot be read; the message says what is wrong."""


@dataclasses.dataclass
class SampleList:
    """One split of a dataset: image paths with canonical labels and optional soft targets.

    `targets` holds one distribution per sample over `label_set` (one-hot for hard labels; FER+
    vote distributions in its probability / cross-entropy modes). `labels` is the hard label
    used for evaluation. `groups` holds subject ids where a dataset has them (CK+, JAFFE).
    """
    paths: list[Path]
    labels: np.ndarray
    label_set: tuple[str, ...]
    targets: np.ndarray | None = None
    groups: list[str] | None = None
    flags: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.targets is None:
            self.targets = np.eye(len(self.label_set), dtype=np.float32)[self.labels] if len(self.labels) \
                else np.zeros((0, len(self.label_set)), np.float32)

    def subset(self, idx) -> "SampleList":
        idx = np.asarray(idx, dtype=np.int64)
        return SampleList(
            paths=[self.paths[i] for i in idx], labels=self.labels[idx], label_set=self.label_set,
            targets=self.targets[idx], groups=None if self.groups is None else [self.groups[i] for i in idx],
            flags={k: v[idx] for k, v in self.flags.items()}, skipped=list(self.skipped), source=self.source)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_set))
        return {name: int(c) for name, c in zip(self.label_set, counts)}


def build_samples(items: Sequence[tuple[Path, str, str | None]], label_set: Sequence[str], source: str,
                  check_files: bool = True, flags: dict[str, np.ndarray] | None = None) -> SampleList:
    """Turn (path, raw label name, group) triples into a SampleList.

    Items whose file is missing or whose label is unknown or outside `label_set` are skipped and
    listed in `skipped` with the reason; the rest are kept. `flags`: per-item arrays (one row per
    item, e.g. a labelled face's box), kept for the kept items.
    """
    label_set = tuple(label_set)
    lut = index_map(label_set)
    paths, labels, groups, skipped, kept = [], [], [], [], []
    for row, (path, raw, group) in enumerate(items):
        try:
            name = canonical_name(raw)
        except UnknownLabelError as e:
            skipped.append((str(path), str(e)))
            continue
        if name not in lut:
            skipped.append((str(path), f"label {name!r} is not in this label set"))
            continue
        if check_files and not Path(path).is_file():
            skipped.append((str(path), "missing file"))
            continue
        paths.append(Path(path))
        labels.append(lut[name])
        groups.append(group)
        kept.append(row)
    has_groups = any(g is not None for g in groups)
    return SampleList(paths=paths, labels=np.asarray(labels, np.int64), label_set=label_set,
                      groups=[str(g) for g in groups] if has_groups else None, skipped=skipped, source=source,
                      flags={k: np.asarray(v)[np.asarray(kept, np.int64)] for k, v in (flags or {}).items()})


def read_index(index: Path, need, what: str) -> list[dict]:
    """The rows of a dataset's index CSV, which must exist and hold the columns `need`; `what` says
    what the dataset needs, for the error message."""
    if not Path(index).is_file():
        raise DatasetError(f"{index}: no such file ({what})")
    with open(index, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not set(need) <= set(rows[0]):
        raise DatasetError(f"{index}: needs the columns {', '.join(sorted(need))}")
    return rows
