import numpy as np
import pytest

from ferlab.faces import DlibLandmarks, FaceDetector, HaarDetector, align_face, five_points
from ferlab.faces.align import TEMPLATES


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


def test_hog_finds_astronaut_face(astronaut):
    dets = FaceDetector("hog")(astronaut)
    assert dets, "no face found"
    x0, y0, x1, y1 = dets[0].box  # best-scored face: Eileen Collins' face, upper middle of the photo
    assert 150 < (x0 + x1) / 2 < 290 and 60 < (y0 + y1) / 2 < 190
    assert dets[0].score > 0.5 and dets[0].detector == "dlib-hog"


def test_haar_fallback(astronaut):
    dets = HaarDetector()(astronaut)
    assert any(150 < (d.box[0] + d.box[2]) / 2 < 290 and 60 < (d.box[1] + d.box[3]) / 2 < 190 for d in dets)
    assert FaceDetector("auto")(np.full((100, 100, 3), 128, np.uint8)) == []


def test_landmarks_and_alignment(astronaut):
    det = FaceDetector("hog")(astronaut)[0]
    lm = DlibLandmarks()(astronaut, det.box)
    assert lm.shape == (68, 2)
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # image-left eye left of image-right eye
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean()  # eyes above nose above mouth
    for size in (48, 112):
        crop, pts, m = align_face(astronaut, lm, size, "fer2013")
        assert crop.shape == (size, size, 3)
        # the transformed five points land near the template
        err = np.abs(five_points(pts) / size - TEMPLATES["fer2013"]).max()
        assert err < 0.06
        # landmarks move with the crop: the matrix maps original points onto the returned ones
        np.testing.assert_allclose(lm @ m[:, :2].T + m[:, 2], pts, atol=1e-3)


def test_landmarks_on_precropped_face(astronaut):
    det = FaceDetector("hog")(astronaut)[0]
    x0, y0, x1, y1 = (int(v) for v in det.box)
    crop = np.ascontiguousarray(astronaut[y0:y1, x0:x1])
    import cv2
    small = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
    pts = DlibLandmarks().on_crop(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    assert pts.shape == (68, 2) and (pts > -5).all() and (pts < 53).all()


def test_alignment_area_averages_faces_much_larger_than_the_crop(astronaut):
    """A 100 px face into 48 px: the crop matches an 8x supersampled reference, unlike a direct warp."""
    import cv2
    det = FaceDetector()(astronaut)[0]
    lm = DlibLandmarks()(astronaut, det.box_for_landmarks)
    crop, pts, m = align_face(astronaut, lm, 48, "fer2013")
    k = 8
    big = m.copy()
    big[:, :2] *= k
    big[:, 2] = big[:, 2] * k + (k - 1) / 2
    ref = cv2.resize(cv2.warpAffine(astronaut, big, (48 * k, 48 * k), flags=cv2.INTER_LINEAR), (48, 48),
                     interpolation=cv2.INTER_AREA).astype(float)
    direct = cv2.warpAffine(astronaut, m, (48, 48), flags=cv2.INTER_LINEAR).astype(float)
    assert np.abs(crop - ref).mean() < 1.0 < np.abs(direct - ref).mean()
    assert np.abs(five_points(pts) / 48 - TEMPLATES["fer2013"]).max() < 0.06
