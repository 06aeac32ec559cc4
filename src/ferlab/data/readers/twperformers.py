"""TW performers (Taiwan Corpora of Chinese Emotions, frontal performer photos): 1,232 256x256 colour
photos of 29 performers posing seven expressions; ROOT/index.csv lists path, label, subject and
the observers' ratings. One split ('test'): the set is for evaluation through the photo pipeline.

Flags: `observers_agree`, the neutral photos plus those where at least half of the observers chose
the intended label (the subset its README defines, 881 photos)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import build_samples, read_index, register_dataset


@register_dataset("twperformers")
def read_twperformers(root, label_set, **_):
    root = Path(root)
    rows = read_index(root / "index.csv", {"path", "label", "subject", "rater_prop_intended"},
                      "twperformers needs ROOT/index.csv")
    s = build_samples([(root / r["path"], r["label"], r["subject"]) for r in rows], label_set, "twperformers/test")
    agree = {str(root / r["path"]): r["label"] == "neutral" or (r["rater_prop_intended"] not in ("", None)
                                                               and float(r["rater_prop_intended"]) >= 0.5)
             for r in rows}
    s.flags["observers_agree"] = np.array([agree[str(p)] for p in s.paths], bool)
    return {"test": s}
