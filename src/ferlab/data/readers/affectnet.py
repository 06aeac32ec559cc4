"""AffectNet, in both releases.

- Original: Manually_Annotated_file_lists/{training,validation}.csv (subDirectory_filePath, face box,
  landmarks, expression, valence, arousal) with images under Manually_Annotated_Images/.
- Newer: train_set/ and val_set/, each with images/N.jpg and annotations/N_exp.npy.
Codes 0-7 from neutral (8 none, 9 uncertain, 10 no-face are not expressions: dropped and counted).
7 or 8 classes follow the config's label set (basic7 drops contempt). The official validation set is
the test split papers report on; model selection uses a hold-out of train.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..labels import AFFECTNET_CODES
from .base import DatasetError, build_samples, register_dataset


def _label(code):
    return AFFECTNET_CODES.get(int(code))


@register_dataset("affectnet")
def read_affectnet(root, label_set, **_):
    root = Path(root)
    lists = root / "Manually_Annotated_file_lists"
    if lists.is_dir():
        return _read_csv_release(root, lists, label_set)
    if (root / "train_set").is_dir() or (root / "val_set").is_dir():
        return _read_npy_release(root, label_set)
    raise DatasetError(f"{root}: neither Manually_Annotated_file_lists/ nor train_set/ + val_set/ found")


def _finish(items, skipped, label_set):
    out = {s: build_samples(v, label_set, f"affectnet/{s}") for s, v in items.items()}
    for s in out.values():
        if skipped:
            s.skipped.append(("affectnet", f"{skipped} rows with codes 8-10 (none/uncertain/no-face) left out"))
    return out


def _read_csv_release(root, lists, label_set):
    img_root = root / "Manually_Annotated_Images"
    items, dropped = {}, 0
    for fname, split in (("training.csv", "train"), ("validation.csv", "test")):
        path = lists / fname
        if not path.is_file():
            continue
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                lab = _label(row["expression"])
                if lab is None:
                    dropped += 1
                    continue
                items.setdefault(split, []).append((img_root / row["subDirectory_filePath"], lab, None))
    return _finish(items, dropped, label_set)


def _read_npy_release(root, label_set):
    items, dropped = {}, 0
    for folder, split in (("train_set", "train"), ("val_set", "test")):
        ann = root / folder / "annotations"
        if not ann.is_dir():
            continue
        for f in sorted(ann.glob("*_exp.npy")):
            idx = f.name[: -len("_exp.npy")]
            code = np.load(f, allow_pickle=False)
            lab = _label(int(np.asarray(code).astype(str).item()) if np.asarray(code).dtype.kind in "US"
                         else int(np.asarray(code).item()))
            if lab is None:
                dropped += 1
                continue
            items.setdefault(split, []).append((root / folder / "images" / f"{idx}.jpg", lab, None))
    return _finish(items, dropped, label_set)
