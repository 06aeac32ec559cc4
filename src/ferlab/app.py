"""The app API: one object that chains detection -> landmarks -> alignment -> model and returns
plain per-face records; and a direct classifier for already-cropped faces.

    >>> from ferlab import FaceAnalyzer
    >>> fa = FaceAnalyzer()                # the default model shipped in the package
    >>> faces = fa.analyze("photo.jpg")    # [{'box':..., 'score':..., 'landmarks':..., 'probs':..., 'label':...}]
    >>> fa.classify_crops(batch_of_crops)  # [{'probs':..., 'label':...}] for dataset crops
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch

from .checkpoint import load_model
from .data import resize_face, standardise
from .faces import DlibLandmarks, FaceDetector, align_face
from .imageio import as_rgb


def default_model_path() -> Path:
    return Path(str(resources.files("ferlab") / "weights" / "default.safetensors"))


class FaceAnalyzer:
    def __init__(self, model=None, detector: str = "auto", device: str | None = None, upsample: int = 1,
                 min_score: float = FaceDetector.DEFAULT_MIN_SCORE):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        path = Path(model) if model else default_model_path()
        self.model, self.meta = load_model(path, self.device)
        self.model_path = path
        self.labels = list(self.meta["labels"])
        self.pre = self.meta["preprocess"]
        self.detector = FaceDetector(detector, upsample=upsample, min_score=min_score)
        self.landmarker = DlibLandmarks()

    def _tensor(self, crops_u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(crops_u8).to(self.device).float() / 255.0
        return standardise(x, self.pre)

    @property
    def needs_landmarks(self) -> bool:
        return bool(getattr(self.model, "needs_landmarks", False))

    def _model_args(self, crops_u8: np.ndarray, landmarks) -> tuple:
        x = self._tensor(crops_u8)
        if not self.needs_landmarks:
            return (x,)
        if landmarks is None:
            raise ValueError(f"model {self.meta['arch']} needs the 68 landmarks of each crop")
        return x, torch.as_tensor(np.asarray(landmarks, np.float32), device=self.device)

    @torch.no_grad()
    def predict_tensor(self, crops_u8: np.ndarray, landmarks=None) -> np.ndarray:
        """(N, C, S, S) uint8 crops at the model's input size -> (N, classes) probabilities.
        `landmarks`: (N, 68, 2) in crop pixels, for models that need them (RASA)."""
        if len(crops_u8) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return torch.softmax(self.model(*self._model_args(crops_u8, landmarks)).float(), 1).cpu().numpy()

    def crop_landmarks(self, crop: np.ndarray, size: int) -> np.ndarray:
        """68 landmarks of an already-cropped face (the whole crop is the face box), in the pixels
        of the crop resized to size x size, as dataset landmarks are computed."""
        gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        pts = self.landmarker.on_crop(gray)
        scale = np.array([size / gray.shape[1], size / gray.shape[0]], np.float32)
        return (pts + 0.5) * scale - 0.5

    def _records(self, probs: np.ndarray) -> list[dict]:
        out = []
        for p in probs:
            top = int(np.argmax(p))
            out.append({"probs": {name: float(v) for name, v in zip(self.labels, p)},
                        "label": self.labels[top], "confidence": float(p[top])})
        return out

    def classify_crops(self, crops) -> list[dict]:
        """Classify already-cropped faces (a list of arrays / PIL images / paths, or an (N,H,W[,C]) array)."""
        size, ch = self.pre["img_size"], self.pre["channels"]
        rgbs = [as_rgb(c) for c in crops]
        batch = np.stack([resize_face(c, size, ch) for c in rgbs]) if len(rgbs) else \
            np.zeros((0, ch, size, size), np.uint8)
        lms = np.stack([self.crop_landmarks(c, size) for c in rgbs]) if self.needs_landmarks and rgbs else None
        return self._records(self.predict_tensor(batch, lms))

    def analyze(self, image, max_faces: int | None = None) -> list[dict]:
        """Every face of a photo (path, PIL image or array): box, detector score, 68 landmarks,
        probabilities by label, top label. Faces are ordered by detector score."""
        rgb = as_rgb(image)
        dets = self.detector(rgb)[:max_faces]
        size, ch = self.pre["img_size"], self.pre["channels"]
        framing = self.pre.get("framing", "fer2013")
        crops, crop_pts, faces = [], [], []
        for d in dets:
            lm = self.landmarker(rgb, d.box)
            crop, pts, _ = align_face(rgb, lm, size, framing)
            crops.append(resize_face(crop, size, ch))
            crop_pts.append(pts)
            faces.append({"box": [round(v, 1) for v in d.box], "score": round(d.score, 4), "detector": d.detector,
                          "landmarks": lm.round(1).tolist()})
        if crops:
            probs = self.predict_tensor(np.stack(crops), np.stack(crop_pts) if self.needs_landmarks else None)
            for f, r in zip(faces, self._records(probs)):
                f.update(r)
        return faces


def draw_faces(rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
    """An annotated copy: box, top emotion and its probability for each face."""
    import cv2
    out = np.ascontiguousarray(rgb.copy())
    scale = max(out.shape[:2]) / 600
    for f in faces:
        x0, y0, x1, y1 = (int(v) for v in f["box"])
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 220, 0), max(1, int(2 * scale)))
        text = f"{f['label']} {f['confidence']:.0%}"
        fs = 0.6 * max(scale, 0.5)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        ty = max(th + 4, y0 - 4)
        cv2.rectangle(out, (x0, ty - th - 4), (x0 + tw + 4, ty + base), (0, 220, 0), -1)
        cv2.putText(out, text, (x0 + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 1, cv2.LINE_AA)
    return out
