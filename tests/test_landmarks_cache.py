import numpy as np
from conftest import save_img

import ferlab.faces.landmarks as lmod
from ferlab.data.readers import build_samples
from ferlab.faces import dataset_landmarks


def test_dataset_landmarks_are_computed_once(tmp_path, monkeypatch):
    import cv2
    from skimage import data
    face = cv2.cvtColor(np.ascontiguousarray(data.astronaut()[70:175, 170:272]), cv2.COLOR_RGB2GRAY)
    paths = [save_img(tmp_path / f"{i}.png", cv2.resize(face, (48, 48))) for i in range(3)]
    (tmp_path / "bad.png").write_bytes(b"junk")
    s = build_samples([(p, "happy", None) for p in paths + [tmp_path / "bad.png"]], ["happiness"], "t")
    pts, ok = dataset_landmarks(s)
    assert pts.shape == (4, 68, 2) and ok.tolist() == [True, True, True, False]
    # eyes above the mouth, inside the crop
    assert (pts[:3, 36:48, 1].mean(1) < pts[:3, 48:68, 1].mean(1)).all()
    calls = []
    monkeypatch.setattr(lmod, "DlibLandmarks", lambda *a, **k: calls.append(1))
    pts2, _ = dataset_landmarks(s)  # served from the cache: dlib is not constructed again
    assert not calls and np.array_equal(pts, pts2)
