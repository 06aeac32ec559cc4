"""RAF-DB basic: EmoLabel/list_patition_label.txt ("train_00001.jpg 5") and Image/aligned/
(train_00001_aligned.jpg). Codes 1-7 from surprise. Official train/test; valid is held out of train."""
from __future__ import annotations

from pathlib import Path

from ..labels import RAFDB_CODES
from .base import DatasetError, build_samples, register_dataset


@register_dataset("rafdb")
def read_rafdb(root, label_set, aligned: bool = True, **_):
    root = Path(root)
    lst = root / "EmoLabel" / "list_patition_label.txt"
    if not lst.is_file():
        raise DatasetError(f"{lst}: missing; is {root} the RAF-DB 'basic' folder?")
    img_dir = root / "Image" / ("aligned" if aligned else "original")
    items: dict[str, list] = {}
    skipped = []
    for n, line in enumerate(lst.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            skipped.append((f"{lst}:{n}", "line is not 'name code'"))
            continue
        name, code = parts
        try:
            label = RAFDB_CODES[int(code)]
        except (ValueError, KeyError):
            skipped.append((f"{lst}:{n}", f"unknown RAF-DB code {code!r}"))
            continue
        stem = Path(name).stem
        fname = f"{stem}_aligned{Path(name).suffix}" if aligned else name
        split = "test" if stem.startswith("test") else "train"
        items.setdefault(split, []).append((img_dir / fname, label, None))
    out = {s: build_samples(v, label_set, f"rafdb/{s}") for s, v in items.items()}
    for s in out.values():
        s.skipped.extend(skipped)
    return out
