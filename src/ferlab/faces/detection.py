"""What every face detector returns: one `Detection` per face."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float
    detector: str
    keypoints: np.ndarray | None = None    # BlazeFace's six points (eyes, nose, mouth, ears), pixels
    landmark_box: tuple[float, float, float, float] | None = None  # the box dlib's shape predictor wants

    @property
    def box_for_landmarks(self) -> tuple[float, float, float, float]:
        return self.landmark_box if self.landmark_box is not None else self.box


def iou_matrix(a, b, over_smaller: bool = False) -> np.ndarray:
    """(len(a), len(b)) intersection over union of x0 y0 x1 y1 boxes; with over_smaller, over the
    smaller box's area instead (1 when one box holds the other)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ix0, iy0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    ix1, iy1 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    denom = np.minimum(area_a, area_b) if over_smaller else area_a + area_b - inter
    return inter / np.maximum(denom, 1e-12)
