"""benchmarks/device/ferplus_bundle.py: the lossless FER+ transport rebuilds every face exactly."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np

_spec = importlib.util.spec_from_file_location(
    "ferplus_bundle", Path(__file__).resolve().parents[1] / "benchmarks" / "device" / "ferplus_bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)


def test_codec_round_trip_is_exact():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    imgs[1] = 0
    imgs[2] = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))  # smooth ramp: small residuals
    assert np.array_equal(bundle.decode(bundle.encode(imgs), 3), imgs)
    assert len(bundle.encode(imgs[2:])) < 48 * 48 // 4  # the predictor makes a smooth face compress


def test_pack_unpack_rebuilds_the_folder(tmp_path):
    src, rng = tmp_path / "src", np.random.default_rng(1)
    for split in bundle.SPLITS:
        (src / split).mkdir(parents=True)
        (src / split / "label.csv").write_text(f"{split},votes\n")
        for i in range(2):
            cv2.imwrite(str(src / split / f"fer{i:07d}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    bundle.pack(src, tmp_path / "b.npz")
    bundle.unpack(tmp_path / "b.npz", tmp_path / "dst")
    for p in src.rglob("*"):
        if p.is_file():
            q = tmp_path / "dst" / p.relative_to(src)
            if p.suffix == ".png":
                assert np.array_equal(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), cv2.imread(str(q), cv2.IMREAD_UNCHANGED))
            else:
                assert q.read_text() == p.read_text()
