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
