"""The probes' own parts: template changes, the stretch before alignment, the landmark-shape
features (benchmarks/photo_probe.py, benchmarks/geometry_probe.py)."""
import numpy as np
import pytest
from conftest import load_script

from ferlab.faces.align import TEMPLATES

photo_probe = load_script("benchmarks/photo_probe.py")
geometry_probe = load_script("benchmarks/geometry_probe.py")


def face_on_template(size=200, scale=1.0, offset=(0.0, 0.0)):
    """68 points whose five alignment points sit on the fer2013 template (scaled, moved)."""
    rng = np.random.default_rng(0)
    lm = rng.uniform(0.2, 0.8, (68, 2)).astype(np.float32)
    t = TEMPLATES["fer2013"]
    lm[36:42] = t[0]
    lm[42:48] = t[1]
    lm[30], lm[48], lm[54] = t[2], t[3], t[4]
    return (lm * size * scale + np.asarray(offset, np.float32)).astype(np.float32)


def test_template_zoom_and_shift():
    t = TEMPLATES["fer2013"]
    assert np.allclose(photo_probe.template(), t)
    z = photo_probe.template(zoom=1.2)
    assert np.allclose(z - 0.5, (t - 0.5) * 1.2)  # about the crop centre
    s = photo_probe.template(shift=0.04)
    assert np.allclose(s[:, 1] - t[:, 1], 0.04) and np.allclose(s[:, 0], t[:, 0])


def test_stretch_undoes_a_vertical_squash():
    """A face squashed to 1/1.25 of its height and stretched 1.25x back gives the unsquashed crop."""
    rng = np.random.default_rng(1)
    img = (rng.uniform(0, 255, (60, 60, 3))).astype(np.uint8)
    img = np.kron(img, np.ones((4, 4, 1), np.uint8))  # 240x240, smooth enough to resample
    lm = face_on_template(240)
    import cv2
    squashed = cv2.resize(img, (240, 192), interpolation=cv2.INTER_AREA)
    lm_sq = lm * np.array([1.0, 192 / 240], np.float32)
    ref = photo_probe.gray_crop(img, lm, 48, TEMPLATES["fer2013"]).astype(float)
    back = photo_probe.gray_crop(squashed, lm_sq, 48, TEMPLATES["fer2013"], stretch=1.25).astype(float)
    plain = photo_probe.gray_crop(squashed, lm_sq, 48, TEMPLATES["fer2013"]).astype(float)
    assert np.abs(back - ref).mean() < 0.5 * np.abs(plain - ref).mean()
    aff = photo_probe.gray_crop(squashed, lm_sq, 48, TEMPLATES["fer2013"], stretch=None).astype(float)
    assert np.abs(aff - ref).mean() < 0.5 * np.abs(plain - ref).mean()  # the affine map undoes it too


def test_shape_features_are_the_points_in_the_template_frame():
    a = geometry_probe.shape_features(face_on_template(100)[None])
    b = geometry_probe.shape_features(face_on_template(100, scale=2.5, offset=(30, -12))[None])
    assert a.shape == (1, 136)
    assert np.allclose(a, b, atol=1e-3)  # position and size do not matter, only shape
    assert np.allclose(a.reshape(68, 2)[30], TEMPLATES["fer2013"][2], atol=1e-3)


def test_prior_shift_without_ferplus_says_so(monkeypatch, tmp_path, capsys):
    """No FER+ folder: a one-line reason and exit code 2, before any model loads (no traceback)."""
    prior_shift = load_script("benchmarks/prior_shift.py")
    if not (prior_shift.TW / "index.csv").is_file():
        pytest.skip(f"{prior_shift.TW}: twperformers not here (the FER+ check comes after it)")
    monkeypatch.setenv("FERLAB_FERPLUS", str(tmp_path / "no_ferplus"))
    monkeypatch.setattr("sys.argv", ["prior_shift.py"])
    monkeypatch.setattr(prior_shift, "FaceAnalyzer", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert prior_shift.main() == 2
    assert "FER+ not found" in capsys.readouterr().err
