"""BlazeFace in ferlab: anchors, decoding, weighted NMS and tiles written here, the .tflite networks
that ship inside ferlab run on ai-edge-litert."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlab.faces import blazeface as bf
from ferlab.faces.detect import FaceDetector


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    return bf.BlazeFaceDetector("short")


def test_ssd_anchors_match_the_networks_outputs():
    short = bf.ssd_anchors(128, (8, 16, 16, 16), 2)
    assert short.shape == (896, 2)                  # 16x16x2 + 8x8x6
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])  # two anchors per cell on the stride-8 map
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(short[512:518], np.repeat(short[512:513], 6, 0))  # six per cell at stride 16
    assert bf.ssd_anchors(192, (4,), 1).shape == (2304, 2)
    assert bf.ssd_anchors(256, (16, 32, 32, 32), 2).shape == (896, 2)


def test_decode_box_and_keypoints_relative_to_anchor():
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    raw[0, :4] = [12.8, -6.4, 32, 64]          # centre moves by (+0.1, -0.05), size 0.25 x 0.5 of 128
    raw[0, 4:6] = [-12.8, 0]                   # first keypoint 0.1 left of the anchor
    scores = np.array([3.0, -3.0], np.float32)  # sigmoid 0.95 and 0.05
    boxes, kps, s = bf.decode(raw, scores, anchors, 128, 0.5)
    assert len(s) == 1 and abs(s[0] - 1 / (1 + np.exp(-3))) < 1e-6
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25], atol=1e-6)
    np.testing.assert_allclose(kps[0, 0], [0.15, 0.5], atol=1e-6)
    np.testing.assert_allclose(kps[0, 1], [0.25, 0.5], atol=1e-6)


def test_weighted_nms_blends_overlaps_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 3
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    b, k, s, f = bf.weighted_nms(boxes, kps, scores, 0.3, flags=[False, True, False])
    assert len(s) == 2 and s.tolist() == pytest.approx([0.9, 0.8])
    np.testing.assert_allclose(b[0], (boxes[0] * 0.9 + boxes[1] * 0.3) / 1.2, atol=1e-5)
    np.testing.assert_allclose(k[0], np.full((6, 2), 3 * 0.3 / 1.2), atol=1e-5)
    assert f.tolist() == [True, False]
    empty = bf.weighted_nms(np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32))
    assert all(len(x) == 0 for x in empty)


def test_tiles_cover_the_frame_with_overlap():
    tiles = bf.tile_grid(480, 640, 160)
    cover = np.zeros((480, 640), int)
    for x, y, t in tiles:
        assert t == 160 and 0 <= x <= 640 - t and 0 <= y <= 480 - t
        cover[y:y + t, x:x + t] += 1
    assert cover.min() >= 1 and cover.mean() > 1.5
    assert bf.tile_grid(100, 100, 160) == [(0, 0, 100)]


@pytest.mark.parametrize("h, w, tile, overlap", [(480, 640, 160, 0.5), (256, 256, 160, 0.4), (300, 420, 160, 0.47)])
def test_every_square_up_to_the_overlap_lies_inside_one_tile(h, w, tile, overlap):
    tiles = bf.tile_grid(h, w, tile, overlap)
    side = int(overlap * tile)
    for y in range(0, h - side + 1, 7):
        for x in range(0, w - side + 1, 7):
            assert any(tx <= x and x + side <= tx + t and ty <= y and y + side <= ty + t for tx, ty, t in tiles), (x, y)


def test_small_frames_get_as_few_tiles_as_their_faces_need(detector):
    """The tile schedule: a 640x480 frame keeps 3 levels x 50 % overlap (4 whole-frame views + 35 +
    6 tiles); on a 256x256 photo the whole frame finds faces from 64 px, so the 160 px tiles need
    overlap by only 64 px: 2 x 2 tiles, not 3 x 3."""
    n_whole = len(detector.WHOLE_FRAME_PADS)
    assert len(detector.windows(480, 640)) == n_whole + 35 + 6
    small = detector.windows(256, 256)
    assert len(small) == n_whole + 4 and sorted({w[2] for w in small}) == [160, 256]


def test_the_scaled_schedule_sees_each_face_size_level_once(detector):
    """The default schedule: one pass per level, the frame resized so that the level's smallest face
    (40 px, then 80 px) covers a quarter of the 128 px input: 0.8x and 0.4x for 640x480, 0.8x for a
    256 px photo, none for a 96 px crop; a level keeps faces up to 0.7 of its tile side."""
    assert detector.levels(480, 640) == [(0.8, pytest.approx(112.0)), (0.4, pytest.approx(224.0))]
    assert detector.levels(256, 256) == [(0.8, pytest.approx(112.0))]
    assert detector.levels(96, 96) == []
    assert bf.BlazeFaceDetector("short", min_face=80).levels(480, 640) == [(0.4, pytest.approx(224.0))]
    assert bf.BlazeFaceDetector("short", tiles=False).levels(480, 640) == []
    with pytest.raises(ValueError, match="unknown detection schedule"):
        bf.BlazeFaceDetector("short", schedule="pyramid")


def test_the_full_range_network_keeps_its_tiles(astronaut, detector):
    """The full-range network's graph cannot run at another input size: it looks for small faces in
    tiles, and finds the astronaut on her own and shrunk into a larger frame."""
    full = bf.BlazeFaceDetector("full")
    assert full.schedule == "tiles" and detector.schedule == "scaled"
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[100:356, 200:456] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    for rgb, (cx, cy) in ((astronaut, (225, 125)), (frame, (200 + 225 / 2, 100 + 125 / 2))):
        dets = full(rgb)
        assert dets and any(abs((d.box[0] + d.box[2]) / 2 - cx) < 30 and abs((d.box[1] + d.box[3]) / 2 - cy) < 30
                            for d in dets), [d.box for d in dets]


@pytest.mark.parametrize("length, chunk, overlap", [(1024, 640, 112), (640, 640, 50), (2000, 640, 200), (700, 640, 320)])
def test_chunks_cover_a_level_with_the_overlap_asked(length, chunk, overlap):
    starts = bf.chunk_starts(length, chunk, overlap)
    assert starts[0] == 0 and starts[-1] + chunk == max(length, chunk)
    assert all(b - a <= chunk - overlap for a, b in zip(starts, starts[1:]))  # every overlap at least `overlap`
    n = len(starts)
    assert n <= 2 or (length - chunk) / (n - 2) > chunk - overlap  # one chunk fewer could not keep the overlap


def test_interpreters_for_larger_inputs_are_kept_within_a_pixel_budget():
    """Each input shape is prepared once and kept; the least recently used go when the kept inputs
    would exceed MAX_NET_PIXELS."""
    det = bf.BlazeFaceDetector("short")
    for side in (640, 512, 640, 320, 496):
        det._net(np.zeros((side, side, 3), np.uint8))
    assert list(det._nets) == [(640, 640), (320, 320), (496, 496)]  # 512 was the least recently used
    assert sum(h * w for h, w in det._nets) <= det.MAX_NET_PIXELS


def test_the_input_is_written_into_the_interpreter_as_the_network_wants_it(astronaut):
    """`_net` scales the canvas to [-1, 1] straight into the interpreter's buffer: the outputs are
    those of the float input made the plain way and handed over with set_tensor."""
    det = bf.BlazeFaceDetector("short")
    canvas = cv2.resize(astronaut, (208, 208), interpolation=cv2.INTER_AREA)
    b1, k1, s1 = det._net(canvas)
    it, inp, score_out, box_out, anchors = det._interpreter(208, 208)
    it.set_tensor(inp, (canvas.astype(np.float32) / 127.5 - 1.0)[None])
    it.invoke()
    b2, k2, s2 = bf.decode(it.get_tensor(box_out)[0], it.get_tensor(score_out)[0], anchors, (208, 208), det.min_score)
    assert len(s1) > 0
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    np.testing.assert_allclose(b1, b2 * 208, atol=1e-3)
    np.testing.assert_allclose(k1, k2 * 208, atol=1e-3)


def test_resizing_for_a_pass_averages_areas_to_shrink():
    """Shrinking: OpenCV's pixel-area averaging (what the shipped models' training faces were found
    with); the same size: the image itself; larger: bilinear."""
    img = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert bf.resize_for_net(img, 320, 240) is img
    for size in ((160, 120), (256, 192), (128, 96)):
        np.testing.assert_array_equal(bf.resize_for_net(img, *size), cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(bf.resize_for_net(img, 400, 300),
                                  cv2.resize(img, (400, 300), interpolation=cv2.INTER_LINEAR))


def test_a_larger_input_decodes_like_the_networks_own(astronaut, detector):
    """The network is fully convolutional: the astronaut letterboxed into 128 px, and the same
    canvas doubled to 256 px, give the same face (its box in canvas pixels scales by 2)."""
    canvas = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    b1, k1, s1 = detector._net(canvas)
    b2, k2, s2 = detector._net(cv2.resize(canvas, (256, 256), interpolation=cv2.INTER_LINEAR))
    assert bf.ssd_anchors((256, 192), (8, 16, 16, 16), 2).shape == (32 * 24 * 2 + 16 * 12 * 6, 2)
    best1, best2 = b1[np.argmax(s1)], b2[np.argmax(s2)]
    np.testing.assert_allclose(best2 / 2, best1, atol=4)
    np.testing.assert_allclose(k2[np.argmax(s2)] / 2, k1[np.argmax(s1)], atol=4)


def test_finds_the_astronaut_with_plausible_keypoints(astronaut, detector):
    dets = detector(astronaut)
    assert len(dets) == 1
    d = dets[0]
    x0, y0, x1, y1 = d.box
    assert 150 < (x0 + x1) / 2 < 290 and 60 < (y0 + y1) / 2 < 190 and d.score > 0.75
    eyes, nose, mouth = d.keypoints[:2], d.keypoints[2], d.keypoints[3]
    assert eyes[0, 0] < nose[0] < eyes[1, 0]            # image-left eye, nose, image-right eye
    assert eyes[:, 1].max() < nose[1] < mouth[1]         # eyes above nose above mouth
    assert all(x0 - 20 <= p[0] <= x1 + 20 and y0 - 20 <= p[1] <= y1 + 20 for p in d.keypoints[:4])
    assert d.detector == "blazeface-short" and d.box_for_landmarks == d.landmark_box


def test_no_face_in_flat_or_noise_images(detector):
    assert detector(np.full((480, 640, 3), 128, np.uint8)) == []
    rng = np.random.RandomState(0)
    assert detector(rng.randint(0, 255, (480, 640, 3), dtype=np.uint8)) == []


def test_a_face_filling_a_small_crop_is_found(astronaut, detector):
    """FER+-style input: a 48x48 gray crop that is all face (the padded whole-frame pass)."""
    d = detector(astronaut)[0]
    x0, y0, x1, y1 = (int(v) for v in d.box)
    crop = cv2.cvtColor(cv2.resize(astronaut[y0:y1, x0:x1], (48, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    assert detector(np.stack([crop] * 3, -1))


def test_small_and_large_faces_on_one_frame_are_all_found(astronaut, detector):
    """Three copies of a real face, 48 to 150 px, on a 640x480 frame: the tiles find the small ones."""
    d = detector(astronaut)[0]
    x0, y0, x1, y1 = (int(v) for v in d.box)
    m = (x1 - x0) // 3
    face = astronaut[y0 - m:y1 + m, x0 - m:x1 + m]
    frame = np.full((480, 640, 3), 90, np.uint8)
    truth = []
    for (x, y), side in zip([(30, 40), (250, 40), (360, 220)], (48, 90, 150)):
        full = int(side * face.shape[0] / (y1 - y0))
        frame[y:y + full, x:x + full] = cv2.resize(face, (full, full), interpolation=cv2.INTER_AREA)
        off = (full - side) // 2
        truth.append((x + off + side / 2, y + off + side / 2, side))
    dets = detector(frame)
    assert len(dets) == 3, [x.box for x in dets]
    for cx, cy, side in truth:
        assert any(abs((b.box[0] + b.box[2]) / 2 - cx) < side / 2 and abs((b.box[1] + b.box[3]) / 2 - cy) < side / 2
                   and 0.5 < (b.box[2] - b.box[0]) / side < 1.6 for b in dets)
    assert not bf.BlazeFaceDetector("short", tiles=False)(frame)[2:]  # without tiles the 48 px face is missed


def test_landmark_box_follows_the_recorded_framing():
    import json
    from pathlib import Path
    rec = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/blazeface_framing.json").read_text())
    assert bf.HOG_FRAMING == rec["hog_framing"]
    b = bf.hog_like_box((100, 100, 200, 200), 640, 480)
    side = 100 * rec["hog_framing"]["scale"]
    assert b[2] - b[0] == pytest.approx(side) and (b[1] + b[3]) / 2 == pytest.approx(150 + 100 * rec["hog_framing"]["dy"])


def test_face_detector_names(astronaut):
    assert FaceDetector().name == "blazeface-short"
    assert FaceDetector("blazeface-full").name == "blazeface-full"
    assert FaceDetector("hog").name == "dlib-hog"
    with pytest.raises(ValueError, match="unknown detector"):
        FaceDetector("yolo")
    with pytest.raises(ValueError, match="unknown BlazeFace variant"):
        bf.BlazeFaceDetector("tiny")


def test_missing_model_files_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_BLAZEFACE_DIR", str(tmp_path))
    with pytest.raises(bf.BlazeFaceUnavailable, match="model file missing"):
        bf.BlazeFaceDetector("short")


def test_cli_detector_choices_match_the_library():
    from ferlab.cli import DETECTOR_CHOICES
    from ferlab.faces import DETECTORS
    assert tuple(DETECTOR_CHOICES) == tuple(DETECTORS)


def test_default_detector_invents_no_faces_on_real_faceless_photos(astronaut):
    """The old Haar fallback reported confident 'faces' on a suit and a background; the default
    detector has no fallback and finds nothing on the astronaut's suit or on face-free photos."""
    from skimage import data
    det = FaceDetector()
    suit = np.ascontiguousarray(astronaut[200:, :])
    for name, img in [("suit", suit), ("coffee", data.coffee()), ("rocket", data.rocket())]:
        assert det(img) == [], name


def test_weighted_nms_drops_a_nested_duplicate():
    """The same face seen at two scales: IoU under the threshold, but one box holds the other."""
    boxes = np.array([[100, 100, 150, 150], [80, 80, 170, 170], [300, 300, 340, 340]], np.float32)
    from ferlab.faces.detection import iou_matrix
    iou = iou_matrix(boxes[0], boxes[1:2])[0, 0]
    assert iou < 0.35 and iou_matrix(boxes[0], boxes[1:2], over_smaller=True)[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(iou_matrix(boxes, boxes).diagonal(), 1.0)
    b, _, s, _ = bf.weighted_nms(boxes, np.zeros((3, 6, 2), np.float32), np.array([0.9, 0.6, 0.8], np.float32), 0.35)
    np.testing.assert_allclose(b, boxes[[0, 2]])
    assert s.tolist() == pytest.approx([0.9, 0.8])


def test_the_networks_ship_inside_ferlab_and_a_missing_one_is_never_silent(tmp_path, monkeypatch):
    import warnings
    from pathlib import Path

    import ferlab
    from ferlab.faces.blazeface import BlazeFaceUnavailable, model_dir
    assert model_dir().parent.parent == Path(ferlab.__file__).resolve().parent
    assert {p.name for p in model_dir().glob("*.tflite")} >= {"face_detection_short_range.tflite",
                                                              "face_detection_full_range.tflite"}
    assert (model_dir() / "LICENSE").is_file() and "Apache" in (model_dir() / "LICENSE").read_text()
    monkeypatch.setenv("FERLAB_BLAZEFACE_DIR", str(tmp_path))  # a folder without the networks
    with pytest.raises(BlazeFaceUnavailable, match="model file missing"):
        FaceDetector("blazeface")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = FaceDetector("auto")
    assert det.name == "dlib-hog" and any("dlib's HOG detector instead" in str(w.message) for w in caught)


def _calls_and_faces(detector, rgb, method="_net", **kw):
    """(calls of the detector's `method`, faces) of one detector call: network passes by default."""
    calls = []
    run = getattr(detector, method)

    def counted(*a, **k):
        calls.append(1)
        return run(*a, **k)
    setattr(detector, method, counted)
    try:
        faces = detector(rgb, **kw)
        return len(calls), faces
    finally:
        setattr(detector, method, run)


def _passes_and_faces(detector, rgb, **kw):
    return _calls_and_faces(detector, rgb, **kw)


def _levels_and_faces(detector, rgb, **kw):
    """(finer levels run, faces) of one detector call."""
    return _calls_and_faces(detector, rgb, "_run_level", **kw)


def _same_faces(a, b, iou=0.8):
    def overlap(p, q):
        ix = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        iy = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        inter = ix * iy
        return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)
    return len(a) == len(b) and all(max(overlap(x.box, y.box) for y in b) >= iou for x in a)


def test_the_padded_views_are_skipped_beside_a_large_face_and_find_the_same_faces(astronaut, detector):
    """A portrait (the face half the frame): the unpadded view finds it, so the three padded views
    are skipped (2 passes, not 5: the whole frame and one finer level) and the faces are those of
    every view; a crop that is all face keeps its face too."""
    d = detector(astronaut)[0]
    x0, y0, x1, y1 = (int(v) for v in d.box)
    cx, cy, side = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0)
    portrait = cv2.resize(astronaut[max(0, cy - side):cy + side, max(0, cx - side):cx + side], (256, 256),
                          interpolation=cv2.INTER_AREA)
    n_all = len(detector.WHOLE_FRAME_PADS) + len(detector.levels(256, 256))
    n_skip, fast = _passes_and_faces(detector, portrait)
    n_full, full = _passes_and_faces(detector, portrait, skip_padded=False)
    assert n_full >= n_all and n_skip == n_full - (len(detector.WHOLE_FRAME_PADS) - 1) and n_skip <= 3
    assert len(fast) == 1 and _same_faces(fast, full)
    crop = cv2.resize(astronaut[y0:y1, x0:x1], (96, 96), interpolation=cv2.INTER_AREA)  # all face
    n_skip, fast = _passes_and_faces(detector, crop)
    n_full, full = _passes_and_faces(detector, crop, skip_padded=False)
    assert fast and n_skip <= n_full and _same_faces(fast, full)


TW = Path(__file__).resolve().parents[2] / "shared" / "data" / "twperformers"


@pytest.mark.skipif(not (TW / "index.csv").is_file(), reason=f"twperformers not found at {TW}; CI has it")
def test_the_skipping_schedule_finds_the_exhaustive_faces_on_real_photos(detector):
    """80 twperformers portraits (every 15th photo): the same faces, boxes within IoU 0.8, as with
    every view and every level, and fewer passes in all: the padded views skipped beside the large
    face, and the finer level on most of them too (nothing else in the whole-frame view)."""
    import csv
    rows = list(csv.DictReader(open(TW / "index.csv")))[::15]
    saved = levels_skipped = 0
    for r in rows:
        rgb = cv2.cvtColor(cv2.imread(str(TW / r["path"])), cv2.COLOR_BGR2RGB)
        n_skip, fast = _passes_and_faces(detector, rgb)
        n_full, full = _passes_and_faces(detector, rgb, skip_padded=False, skip_levels=False)
        n_levels, with_level = _passes_and_faces(detector, rgb, skip_levels=False)
        assert _same_faces(fast, full) and _same_faces(full, fast), r["path"]
        assert _same_faces(with_level, full) and n_levels == n_skip + (n_levels > n_skip)
        saved += n_full - n_skip
        levels_skipped += n_levels > n_skip
    assert saved >= 3 * len(rows) + len(rows) // 2 and levels_skipped >= len(rows) // 2


def test_the_whole_frame_view_decides_the_level_only_where_it_sees_the_levels_faces(detector):
    """A level is left to the whole-frame view's say only where that view sees the level's smallest
    face at PROPOSAL_SIDE network pixels (a 256 px photo at min_face 40: 20 px; a 640x480 frame: no)."""
    (scale,), = [[s for s, _ in detector.levels(256, 256)]]
    assert detector.proposes(256, 256, scale)
    assert not any(detector.proposes(480, 640, s) for s, _ in detector.levels(480, 640))
    big = bf.BlazeFaceDetector("short", min_face=100)
    assert [big.proposes(480, 640, s) for s, _ in big.levels(480, 640)] == [True]
    weak = np.array([[10, 10, 30, 30], [100, 100, 120, 120], [90, 150, 140, 200]], np.float32)
    found = np.array([[80, 80, 200, 200]], np.float32)
    assert detector.outside_faces(weak, found) == 1 and detector.outside_faces(weak, found[:0]) == 3


def test_a_small_face_beside_a_portrait_still_gets_its_level(astronaut, detector):
    """A 256 px frame filled by a face (the astronaut's, 140 px, larger than the level's faces): the
    whole-frame view finds it and nothing else, so the finer level is skipped (one pass). With a
    second, 40 px face in a corner (the level's sizes), whether the whole-frame view sees it without
    confidence or finds it confidently, the level runs and both faces are those of every level run."""
    d = detector(astronaut)[0]
    x0, y0, x1, y1 = (int(v) for v in d.box)
    alone = np.full((256, 256, 3), 90, np.uint8)
    alone[58:198, 58:198] = cv2.resize(astronaut[y0:y1, x0:x1], (140, 140), interpolation=cv2.INTER_AREA)
    n_alone, faces_alone = _passes_and_faces(detector, alone)
    assert n_alone == 1 and len(faces_alone) == 1 and _levels_and_faces(detector, alone)[0] == 0
    m = (x1 - x0) // 3
    head = cv2.resize(astronaut[y0 - m:y1 + m, x0 - m:x1 + m], (66, 66), interpolation=cv2.INTER_AREA)  # a 40 px face
    for (x, y), sure in (((0, 190), False), ((4, 4), True)):
        frame = alone.copy()
        frame[y:y + 66, x:x + 66] = head
        boxes, _, scores = detector._run(frame)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        there = scores[np.all((centres >= (x, y)) & (centres <= (x + 66, y + 66)), 1)]
        assert (there.max(initial=0) >= detector.confident) == sure, there  # the placement is as meant
        levels, every = _levels_and_faces(detector, frame, skip_levels=False)
        ran, faces = _levels_and_faces(detector, frame)
        assert levels == 1 and ran == 1 and len(faces) == 2 and _same_faces(faces, every)


def test_quieting_native_stderr_from_many_threads_gives_the_process_its_stderr_back():
    """Detectors built in parallel (a folder's front-end workers) each silence fd 2 for a moment; the
    process must end with its own stderr, not /dev/null (a lost 'skipped N of M inputs' report)."""
    import os
    import threading
    import time

    from ferlab.faces.blazeface import _quiet_stderr
    before = os.fstat(2)

    def work():
        for _ in range(30):
            with _quiet_stderr():
                time.sleep(0.0005)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert os.path.samestat(os.fstat(2), before)


def _pasted_faces(astronaut, detector, shape, placements):
    """Copies of the astronaut's face (with some head around it) pasted on a flat frame ->
    (frame, true boxes)."""
    d = detector(astronaut)[0]
    x0, y0, x1, y1 = (int(v) for v in d.box)
    m = (x1 - x0) // 3
    face = astronaut[y0 - m:y1 + m, x0 - m:x1 + m]
    frame = np.full((*shape, 3), 90, np.uint8)
    truth = []
    for (x, y), side in placements:
        full = int(side * face.shape[0] / (y1 - y0))
        frame[y:y + full, x:x + full] = cv2.resize(face, (full, full), interpolation=cv2.INTER_AREA)
        off = (full - side) // 2
        truth.append((x + off, y + off, x + off + side, y + off + side))
    return frame, truth


def test_the_scaled_schedule_finds_the_tile_schedules_faces(astronaut, detector):
    """The default schedule against the tile schedule (the reference, every tile at 50 % overlap):
    the same faces, boxes within IoU 0.8, with fewer network pixels, on the astronaut, a 640x480
    frame of faces from 48 to 150 px, and a 1280x960 frame whose finest level (1024x768) is cut
    into chunks, faces lying across the chunks' overlap."""
    tiles = bf.BlazeFaceDetector("short", schedule="tiles")
    frames = [astronaut,
              _pasted_faces(astronaut, detector, (480, 640), [((30, 40), 48), ((250, 40), 90), ((360, 220), 150)])[0],
              _pasted_faces(astronaut, detector, (960, 1280), [((380, 300), 56), ((600, 420), 48), ((760, 560), 110),
                                                               ((100, 700), 70), ((900, 80), 200)])[0]]
    for frame in frames:
        pixels = {}
        for name, det in (("scaled", detector), ("tiles", tiles)):
            seen = []
            net = det._net
            det._net = lambda canvas, *a, net=net: (seen.append(canvas.shape[0] * canvas.shape[1]), net(canvas, *a))[1]
            try:
                pixels[name] = (det(frame), sum(seen))
            finally:
                det._net = net
        (scaled, n_scaled), (tiled, n_tiled) = pixels["scaled"], pixels["tiles"]
        assert _same_faces(scaled, tiled) and _same_faces(tiled, scaled), ([f.box for f in scaled], [f.box for f in tiled])
        assert n_scaled < n_tiled / 1.5
    assert len(detector(frames[2])) == 5


@pytest.mark.skipif(not (TW / "index.csv").is_file(), reason=f"twperformers not found at {TW}; CI has it")
def test_the_scaled_schedule_finds_the_tile_schedules_faces_on_real_photos(detector):
    """80 twperformers portraits (every 15th photo): the same faces, boxes within IoU 0.8, as the
    tile schedule with every view."""
    import csv
    tiles = bf.BlazeFaceDetector("short", schedule="tiles")
    for r in list(csv.DictReader(open(TW / "index.csv")))[::15]:
        rgb = cv2.cvtColor(cv2.imread(str(TW / r["path"])), cv2.COLOR_BGR2RGB)
        scaled, reference = detector(rgb), tiles(rgb, skip_padded=False)
        assert _same_faces(scaled, reference) and _same_faces(reference, scaled), r["path"]
