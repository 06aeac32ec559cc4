"""A SampleList's images as a model takes them: (N, C, S, S) uint8 at its input size and colour.

Pre-cropped faces (FER+, CK+48, ...) are decoded and resized (`data.arrays.load_images`); photos
(samples whose `flags["input"]` is "photo": ExpW, SFEW, photo folders) go through the face front end
once and their aligned faces are cached (`faces.aligned_cache`). Both are cached on disk; a photo
the front end misses, like an image that does not decode, is marked not ok and listed in the
samples' `skipped` with its reason. The photos' landmarks (in the aligned crops' pixels) are kept in
the samples' `flags["aligned_landmarks"]`, for models that read landmarks (`model_input_landmarks`)."""
from __future__ import annotations

import numpy as np

from ..data.arrays import load_images


def photo_mask(samples) -> np.ndarray:
    kind = samples.flags.get("input")
    return np.zeros(len(samples), bool) if kind is None else np.asarray(kind) == "photo"


def model_input_images(samples, size: int, channels: int, framing: str = "fer2013",
                       progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images, ok) for every sample; see the module doc."""
    photos = photo_mask(samples)
    if not photos.any():
        return load_images(samples, size, channels)
    from ..faces.aligned_cache import aligned_faces
    imgs = np.zeros((len(samples), channels, size, size), np.uint8)
    points = np.full((len(samples), 68, 2), np.nan, np.float32)
    ok = np.zeros(len(samples), bool)
    crops = np.flatnonzero(~photos)
    if len(crops):
        sub = samples.subset(crops)
        imgs[crops], ok[crops] = load_images(sub, size, channels)
        samples.skipped.extend(x for x in sub.skipped if x not in samples.skipped)
    # one cache entry per source, so a dataset's faces are aligned once whatever it is mixed with
    src = samples.flags.get("source")
    names = [None] if src is None else list(dict.fromkeys(np.asarray(src)[photos].tolist()))
    for name in names:
        rows = np.flatnonzero(photos if name is None else photos & (np.asarray(src) == name))
        sub = samples.subset(rows)
        if name is not None:
            sub.source = str(name)
        imgs[rows], ok[rows], misses, points[rows] = aligned_faces(sub, size, channels, framing, progress=progress,
                                                                   with_landmarks=True)
        samples.skipped.extend(misses)
    samples.flags["aligned_landmarks"] = points  # subset() carries them along with the faces
    return imgs, ok


def model_input_landmarks(samples, size: int) -> np.ndarray:
    """(N, 68, 2) landmarks of the faces `model_input_images` gave (in pixels of the size x size
    input): dlib's points on each pre-cropped face (cached), and for photos the points the front end
    aligned them with, as the analyzer gives a model at inference."""
    from ..faces import dataset_landmarks
    photos = photo_mask(samples)
    if not photos.any():
        return dataset_landmarks(samples, size=size)[0]
    aligned = samples.flags.get("aligned_landmarks")
    if aligned is None:
        raise ValueError("the landmarks of photos come with their aligned faces: read the samples with "
                         "model_input_images first")
    points = np.zeros((len(samples), 68, 2), np.float32)
    points[photos] = aligned[photos]
    crops = np.flatnonzero(~photos)
    if len(crops):
        points[crops] = dataset_landmarks(samples.subset(crops), size=size)[0]
    return points


def export_faces(splits: dict, size: int, channels: int, out_dir, framing: str = "fer2013", fmt: str = "png",
                 only_photos: bool = False, quality: int = 95) -> dict:
    """Write every face of `splits` as the model sees it (photos aligned by the front end, crops
    resized) to OUT_DIR/<split>/<n>.<fmt>, with OUT_DIR/index.csv (path, label, split, source,
    group, original). The folder is itself a dataset (`dataset: csv, front_end: false`). Faces the
    front end misses are not written; they are listed in OUT_DIR/skipped.csv. Returns counts."""
    import csv
    from pathlib import Path

    import cv2
    if fmt not in ("png", "jpg"):
        raise ValueError(f"format {fmt!r}: png (lossless) or jpg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    with open(out / "index.csv", "w", newline="") as fh, open(out / "skipped.csv", "w", newline="") as sk:
        w, ws = csv.writer(fh), csv.writer(sk)
        w.writerow(["path", "label", "split", "source", "group", "original"])
        ws.writerow(["split", "item", "why"])
        for split, s in splits.items():
            if only_photos:
                s = s.subset(np.flatnonzero(photo_mask(s)))
            if not len(s):
                continue
            imgs, ok = model_input_images(s, size, channels, framing)
            (out / split).mkdir(exist_ok=True)
            src = s.flags.get("source")
            for i in np.flatnonzero(ok):
                rel = f"{split}/{i:06d}.{fmt}"
                img = imgs[i].transpose(1, 2, 0)
                img = img[:, :, 0] if channels == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
                cv2.imwrite(str(out / rel), img, params)
                w.writerow([rel, s.label_set[s.labels[i]], split, "" if src is None else src[i],
                            "" if s.groups is None else s.groups[i], str(s.paths[i])])
            for item, why in s.skipped:
                ws.writerow([split, item, why])
            counts[split] = int(ok.sum())
    return counts
