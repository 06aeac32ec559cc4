"""Drawing face records onto images: boxes, labels, probabilities."""
from __future__ import annotations

import cv2
import numpy as np


def draw_faces(rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
    """An annotated copy: box, top emotion and its probability for each face."""
    out = np.ascontiguousarray(rgb.copy())
    scale = max(out.shape[:2]) / 600
    for f in faces:
        x0, y0, x1, y1 = (int(v) for v in f["box"])
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 220, 0), max(1, int(2 * scale)))
        text = f"{f['label']} {f['confidence']:.0%}"
        fs = 0.6 * max(scale, 0.5)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        h, w = out.shape[:2]
        # the label sits above the box, inside the frame: moved in from the edges where it would leave it
        ty = min(max(th + 4, y0 - 4), max(th + 4, h - base - 1))
        tx = min(max(0, x0), max(0, w - tw - 5))
        cv2.rectangle(out, (tx, ty - th - 4), (tx + tw + 4, ty + base), (0, 220, 0), -1)
        cv2.putText(out, text, (tx + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 1, cv2.LINE_AA)
    return out
