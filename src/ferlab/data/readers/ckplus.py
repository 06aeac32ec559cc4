"""CK+ (original release) and JAFFE.

CK+: cohn-kanade-images/S005/001/S005_001_00000011.png, labels in
Emotion/S005/001/S005_001_00000011_emotion.txt (codes 0-7: neutral, anger, contempt, disgust, fear,
happy, sadness, surprise). The usual protocol: the last `peak_frames` frames of each labelled
sequence take its label; optionally the first frame as neutral. Subjects are the groups for
subject-independent k-fold (ferlab.data.splits.subject_kfold).

JAFFE: one folder of files named like KA.AN1.39.tiff: subject KA, expression AN.
"""
from __future__ import annotations

from pathlib import Path

from ..imageio import IMAGE_SUFFIXES
from ..labels import CKPLUS_CODES, JAFFE_CODES
from .base import DatasetError, build_samples, register_dataset


@register_dataset("ckplus")
def read_ckplus(root, label_set, peak_frames: int = 3, first_frame_neutral: bool = False, **_):
    root = Path(root)
    img_root, emo_root = root / "cohn-kanade-images", root / "Emotion"
    if not img_root.is_dir() or not emo_root.is_dir():
        raise DatasetError(f"{root}: needs cohn-kanade-images/ and Emotion/ (the original CK+ layout)")
    items, skipped = [], []
    for emo_file in sorted(emo_root.glob("*/*/*_emotion.txt")):
        subject, seq = emo_file.parent.parent.name, emo_file.parent.name
        try:
            label = CKPLUS_CODES[int(float(emo_file.read_text().split()[0]))]
        except (ValueError, KeyError, IndexError):
            skipped.append((str(emo_file), "unreadable or unknown CK+ emotion code"))
            continue
        frames = sorted(p for p in (img_root / subject / seq).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            skipped.append((str(emo_file), f"no frames in {img_root / subject / seq}"))
            continue
        for f in frames[-peak_frames:]:
            items.append((f, label, subject))
        if first_frame_neutral and len(frames) > peak_frames:
            items.append((frames[0], "neutral", subject))
    s = build_samples(items, label_set, "ckplus/all")
    s.skipped.extend(skipped)
    return {"train": s}


@register_dataset("jaffe")
def read_jaffe(root, label_set, **_):
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    items, skipped = [], []
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        parts = f.name.split(".")
        code = parts[1][:2].upper() if len(parts) >= 3 else ""
        if code not in JAFFE_CODES:
            skipped.append((str(f), "file name is not SUBJECT.CODEn.N.ext with a JAFFE expression code"))
            continue
        items.append((f, JAFFE_CODES[code], parts[0]))
    s = build_samples(items, label_set, "jaffe/all")
    s.skipped.extend(skipped)
    return {"train": s}
