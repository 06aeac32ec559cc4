"""Face detection: dlib's HOG detector (default), OpenCV's Haar cascade (fallback). All faces, with scores."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float
    detector: str


class HogDetector:
    name = "dlib-hog"

    def __init__(self, upsample: int = 1, threshold: float = 0.0):
        import dlib
        self._det = dlib.get_frontal_face_detector()
        self.upsample, self.threshold = upsample, threshold

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        rects, scores, _ = self._det.run(rgb, self.upsample, self.threshold)
        h, w = rgb.shape[:2]
        out = []
        for r, s in zip(rects, scores):
            box = (max(0, r.left()), max(0, r.top()), min(w, r.right() + 1), min(h, r.bottom() + 1))
            if box[2] > box[0] and box[3] > box[1]:
                out.append(Detection(tuple(float(v) for v in box), float(s), self.name))
        return out


class HaarDetector:
    """OpenCV's frontal-face Haar cascade; scores are the cascade's level weights."""
    name = "opencv-haar"

    def __init__(self, min_size: int = 24, nms_iou: float = 0.3):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cc = cv2.CascadeClassifier(path)
        if self._cc.empty():
            raise RuntimeError(f"cannot load the Haar cascade from {path}")
        self.min_size, self.nms_iou = min_size, nms_iou

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes, _, weights = self._cc.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5,
                                                        minSize=(self.min_size, self.min_size),
                                                        outputRejectLevels=True)
        if len(boxes) == 0:
            return []
        scores = np.asarray(weights, dtype=float).reshape(-1)
        keep = cv2.dnn.NMSBoxes([list(map(int, b)) for b in boxes], scores.tolist(), 0.0, self.nms_iou)
        keep = np.asarray(keep).reshape(-1)
        return [Detection((float(boxes[i][0]), float(boxes[i][1]), float(boxes[i][0] + boxes[i][2]),
                           float(boxes[i][1] + boxes[i][3])), float(scores[i]), self.name) for i in keep]


class FaceDetector:
    """dlib HOG first; when it finds nothing (or dlib is unavailable), the Haar cascade."""

    # dlib's HOG margin for a detection; 0 is dlib's own cut. Weak candidates between 0 and 0.25 are
    # mostly face-like patterns (a mission patch in the astronaut photo scores 0.12, her face 1.16).
    DEFAULT_MIN_SCORE = 0.25

    def __init__(self, method: str = "auto", upsample: int = 1, min_score: float = DEFAULT_MIN_SCORE):
        self.method = method
        self._hog = None
        self._haar = None
        if method in ("auto", "hog"):
            try:
                self._hog = HogDetector(upsample=upsample, threshold=min_score)
            except ImportError:
                if method == "hog":
                    raise
        if method in ("auto", "haar") or self._hog is None:
            self._haar = HaarDetector()

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        dets = self._hog(rgb) if self._hog is not None else []
        if not dets and self._haar is not None:
            dets = self._haar(rgb)
        return sorted(dets, key=lambda d: -d.score)
