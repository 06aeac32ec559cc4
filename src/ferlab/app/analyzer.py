"""The app API: one object that chains detection -> landmarks -> alignment -> model and returns
plain per-face records; and a direct classifier for already-cropped faces.

    >>> from ferlab import FaceAnalyzer
    >>> fa = FaceAnalyzer()                # the default model shipped in the package
    >>> faces = fa.analyze("photo.jpg")    # [{'box':..., 'score':..., 'landmarks':..., 'probs':..., 'label':...}]
    >>> fa.classify_crops(batch_of_crops)  # [{'probs':..., 'label':...}] for dataset crops
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.arrays import resize_face, standardise
from ..data.imageio import BadImageError, as_rgb
from ..engine.checkpoint import load_model
from ..faces import FaceDetector
from ..faces.detect import DETECTORS
from ..faces.frontend import DETECT_MAX_SIDE, align_detections, detect_faces
from ..faces.landmarks import make_landmarker, resize_points
from ..models import model_args, needs_landmarks


def default_model_path() -> Path:
    """The model file of ferlab.DEFAULT_MODEL, the one every command runs unless told otherwise."""
    from .defaults import DEFAULT_MODEL
    return Path(str(resources.files("ferlab") / "weights" / f"{DEFAULT_MODEL}.safetensors"))


def shipped_models() -> dict[str, Path]:
    """Emotion models shipped inside the package, by name (landmark nets are not emotion models)."""
    folder = default_model_path().parent
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        try:
            import json
            meta = json.loads(f.with_suffix(".json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("arch") and meta.get("arch") != "mobilefacenet_landmarks":
            out[f.stem] = f
    return out


def resolve_model(model) -> Path:
    """A model argument -> its .safetensors path: None or a shipped name ('default'), or a path to a
    ferlab model file (PATH.safetensors with PATH.json beside it)."""
    from ..engine.checkpoint import CheckpointError
    if model is None:
        return default_model_path()
    named = shipped_models()
    if str(model) in named:
        return named[str(model)]
    path = Path(model)
    if path.suffix != ".safetensors" and path.with_suffix(".safetensors").is_file():
        path = path.with_suffix(".safetensors")
    if not path.is_file() and not path.with_suffix(".json").is_file():
        from ..models import list_models
        hint = (f" ({model!r} is an architecture: train it, e.g. `ferlab train configs/{model}_ferplus_cpu.yaml`, "
                "and pass the run's best.safetensors)") if str(model) in list_models() else ""
        raise CheckpointError(f"model {str(model)!r}: no such model file; --model takes a ferlab model file "
                              f"(PATH.safetensors with PATH.json beside it) or a shipped name "
                              f"({', '.join(named)}){hint}")
    return path


BACKENDS = ("auto", "torch", "onnx")


class FaceAnalyzer:
    def __init__(self, model=None, detector: str = "auto", device: str | None = None, upsample: int = 1,
                 min_score: float | None = None, landmarks: str | None = None, flip_tta: bool = False,
                 antialias: bool = True, backend: str = "auto", threads: int | None = None, min_face: int = 40):
        """`landmarks`: 'dlib' (default), 'net' (the shipped landmark net) or landmark-net weights.
        `flip_tta`: average the probabilities of each face and its mirror image. `antialias`: area-
        average faces much larger than the model's input when aligning (off: a direct warp).
        `backend`: 'torch', 'onnx' (ONNX Runtime; the export made once and cached) or 'auto' (ONNX
        Runtime on a CPU when the model exports, else PyTorch). `threads`: the model's CPU threads
        (default 1 for ONNX Runtime, which does not oversubscribe a busy machine; PyTorch's own
        setting is left alone unless given). `min_face`: the smallest face BlazeFace looks for, in
        pixels (40; larger skips the detector's finer levels on small photos: portraits go faster). The detector and
        landmarker load on first use, so `classify_crops` loads neither."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.flip_tta, self.antialias = bool(flip_tta), bool(antialias)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        path = resolve_model(model)
        self.model, self.meta = load_model(path, self.device)
        self.model_path = path
        self.labels = list(self.meta["labels"])
        self.pre = self.meta["preprocess"]
        self.threads = None if threads is None else int(threads)
        self.backend, self.onnx, self.backend_note = "torch", None, ""
        if backend != "torch" and self.device.type == "cpu":
            from ..engine.onnx_runtime import OnnxClassifier, OnnxUnavailable, cached_onnx
            try:
                self.onnx = OnnxClassifier(cached_onnx(self.model, self.meta, path), self.threads or 1)
                self.backend = "onnx"
            except OnnxUnavailable as e:
                if backend == "onnx":
                    raise ValueError(f"backend 'onnx': {e}") from None
                self.backend_note = str(e)
        elif backend == "onnx":
            raise ValueError("backend 'onnx' runs on the CPU: leave device unset or 'cpu'")
        if self.backend == "torch" and self.threads is not None:
            torch.set_num_threads(self.threads)
        if int(min_face) < 8:
            raise ValueError(f"min_face must be at least 8 pixels, not {min_face}")
        self.detector_args = {"method": detector, "upsample": upsample, "min_score": min_score, "min_face": int(min_face)}
        if detector not in DETECTORS:  # a bad name fails here, not at the first photo
            raise ValueError(f"unknown detector {detector!r} (known: {', '.join(DETECTORS)})")
        self.landmarks_spec = landmarks
        self._detector = self._landmarker = None

    @property
    def detector(self):
        if self._detector is None:
            self._detector = FaceDetector(**self.detector_args)
        return self._detector

    @detector.setter
    def detector(self, value):
        self._detector = value

    @property
    def landmarker(self):
        if self._landmarker is None:
            self._landmarker = make_landmarker(self.landmarks_spec)
        return self._landmarker

    @landmarker.setter
    def landmarker(self, value):
        self._landmarker = value

    def worker_copy(self) -> "FaceAnalyzer":
        """A copy for another thread: its own detector (a LiteRT interpreter serves one thread at a
        time), the model and the landmarker shared (their calls keep no state)."""
        self.landmarker  # loaded once, shared
        clone = copy.copy(self)
        clone._detector = FaceDetector(**self.detector_args)
        return clone

    def _tensor(self, crops_u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(crops_u8).to(self.device).float() / 255.0
        return standardise(x, self.pre)

    @property
    def needs_landmarks(self) -> bool:
        return needs_landmarks(self.model)

    def model_inputs(self, crops_u8: np.ndarray, landmarks=None) -> tuple:
        """Forward arguments for (N, C, S, S) uint8 crops (+ their landmarks in crop pixels)."""
        return model_args(self.model, self._tensor(crops_u8), landmarks)

    @property
    def temperature(self) -> float:
        """The model's calibration temperature (its JSON's `temperature`; 1 when it has none):
        probabilities are softmax(logits / temperature)."""
        return float(self.meta.get("temperature", 1.0))

    def _probs(self, crops_u8: np.ndarray, landmarks) -> np.ndarray:
        if self.onnx is not None:
            x = standardise(crops_u8.astype(np.float32) / np.float32(255.0), self.pre)
            logits = self.onnx(x, landmarks).astype(np.float64) / self.temperature
            e = np.exp(logits - logits.max(1, keepdims=True))
            return (e / e.sum(1, keepdims=True)).astype(np.float32)
        logits = self.model(*self.model_inputs(crops_u8, landmarks)).float() / self.temperature
        return torch.softmax(logits, 1).cpu().numpy()

    @torch.no_grad()
    def predict_tensor(self, crops_u8: np.ndarray, landmarks=None) -> np.ndarray:
        """(N, C, S, S) uint8 crops at the model's input size -> (N, classes) probabilities.
        `landmarks`: (N, 68, 2) in crop pixels, for models that need them (RASA)."""
        if len(crops_u8) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.needs_landmarks and landmarks is None:
            self.model_inputs(crops_u8[:1], None)  # the one clear error for a model that needs landmarks
        probs = self._probs(crops_u8, landmarks)
        if self.flip_tta:
            from ..data.augment import MIRROR_68
            size = crops_u8.shape[-1]
            lm = None if landmarks is None else (np.stack([size - 1 - landmarks[..., 0], landmarks[..., 1]], -1)
                                                 [:, MIRROR_68]).astype(np.float32)
            flipped = np.ascontiguousarray(crops_u8[..., ::-1])
            probs = (probs + self._probs(flipped, lm)) / 2
        return probs

    def prepare_crops(self, crops, bgr: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Already-cropped faces -> (uint8 batch at the model's input, landmarks or None). Landmarks
        (only for models that need them) come from dlib on the whole crop, as for datasets."""
        size, ch = self.pre["img_size"], self.pre["channels"]
        rgbs = [as_rgb(c, bgr) for c in crops]
        if not rgbs:
            return np.zeros((0, ch, size, size), np.uint8), None
        batch = np.stack([resize_face(c, size, ch) for c in rgbs])
        if not self.needs_landmarks:
            return batch, None
        pts = [resize_points(self.landmarker.on_crop(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)), *c.shape[:2], size)
               for c in rgbs]
        return batch, np.stack(pts)

    DETECT_MAX_SIDE = DETECT_MAX_SIDE

    def detect(self, rgb: np.ndarray) -> list:
        """The detector's faces of an RGB photo (Detections in the photo's pixels, best first); photos
        larger than DETECT_MAX_SIDE are detected on a downscaled copy."""
        return detect_faces(self.detector, rgb, self.DETECT_MAX_SIDE)

    def prepare_faces(self, rgb: np.ndarray, max_faces: int | None = None, detections=None):
        """Detect, landmark and align every face of an RGB photo -> (uint8 batch, landmarks in crop
        pixels (N, 68, 2), face records with box, score, detector and photo landmarks).
        `detections`: faces already found (Detections in the photo's pixels; e.g. a video's faces
        followed from the previous frame), instead of running the detector (`faces.frontend`)."""
        dets = self.detect(rgb) if detections is None else list(detections)
        return align_detections(rgb, dets[:max_faces], self.landmarker, self.pre["img_size"], self.pre["channels"],
                                self.pre.get("framing", "fer2013"), self.antialias)

    def analyze_many(self, images, max_faces: int | None = None, bgr: bool = False) -> list[list[dict]]:
        """`analyze` for a list of photos (each a path, bytes, PIL image or array), their faces through
        the model in one batch; one list of face records per photo."""
        if isinstance(images, (str, bytes, np.ndarray)) or not hasattr(images, "__iter__"):
            raise BadImageError(f"analyze_many takes a list of images, got a {type(images).__name__} "
                                "(for one image use analyze)")
        return self.classify_prepared([self.prepare_faces(as_rgb(im, bgr), max_faces) for im in images])

    def classify_prepared(self, prepared) -> list[list[dict]]:
        """The faces of several photos, each `prepare_faces`' (batch, landmarks, records), through the
        model in one batch; one list of face records per photo (the records are completed in place)."""
        batches = [b for b, _, _ in prepared if len(b)]
        if not batches:
            return [[] for _ in prepared]
        batch = np.concatenate(batches)
        pts = np.concatenate([p for b, p, _ in prepared if len(b)])
        records = self.records(self.predict_tensor(batch, pts))
        out, i = [], 0
        for _, _, faces in prepared:
            for f in faces:
                f.update(records[i])
                i += 1
            out.append(faces)
        return out

    def records(self, probs: np.ndarray) -> list[dict]:
        """Per face: probabilities by label, the top label and its probability."""
        out = []
        for p in probs:
            top = int(np.argmax(p))
            out.append({"probs": {name: float(v) for name, v in zip(self.labels, p)},
                        "label": self.labels[top], "confidence": float(p[top])})
        return out

    def classify_crops(self, crops, bgr: bool = False) -> list[dict]:
        """Classify already-cropped faces (a list of arrays / PIL images / paths, or an (N,H,W[,C]) array)."""
        return self.records(self.predict_tensor(*self.prepare_crops(crops, bgr)))

    def analyze(self, image, max_faces: int | None = None, detections=None, bgr: bool = False) -> list[dict]:
        """Every face of one photo (a path, the bytes of an image file, a PIL image or an array): box,
        detector score, 68 landmarks, probabilities by label, top label. Faces are ordered by detector
        score. Arrays are read as RGB; `bgr=True` for OpenCV's BGR (cv2.imread, cv2.VideoCapture).
        `detections`: faces already found (see `prepare_faces`), instead of running the detector."""
        batch, pts, faces = self.prepare_faces(as_rgb(image, bgr), max_faces, detections)
        for f, r in zip(faces, self.records(self.predict_tensor(batch, pts))):
            f.update(r)
        return faces
