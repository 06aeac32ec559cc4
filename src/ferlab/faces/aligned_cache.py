"""Dataset photos through the face front end once, their aligned faces cached on disk.

Photo datasets (ExpW's face-with-context crops, SFEW's frames, any folder of photos) are trained
on as the pipeline sees them at inference: each photo is detected, landmarked and aligned at the
model's input size, colour and framing (`faces.frontend`, exactly what `FaceAnalyzer` runs), and the
aligned face is stored. The face taken from a photo is the one that matches the dataset's labelled
box (`flags["box"]`, IoU at least 0.3) when the dataset gives one, else the largest. A photo the
front end misses (no face, or none on the labelled box) is listed with its reason and left out,
never cropped some other way. The face's 68 landmarks, in the aligned crop's pixels, are stored
beside it: a model that reads landmarks (RASA) gets the points the analyzer would give it.

The cache entry's key holds the photos (path, size, modification time), their labelled boxes, the
input size, colour and framing, the detector and landmarker in use, and a digest of the front end's
source files and model files: a changed front end or input makes a new entry, never a stale one.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..data.cache import cached_arrays

_FRONT_END_SOURCES = ("frontend.py", "align.py", "blazeface.py", "detect.py", "detection.py", "landmarks.py")


def _file_digest(h, path: Path) -> None:
    try:
        st = os.stat(path)
        h.update(f"{path.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())  # as the cache keys its photos
    except OSError:
        h.update(f"{path}|missing\n".encode())


def front_end_key(size: int, channels: int, framing: str = "fer2013", detector: str = "auto",
                  landmarks: str | None = None, antialias: bool = True, boxes=None) -> str:
    """The cache key of aligned faces made by this front end at this input (see the module doc)."""
    from . import align
    from .detect import FaceDetector
    from .landmarks import shape_predictor_path, shipped_landmark_net
    here = Path(__file__).resolve().parent
    h = hashlib.sha1()
    for name in _FRONT_END_SOURCES:
        h.update((here / name).read_bytes())
    det = FaceDetector(detector)  # 'auto' may resolve to HOG where BlazeFace is missing: the key says which
    h.update(det.name.encode())
    if det.name.startswith("blazeface"):
        from .blazeface import model_dir
        for f in sorted(model_dir().glob("*.tflite")):
            _file_digest(h, f)
    h.update(str(landmarks or "dlib").encode())
    _file_digest(h, shape_predictor_path() if landmarks in (None, "", "dlib") else
                 shipped_landmark_net() if landmarks == "net" else Path(landmarks))
    h.update(np.asarray(align.TEMPLATES.get(framing, np.zeros(0)), np.float32).tobytes())
    if boxes is not None:
        h.update(np.ascontiguousarray(boxes, np.float32).tobytes())
    # "aligned2": entries hold each face's landmarks too (an "aligned-" entry, without them, is never read)
    return f"aligned2-{framing}-{size}-{channels}-aa{int(bool(antialias))}-{det.name}-{h.hexdigest()[:16]}"


class _Worker:
    """One front end (detector, landmarker) aligning photos one by one."""

    def __init__(self, size, channels, framing, detector, landmarks, antialias):
        from .detect import FaceDetector
        from .landmarks import make_landmarker
        self.det, self.lm = FaceDetector(detector), make_landmarker(landmarks)
        self.size, self.channels, self.framing, self.antialias = size, channels, framing, antialias

    def __call__(self, path, box):
        """((aligned uint8 (C, S, S), its 68 points in crop pixels), None) or (None, why it was left out)."""
        from ..data.imageio import BadImageError, read_image
        from .frontend import MATCH_MIN_IOU, align_detections, detect_faces, pick_face
        try:
            rgb = read_image(path, "RGB")
        except BadImageError as e:
            return None, f"unreadable: {e}"
        dets = detect_faces(self.det, rgb)
        i = pick_face([d.box for d in dets], box)
        if i is None:
            if not dets:
                return None, "no face found by the front end"
            return None, f"no detected face overlaps the labelled box (IoU >= {MATCH_MIN_IOU})"
        try:
            crops, points, _ = align_detections(rgb, [dets[i]], self.lm, self.size, self.channels, self.framing,
                                                self.antialias)
        except ValueError as e:  # landmarks from which no alignment can be estimated
            return None, f"alignment failed: {e}"
        return (crops[0], points[0]), None


_WORKER = None


def _init_worker(args):
    global _WORKER
    _WORKER = _Worker(*args)


def _run_chunk(chunk):
    return [_WORKER(p, b) for p, b in chunk]


def aligned_faces(samples, size: int, channels: int, framing: str = "fer2013", detector: str = "auto",
                  landmarks: str | None = None, antialias: bool = True, workers: int | None = None,
                  progress: bool = True, with_landmarks: bool = False):
    """Every photo of `samples` through the front end (once; cached). Returns (images (N, C, S, S)
    uint8, ok (N,), misses [(path, why)]) where `ok` marks the photos whose face was aligned; with
    `with_landmarks` also the faces' 68 points (N, 68, 2) in the aligned crops' pixels (NaN where
    not ok)."""
    n = len(samples)
    boxes = samples.flags.get("box")
    boxes = np.full((n, 4), np.nan, np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(n, 4)
    key = front_end_key(size, channels, framing, detector, landmarks, antialias, boxes)

    def compute():
        args = (size, channels, framing, detector, landmarks, antialias)
        items = [(str(p), None if not np.all(np.isfinite(b)) else b.tolist()) for p, b in zip(samples.paths, boxes)]
        nw = workers if workers is not None else min(4, os.cpu_count() or 1)
        chunks = [items[i:i + 32] for i in range(0, len(items), 32)]
        from tqdm import tqdm
        bar = tqdm(total=n, desc=f"front end on {samples.source or 'photos'} (once, cached)", unit="photo",
                   disable=not progress or n < 50, mininterval=5, leave=False)
        results = []
        if nw <= 1 or n < 64:
            _init_worker(args)
            for c in chunks:
                results += _run_chunk(c)
                bar.update(len(c))
        else:
            import multiprocessing as mp
            with mp.get_context("fork").Pool(nw, _init_worker, (args,)) as pool:
                for r in pool.imap(_run_chunk, chunks):
                    results += r
                    bar.update(len(r))
        bar.close()
        imgs = np.zeros((n, channels, size, size), np.uint8)
        points = np.zeros((n, 68, 2), np.float32)
        ok = np.zeros(n, bool)
        why = []
        for i, (face, reason) in enumerate(results):
            if face is None:
                why.append(reason)
            else:
                (imgs[i], points[i]), ok[i] = face, True
                why.append("")
        return {"images": imgs, "landmarks": points, "ok": ok, "why": np.array(why, dtype=str)}

    out = cached_arrays(key, samples.paths, compute)
    misses = [(str(p), str(w)) for p, w, o in zip(samples.paths, out["why"].tolist(), out["ok"]) if not o]
    if with_landmarks:
        return out["images"], out["ok"], misses, np.where(out["ok"][:, None, None], out["landmarks"], np.nan)
    return out["images"], out["ok"], misses
