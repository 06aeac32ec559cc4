"""FER+ (Barsoum et al. 2016): FER2013 faces with 10-annotator votes, in Microsoft's FERPlus layout.

Layout: FER2013Train/, FER2013Valid/, FER2013Test/, each holding 48x48 gray PNGs and a header-less
label.csv: image name, face box, then votes for neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown, NF. The vote clean-up follows microsoft/FERPlus src/ferplus.py.

Label modes:
- ``majority``: the test protocol; one hard label per image, images without a clear majority dropped.
- ``probability``: a vote distribution over at most 3 top emotions; training draws a one-hot label
  from it each epoch (see ferlab.engine.train).
- ``crossentropy``: the same distribution used directly as a soft target.
Validation and test are always read in majority mode.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from ..labels import CANONICAL
from .base import DatasetError, SampleList, register_dataset

SPLIT_DIRS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
VOTE_COLUMNS = CANONICAL + ("unknown", "NF")
# FER2013Test/fer0033120.png is a warning-sign icon, not a face; label.csv carries another row's votes.
KNOWN_BAD = {("test", "fer0033120.png"): "not a face (warning-sign icon); label.csv votes belong to another image"}
LABEL_MODES = ("majority", "probability", "crossentropy")


def process_votes(votes, mode: str) -> np.ndarray | None:
    """Clean one row of 10 vote counts as FERPlus does; return a distribution over the 8 emotions
    or None when the image is dropped (no clear label, unknown, or not a face)."""
    v = np.asarray(votes, dtype=np.float64).copy()
    v[v <= 1.0] = 0.0  # single votes are treated as outliers
    total = v.sum()
    if total <= 0:
        return None
    out = np.zeros_like(v)
    if mode == "majority":
        top = int(np.argmax(v))
        if v[top] > 0.5 * total:
            out[top] = v[top]
        else:
            return None
    elif mode in ("probability", "crossentropy"):
        covered, count, valid = 0.0, 0, True
        work = v.copy()
        while covered < 0.75 * total and count < 3 and valid:
            maxval = work.max()
            for i in range(len(work)):
                if work[i] == maxval:
                    out[i] = maxval
                    work[i] = 0
                    covered += out[i]
                    count += 1
                    if i >= 8:  # unknown / not-a-face tie with the top emotions
                        valid = False
                        if out.sum() > maxval:
                            out[i] = 0
                            count -= 1
                        break
        if out.sum() <= 0.5 * total or count > 3:
            return None
    else:
        raise ValueError(f"unknown FER+ label mode {mode!r}; choose from {LABEL_MODES}")
    if np.argmax(out) >= 8:
        return None
    emo = out[:8]
    if emo.sum() <= 0:
        return None
    return (emo / emo.sum()).astype(np.float32)


def _pixel_hashes(paths) -> list[str]:
    from ..imageio import read_image
    return [hashlib.sha1(read_image(p, "L").tobytes()).hexdigest() for p in paths]


@register_dataset("ferplus")
def read_ferplus(root, label_mode: str = "majority", splits=("train", "valid", "test"),
                 find_duplicates: bool = True, **_) -> dict[str, SampleList]:
    """Read FER+ splits. The test split gets a ``duplicate`` flag: True for images pixel-identical
    to a Train or Valid image (FER2013's own duplicates)."""
    root = Path(root)
    if label_mode not in LABEL_MODES:
        raise DatasetError(f"unknown FER+ label mode {label_mode!r}; choose from {', '.join(LABEL_MODES)}")
    out: dict[str, SampleList] = {}
    for split in splits:
        folder = root / SPLIT_DIRS[split]
        csv_path = folder / "label.csv"
        if not csv_path.is_file():
            raise DatasetError(f"{csv_path}: missing; is {root} a FER+ folder (FER2013Train/Valid/Test)?")
        mode = label_mode if split == "train" else "majority"
        paths, targets, skipped = [], [], []
        with open(csv_path, newline="") as fh:
            for row in csv.reader(fh):
                if not row:
                    continue
                name = row[0].strip()
                if (split, name) in KNOWN_BAD:
                    skipped.append((str(folder / name), KNOWN_BAD[(split, name)]))
                    continue
                try:
                    votes = [float(x) for x in row[-10:]]
                    if len(row) < 12:
                        raise ValueError
                except ValueError:
                    skipped.append((str(folder / name), "label.csv row is not 10 vote counts"))
                    continue
                dist = process_votes(votes, mode)
                if dist is None:
                    continue  # dropped by the protocol (no majority / unknown / not a face), not an error
                p = folder / name
                if not p.is_file():
                    skipped.append((str(p), "missing file"))
                    continue
                paths.append(p)
                targets.append(dist)
        targets = np.stack(targets) if targets else np.zeros((0, 8), np.float32)
        labels = targets.argmax(1) if len(targets) else np.zeros(0, np.int64)
        out[split] = SampleList(paths=paths, labels=labels, label_set=CANONICAL, targets=targets,
                                skipped=skipped, source=f"ferplus/{split}")
    if find_duplicates and "test" in out and {"train", "valid"} <= set(splits):
        out["test"].flags["duplicate"] = find_test_duplicates(root, out["test"].paths)
    return out


def find_test_duplicates(root: Path, test_paths) -> np.ndarray:
    """True for each test image whose pixels equal any FER2013Train or FER2013Valid image
    (all files on disk, whatever their labels)."""
    from ..cache import cached_json
    root = Path(root)
    seen = set()
    for split in ("train", "valid"):
        folder = root / SPLIT_DIRS[split]
        files = sorted(folder.glob("*.png"))
        seen.update(cached_json(f"pixhash-{folder.resolve()}", files, lambda f=files: _pixel_hashes(f)))
    test_hashes = _pixel_hashes(test_paths)
    return np.array([h in seen for h in test_hashes], dtype=bool)
