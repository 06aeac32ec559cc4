"""A SampleList's images as a model takes them: (N, C, S, S) uint8 at its input size and colour.

Pre-cropped faces (FER+, CK+48, ...) are decoded and resized (`data.arrays.load_images`); photos
(samples whose `flags["input"]` is "photo": ExpW, SFEW, photo folders) go through the face front end
once and their aligned faces are cached (`faces.aligned_cache`). Both are cached on disk; a photo
the front end misses, like an image that does not decode, is marked not ok and listed in the
samples' `skipped` with its reason."""
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
        imgs[rows], ok[rows], misses = aligned_faces(sub, size, channels, framing, progress=progress)
        samples.skipped.extend(misses)
    return imgs, ok
