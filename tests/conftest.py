import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ferlab.models  # noqa: E402,F401 - applies the torchvision shim before any test imports timm

ROOT = Path(__file__).resolve().parents[1]
FERPLUS = Path(os.environ.get("FERLAB_FERPLUS", ROOT.parent / "shared" / "data" / "ferplus"))
needs_ferplus = pytest.mark.skipif(not (FERPLUS / "FER2013Train" / "label.csv").is_file(),
                                   reason=f"FER+ not found at {FERPLUS} (set FERLAB_FERPLUS); CI has it")


def load_script(relpath: str):
    """A benchmark script (not part of the package) as a module, e.g. load_script("benchmarks/ablations.py")."""
    import importlib.util
    import sys
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses and pickling look a module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # each test session gets its own cache, so tests never depend on a developer's cache
    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def save_img(path: Path, arr) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)
    return path


def pattern_image(label_idx: int, seed: int, size: int = 48) -> np.ndarray:
    """A gray image whose class is learnable: a bright bar at a class-specific position, plus noise."""
    rng = np.random.RandomState(seed)
    img = rng.randint(0, 60, (size, size)).astype(np.uint8)
    step = size // 8
    img[label_idx * step:(label_idx + 1) * step, :] = 230  # a horizontal band: flip-invariant
    return img


@pytest.fixture
def class_folder_dataset(tmp_path):
    """train/valid/test class folders with 3 learnable classes."""
    names = ["neutral", "happy", "surprise"]
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        for ci, name in enumerate(names):
            for k in range(n):
                save_img(tmp_path / "ds" / split / name / f"{k}.png", pattern_image(ci, hash((split, ci, k)) % 1000))
    return tmp_path / "ds"
