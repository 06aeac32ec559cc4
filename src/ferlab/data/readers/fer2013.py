"""FER2013 (Goodfellow et al. 2013): the original fer2013.csv (emotion, pixels, Usage).

Rows are decoded once into 48x48 PNGs in ferlab's cache so the rest of the pipeline reads files.
Usage: Training -> train, PublicTest -> valid, PrivateTest -> test. Codes 0-6 from angry.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ..cache import cache_dir, fingerprint
from ..labels import FER2013_CODES
from .base import DatasetError, build_samples, register_dataset

USAGE = {"training": "train", "publictest": "valid", "privatetest": "test"}


@register_dataset("fer2013")
def read_fer2013(root, label_set, csv_file: str = "fer2013.csv", **_):
    root = Path(root)
    path = root / csv_file if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(f"{path}: no fer2013.csv (columns emotion, pixels, Usage)")
    out_dir = cache_dir() / f"fer2013-{fingerprint('fer2013csv', [path])}"
    out_dir.mkdir(parents=True, exist_ok=True)
    items: dict[str, list] = {}
    skipped = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"emotion", "pixels"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: needs columns emotion, pixels (and Usage)")
        for i, row in enumerate(reader):
            img_path = out_dir / f"{i:05d}.png"
            try:
                code = int(row["emotion"])
                label = FER2013_CODES[code]
            except (ValueError, KeyError):
                skipped.append((f"{path}:row {i + 2}", f"unknown emotion code {row.get('emotion')!r}"))
                continue
            if not img_path.is_file():
                try:
                    px = np.array(row["pixels"].split(), dtype=np.uint8)
                    side = int(round(np.sqrt(px.size)))
                    if side * side != px.size or side == 0:
                        raise ValueError
                except ValueError:
                    skipped.append((f"{path}:row {i + 2}", "pixels are not a square gray image"))
                    continue
                Image.fromarray(px.reshape(side, side), mode="L").save(img_path)
            split = USAGE.get((row.get("Usage") or "Training").strip().lower(), "train")
            items.setdefault(split, []).append((img_path, label, None))
    out = {s: build_samples(v, label_set, f"fer2013/{s}") for s, v in items.items()}
    for s in out.values():
        s.skipped.extend(skipped)
    return out
