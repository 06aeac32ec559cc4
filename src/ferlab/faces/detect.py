"""Face detection: BlazeFace (default; `faces/blazeface.py`), dlib's HOG detector and OpenCV's Haar
cascade (options). All faces, with scores, best first."""
from __future__ import annotations

import cv2
import numpy as np

from .detection import Detection


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


DETECTORS = ("auto", "blazeface", "blazeface-full", "hog", "haar")


class FaceDetector:
    """One detector by name. 'auto' (default) and 'blazeface': BlazeFace short range with tiles for
    small faces; 'blazeface-full': the full-range model; 'hog': dlib's HOG; 'haar': OpenCV's cascade.
    'auto' falls back to HOG only when BlazeFace cannot be loaded (ai-edge-litert missing), and warns
    when it does (`name` says which detector runs); no
    detector falls back to another when it finds nothing, so none invents faces.
    `schedule` (BlazeFace): how faces smaller than the whole-frame views find are looked for:
    "scaled" (default), one pass per face-size level over the frame resized for it; "tiles", the
    earlier schedule, overlapping tiles per level (four times the pixels; kept as the reference).
    `min_score`: each detector's own scale (BlazeFace: probability, default 0.5; HOG: margin,
    default 0.25); `upsample`: HOG only."""

    # dlib's HOG margin for a detection; 0 is dlib's own cut. Weak candidates between 0 and 0.25 are
    # mostly face-like patterns (a mission patch in the astronaut photo scores 0.12, her face 1.16).
    DEFAULT_MIN_SCORE = 0.25
    BLAZEFACE_MIN_SCORE = 0.5

    def __init__(self, method: str = "auto", upsample: int = 1, min_score: float | None = None,
                 min_face: int = 40, threads: int = 1, schedule: str = "scaled"):
        if method not in DETECTORS:
            raise ValueError(f"unknown detector {method!r} (known: {', '.join(DETECTORS)})")
        self.method = method
        self._det = None
        if method in ("auto", "blazeface", "blazeface-full"):
            from .blazeface import BlazeFaceDetector, BlazeFaceUnavailable
            try:
                self._det = BlazeFaceDetector("full" if method == "blazeface-full" else "short",
                                              min_score=self.BLAZEFACE_MIN_SCORE if min_score is None else min_score,
                                              min_face=min_face, threads=threads, schedule=schedule)
            except BlazeFaceUnavailable as e:
                if method != "auto":
                    raise
                import warnings
                warnings.warn(f"BlazeFace is unavailable ({e}); detecting faces with dlib's HOG detector instead, "
                              "which misses more faces (ask for --detector hog to silence this)", stacklevel=2)
        if self._det is None and method in ("auto", "hog"):
            self._det = HogDetector(upsample=upsample,
                                    threshold=self.DEFAULT_MIN_SCORE if min_score is None else min_score)
        if method == "haar":
            self._det = HaarDetector()
        self.name = self._det.name

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        return sorted(self._det(rgb), key=lambda d: -d.score)

    @property
    def can_look(self) -> bool:
        """Whether `look` works: BlazeFace can find a face near a given box in one network pass."""
        return hasattr(self._det, "look")

    def look(self, rgb: np.ndarray, box) -> Detection | None:
        """The face near `box` (BlazeFace: one pass over a view centred on it), or None."""
        if not self.can_look:
            raise ValueError(f"detector {self.name} cannot look for a face near a box")
        return self._det.look(rgb, box)

    @property
    def min_score(self) -> float:
        return float(getattr(self._det, "min_score", getattr(self._det, "threshold", 0.0)))
