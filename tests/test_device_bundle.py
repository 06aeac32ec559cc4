"""benchmarks/device/ferplus_bundle.py: the lossless FER+ transport rebuilds every face exactly."""
import cv2
import numpy as np
from conftest import load_script

bundle = load_script("benchmarks/device/ferplus_bundle.py")


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


def test_dlib_points_travel_exactly_and_seed_the_cache(tmp_path):
    """`points` / `seed-points`: dlib's points (eighths of a pixel) reach the landmark cache of a
    machine without dlib unchanged, matched by file name, and dataset_landmarks then reads them."""
    from ferlab.data.readers.base import SampleList
    from ferlab.faces.landmarks import dataset_landmarks, seed_dataset_landmarks
    rng = np.random.default_rng(2)
    here, there, carried = {}, {}, {}
    for split in ("FER2013Train", "FER2013Test"):
        paths = []
        for i in range(3):
            p = tmp_path / "here" / split / f"fer{i:07d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), rng.integers(0, 256, (48, 48), dtype=np.uint8))
            paths.append(p)
        here[split] = SampleList(paths, np.zeros(3), ("neutral",))
        there[split] = SampleList([tmp_path / "there" / split / p.name for p in paths[::-1]], np.zeros(3), ("neutral",))
        carried[split] = {"landmarks": rng.integers(-40, 400, (3, 68, 2)).astype(np.float32) / 8,
                          "ok": np.array([True, False, True]), "sizes": np.full((3, 2), 48, np.float32)}
    arrays = bundle.points_to_arrays(here, lambda s: carried[next(k for k in here if here[k] is s)])
    assert arrays["eighths"].dtype == np.int16
    assert bundle.seed_from_arrays(there, arrays, seed_dataset_landmarks) == 2
    for split in there:  # the other machine's list is in another order: matched by name
        pts, ok = dataset_landmarks(there[split])  # no dlib call: the seeded entry is read
        assert np.array_equal(pts, carried[split]["landmarks"][::-1])
        assert np.array_equal(ok, carried[split]["ok"][::-1])
    carried["FER2013Test"]["landmarks"][0, 0, 0] = 0.3  # not an eighth: refused, not rounded
    import pytest
    with pytest.raises(SystemExit, match="eighths"):
        bundle.points_to_arrays(here, lambda s: carried[next(k for k in here if here[k] is s)])

