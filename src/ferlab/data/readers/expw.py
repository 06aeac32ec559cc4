"""ExpW (Expression in-the-Wild) as face-with-context crops: ROOT/images/<photo>_<face>.jpg and
ROOT/index.csv (path, label, split, source_image, face_id, box_x0..box_y1, box_confidence).

Each image is a photo to run the face front end on, not an aligned crop: it can show other people,
so the labelled face's box travels with it in `flags["box"]` (x0, y0, x1, y1 in the image's
pixels) and the face scored or trained on is the detected face that overlaps that box most.
Splits are by source photo (train / valid / test as the index gives them); `groups` holds the
source photo, so intervals resample photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, build_samples, read_index, register_dataset

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
SPLITS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}


@register_dataset("expw")
def read_expw(root, label_set, **_):
    root = Path(root)
    index = root / "index.csv"
    rows = read_index(index, {"path", "label", "split", "source_image", *BOX_COLUMNS},
                      "expw needs ROOT/index.csv beside ROOT/images/")
    by_split: dict[str, list] = {}
    for r in rows:
        split = SPLITS.get(r["split"].strip().lower())
        if split is None:
            raise DatasetError(f"{index}: unknown split {r['split']!r} for {r['path']} (train, valid, test)")
        by_split.setdefault(split, []).append(r)
    out = {}
    for split, rs in by_split.items():
        try:
            boxes = np.array([[float(r[c]) for c in BOX_COLUMNS] for r in rs], np.float32).reshape(-1, 4)
        except ValueError as e:
            raise DatasetError(f"{index}: a box column holds something that is not a number ({e})") from None
        out[split] = build_samples([(root / r["path"], r["label"], r["source_image"]) for r in rs], label_set,
                                   f"expw/{split}", flags={"box": boxes})
    return out
