"""The face front end on one photo: detection (large photos on a downscaled copy), 68 landmarks
(from a pyramid level where the face is still at least 4x the crop) and alignment at a model's
input size and colour. `FaceAnalyzer` runs it before its model; the aligned-face cache
(`faces.aligned_cache`) runs it once per dataset photo, so training sees faces framed exactly as
at inference."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ..data.arrays import resize_face
from .align import align_face
from .detection import iou_matrix

# detection runs on a copy of at most this many pixels on its longer side (a 24 MP photo is
# detected at 1280 px, its faces still 10x larger than the smallest face the detector finds)
DETECT_MAX_SIDE = 1280


def detect_faces(detector, rgb: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> list:
    """The detector's faces of an RGB photo (Detections in the photo's pixels, best first); photos
    larger than `max_side` are detected on a downscaled copy."""
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return list(detector(rgb))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return [dataclasses.replace(d, box=tuple(v / s for v in d.box),
                                landmark_box=None if d.landmark_box is None else tuple(v / s for v in d.landmark_box),
                                keypoints=None if d.keypoints is None else d.keypoints / s)
            for d in detector(small)]


def align_detections(rgb: np.ndarray, dets, landmarker, size: int, channels: int, framing: str = "fer2013",
                     antialias: bool = True):
    """Landmark and align each detection -> (uint8 batch (N, C, size, size), landmarks in crop pixels
    (N, 68, 2), face records with box, score, detector and photo landmarks)."""
    pyramid = [rgb]
    crops, crop_pts, faces = [], [], []
    for d in dets:
        box, lbox = list(d.box), list(d.box_for_landmarks)
        level = 0
        while (lbox[2] - lbox[0]) / 2 ** (level + 1) >= 4 * size and min(pyramid[level].shape[:2]) > 64:
            level += 1
            if len(pyramid) <= level:
                pyramid.append(cv2.pyrDown(pyramid[level - 1]))
        f = 2.0 ** level
        img = pyramid[level]
        lm = landmarker(img, [v / f for v in lbox])
        crop, pts, _ = align_face(img, lm, size, framing, antialias)
        lm = lm * f  # back to the photo's pixels (pyrDown keeps pixel 2i of the level below at i)
        crops.append(resize_face(crop, size, channels))
        crop_pts.append(pts)
        faces.append({"box": [round(v, 1) for v in box], "score": round(d.score, 4), "detector": d.detector,
                      "landmarks": lm.round(1).tolist()})
    if not crops:
        return np.zeros((0, channels, size, size), np.uint8), np.zeros((0, 68, 2), np.float32), []
    return np.stack(crops), np.stack(crop_pts).astype(np.float32), faces


# the detected face must overlap a dataset's labelled box at least this much (IoU) to be that face
MATCH_MIN_IOU = 0.3


def largest_index(boxes) -> int | None:
    """Index of the largest of x0 y0 x1 y1 boxes, or None when there are none."""
    if len(boxes) == 0:
        return None
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


def matching_index(boxes, labelled_box, min_iou: float = MATCH_MIN_IOU) -> int | None:
    """Index of the box that overlaps `labelled_box` most (IoU at least `min_iou`), or None."""
    if len(boxes) == 0:
        return None
    iou = iou_matrix(boxes, [labelled_box])[:, 0]
    i = int(np.argmax(iou))
    return i if iou[i] >= min_iou else None


def pick_face(boxes, labelled_box=None) -> int | None:
    """The face a labelled photo is about: the one matching its labelled box when it has one
    (a box of NaNs: none), else the largest."""
    if labelled_box is not None and np.all(np.isfinite(labelled_box)):
        return matching_index(boxes, labelled_box)
    return largest_index(boxes)
