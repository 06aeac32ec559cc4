"""Colour conventions every layer shares (data augmentation, models, checkpoints): OpenCV's RGB ->
gray weights, and whether two models' inputs are normalised the same way."""
from __future__ import annotations

# cv2.COLOR_RGB2GRAY: gray = 0.299 R + 0.587 G + 0.114 B (they sum to 1, so a normalisation that is the
# same on every channel commutes with it)
GREY_FROM_RGB = (0.299, 0.587, 0.114)


def per_channel(v, n: int = 3) -> list[float]:
    """A preprocess mean or std (one number, a list of one, or one per channel) as n numbers."""
    if isinstance(v, (list, tuple)):
        return [float(v[0])] * n if len(v) == 1 else [float(x) for x in v]
    return [float(v)] * n


def same_normalisation(a: dict, b: dict) -> bool:
    """Whether two preprocess records normalise and frame faces alike (size and colour aside): then a
    face for one becomes a face for the other by resizing and, colour to gray, GREY_FROM_RGB."""
    return (per_channel(a["mean"]) == per_channel(b["mean"]) and per_channel(a["std"]) == per_channel(b["std"])
            and a.get("framing", "fer2013") == b.get("framing", "fer2013"))
