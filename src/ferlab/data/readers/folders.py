"""Class-folder datasets (FER2013 folders, SFEW 2.0, CAER-S, CK+48, any generic one) and generic CSV lists.

A class-folder dataset is ROOT/<split>/<class>/<image> (or ROOT/<class>/<image> for one split).
Split folder names are matched case-insensitively: train/training; val/valid/validation/publictest;
test/privatetest. Class folder names map to canonical labels (Angry, happy, Surprised, ...).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..imageio import IMAGE_SUFFIXES
from .base import DatasetError, SampleList, build_samples, register_dataset

SPLIT_NAMES = {"train": "train", "training": "train", "val": "valid", "valid": "valid", "validation": "valid",
               "publictest": "valid", "test": "test", "privatetest": "test"}


def _images(folder: Path):
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_items(folder: Path, group_fn=None):
    items = []
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        for img in _images(cls):
            items.append((img, cls.name, group_fn(img) if group_fn else None))
    return items


def read_class_folders(root, label_set, split_map: dict | None = None, source="folders", group_fn=None,
                       **_) -> dict[str, SampleList]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    split_map = {k.lower(): v for k, v in (split_map or SPLIT_NAMES).items()}
    split_dirs = {split_map[p.name.lower()]: p for p in subdirs if p.name.lower() in split_map}
    out = {}
    if split_dirs:
        for split, folder in split_dirs.items():
            out[split] = build_samples(_class_items(folder, group_fn), label_set, f"{source}/{split}")
    else:
        out["train"] = build_samples(_class_items(root, group_fn), label_set, f"{source}/train")
    if not any(len(s) for s in out.values()):
        raise DatasetError(f"{root}: no images found in <split>/<class>/ or <class>/ folders")
    return out


@register_dataset("folder")
def read_folder(root, label_set, **kw):
    """Generic class-folder dataset."""
    return read_class_folders(root, label_set, source="folder", **kw)


@register_dataset("fer2013_folders")
def read_fer2013_folders(root, label_set, **kw):
    """The common FER2013 image-folder release: train/<class>/, test/<class>/ (angry, happy, ...)."""
    return read_class_folders(root, label_set, source="fer2013_folders", **kw)


@register_dataset("sfew")
def read_sfew(root, label_set, **kw):
    """SFEW 2.0: Train/<Class>/, Val/<Class>/ (faces from movie frames, aligned by the organisers).
    Test labels were never released, so papers report on Val: it is read as the test split here
    and is never trained or selected on. With ROOT/index.csv (path,label,split,movie) the movie of
    each face is its group, so intervals resample movies (no movie is in both splits)."""
    root = Path(root)
    index = root / "index.csv"
    if not index.is_file():
        return read_class_folders(root, label_set, split_map={"train": "train", "val": "test"}, source="sfew", **kw)
    with open(index, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"path", "label", "split"} <= set(rows[0]):
        raise DatasetError(f"{index}: needs the columns path, label, split (and movie)")
    by_split: dict[str, list] = {}
    for r in rows:
        split = {"train": "train", "valid": "test", "val": "test", "test": "test"}.get(r["split"].strip().lower())
        if split is None:
            raise DatasetError(f"{index}: unknown split {r['split']!r} for {r['path']} (train, valid)")
        by_split.setdefault(split, []).append((root / r["path"], r["label"], r.get("movie") or None))
    return {s: build_samples(items, label_set, f"sfew/{s}") for s, items in by_split.items()}


@register_dataset("caer_s")
def read_caer_s(root, label_set, **kw):
    """CAER-S: train/<Class>/, test/<Class>/ (Anger, Disgust, Fear, Happy, Neutral, Sad, Surprise)."""
    return read_class_folders(root, label_set, source="caer_s", **kw)


@register_dataset("ckplus48")
def read_ckplus48(root, label_set, **kw):
    """CK+48: <class>/S010_004_00000017.png; the subject id is the file name's first field."""
    return read_class_folders(root, label_set, source="ckplus48", group_fn=lambda p: p.name.split("_")[0], **kw)


GROUP_COLUMNS = ("subject", "group", "source_image", "movie")  # whose images are not independent
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")


@register_dataset("csv")
def read_csv_list(root, label_set, csv_file: str = "labels.csv", **_):
    """Generic CSV with a header: path,label[,split][,subject]; paths relative to root (or absolute).
    Without a split column everything is 'train'. Optional: a group column (subject, group,
    source_image or movie: the images of one group stay together when intervals are resampled) and
    the labelled face's box (box_x0, box_y0, box_x1, box_y1 in the image's pixels: the face scored
    or trained on is the detected face that overlaps it most)."""
    root = Path(root)
    path = Path(csv_file) if Path(csv_file).is_absolute() else root / csv_file
    if not path.is_file():
        raise DatasetError(f"{path}: no such CSV list")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{path}: needs a header with 'path' and 'label' columns")
    cols = set(rows[0]) if rows else set()
    group_col = next((c for c in GROUP_COLUMNS if c in cols), None)
    has_box = set(BOX_COLUMNS) <= cols
    by_split: dict[str, list] = {}
    for r in rows:
        split = SPLIT_NAMES.get((r.get("split") or "train").strip().lower(), "train")
        p = Path(r["path"])
        by_split.setdefault(split, []).append((p if p.is_absolute() else root / p, r["label"],
                                               r.get(group_col) if group_col else None, r))
    out = {}
    for split, items in by_split.items():
        flags = {}
        if has_box:
            try:
                flags["box"] = np.array([[float(it[3][c]) if it[3][c] not in ("", None) else float("nan")
                                          for c in BOX_COLUMNS] for it in items], np.float32).reshape(-1, 4)
            except ValueError as e:
                raise DatasetError(f"{path}: a box column holds something that is not a number ({e})") from None
        out[split] = build_samples([it[:3] for it in items], label_set, f"csv/{split}", flags=flags)
    return out
