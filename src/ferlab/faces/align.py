"""Alignment: a similarity transform taking five landmark points (eye centres, nose tip, mouth
corners) onto a fixed template, cropping at any requested size; landmarks move with the crop.

Templates are in unit coordinates (0..1 of the crop side):
- ``fer2013``: the mean position of those points on FER+ training crops (dlib on the whole crop),
  so that faces found in photos are framed as the FER+ faces a model was trained on.
  Reproduce with ``python benchmarks/ferplus_template.py``.
- ``tight``: the common 112x112 face-recognition template (ArcFace), a closer crop.
"""
from __future__ import annotations

import cv2
import numpy as np

TEMPLATES = {
    # left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner (image left/right)
    "fer2013": np.array([[0.3021, 0.3754], [0.6780, 0.3698], [0.4922, 0.5703], [0.3359, 0.7630],
                         [0.6536, 0.7630]], np.float32),
    "tight": np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                       [70.7299, 92.2041]], np.float32) / 112.0,
}


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """Eye centres (mean of 36-41, 42-47), nose tip (30), mouth corners (48, 54)."""
    lm = np.asarray(landmarks68, np.float32)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def similarity_matrix(src_pts: np.ndarray, template: str | np.ndarray, size: int) -> np.ndarray:
    dst = (TEMPLATES[template] if isinstance(template, str) else np.asarray(template, np.float32)) * size
    m, _ = cv2.estimateAffinePartial2D(np.asarray(src_pts, np.float32), dst, method=cv2.LMEDS)
    if m is None:
        raise ValueError("cannot estimate an alignment from these landmarks")
    return m


def align_face(image: np.ndarray, landmarks68: np.ndarray, size: int, template="fer2013", antialias: bool = True):
    """Return (crop of size x size, landmarks in crop coordinates, the 2x3 matrix).

    A face much larger than the crop (a 120 px face into 48 px) is warped at up to 4x the crop's
    size and then area-averaged down, as a camera or a dataset's own downscaling would: a direct
    bilinear warp samples every 2nd-3rd pixel and aliases (sharp, noisy crops unlike training faces);
    antialias=False gives that direct warp (for comparisons)."""
    m = similarity_matrix(five_points(landmarks68), template, size)
    crop = warp_crop(image, m, size, antialias)
    pts = np.asarray(landmarks68, np.float32) @ m[:, :2].T + m[:, 2]
    return crop, pts, m


def warp_crop(image: np.ndarray, m: np.ndarray, size: int, antialias: bool = True) -> np.ndarray:
    """The size x size crop that the 2x3 map `m` (image -> crop pixels, any affine map) cuts from
    `image`; with antialias, a face much larger than the crop is warped at up to 4x and area-averaged."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop pixels per image pixel
    k = int(min(4, np.floor(1.0 / scale))) if scale > 0 and antialias else 1
    if k >= 2:
        big = m.copy()
        big[:, :2] *= k
        big[:, 2] = big[:, 2] * k + (k - 1) / 2.0  # pixel centres: crop pixel c covers big pixels k*c .. k*c+k-1
        crop = cv2.warpAffine(image, big, (size * k, size * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def estimate_template(landmarks: np.ndarray, crop_size: float) -> np.ndarray:
    """Mean five-point template (unit coordinates) of many faces' 68-point landmarks."""
    pts = np.stack([five_points(lm) for lm in landmarks]) / float(crop_size)
    return np.median(pts, axis=0)
