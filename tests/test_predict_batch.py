"""`ferlab predict FOLDER`: results as they come, faces of several photos in one model batch,
annotated copies optional; big photos detected on a downscaled copy."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="module")
def analyzer():
    from ferlab.app.analyzer import FaceAnalyzer
    return FaceAnalyzer()


def run(*args):
    return subprocess.run([sys.executable, "-m", "ferlab.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def test_folder_streams_rows_and_skips_bad_items(astronaut, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(11):
        img = astronaut if i % 2 == 0 else astronaut[:, ::-1]
        Image.fromarray(np.ascontiguousarray(img)).save(src / f"p{i:02d}.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG broken")
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(src / "blank.png")
    (src / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    r = run("predict", str(src), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 11 and {x["label"] for x in rows} == {"happiness"}
    assert abs(sum(float(rows[0][f"p_{n}"]) for n in json.loads(open(out / "predictions.json").read())["labels"]) - 1) < 1e-3
    lines = [json.loads(x) for x in open(out / "predictions.jsonl")]
    assert len(lines) == 11 and lines[0]["file"].endswith("p00.jpg") and len(lines[0]["box"]) == 4
    assert not list(out.glob("*_annotated.png"))  # more than 10 photos: no annotated copies unless asked
    assert "skipped 3 of 14 inputs" in r.stderr and "no face found" in r.stderr and "not an image" in r.stderr
    r = run("predict", str(src), "--out", str(tmp_path / "out2"), "--annotate")
    assert r.returncode == 0 and len(list((tmp_path / "out2").glob("*_annotated.png"))) == 11


def test_rows_are_on_disk_before_the_run_ends(astronaut, tmp_path, analyzer):
    """A run stopped midway (Ctrl-C) keeps every row written so far."""
    from ferlab.app.batch import run_batch
    calls = {"n": 0}
    real = analyzer.classify_prepared

    def stop_on_second(prepared):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(prepared)
    analyzer.classify_prepared = stop_on_second
    try:
        items = [(f"a{i}", astronaut) for i in range(5)]
        with pytest.raises(KeyboardInterrupt):
            run_batch(analyzer, items, tmp_path, annotate=False, progress=False, images_per_batch=2)
    finally:
        analyzer.classify_prepared = real
    assert len(list(csv.DictReader(open(tmp_path / "predictions.csv")))) == 2


def test_front_end_workers_give_the_same_rows_in_the_same_order(astronaut, tmp_path, analyzer):
    """Photos of different sizes, faceless and broken ones among them: the table written with three
    front-end processes (threads when annotating) is the one-worker table, byte for byte, and the
    skipped list is the same. The model is on ONNX Runtime, so the three processes classify their
    runs of photos as well (the parent only writes)."""
    from skimage import data

    from ferlab.app.batch import run_batch

    src = tmp_path / "in"
    src.mkdir()
    views = [astronaut, astronaut[:, ::-1], cv2.resize(astronaut, (200, 200)), astronaut[40:300, 100:360],
             np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[:, :, None], 3, 2), data.coffee(),
             cv2.resize(astronaut, (900, 700)), np.ascontiguousarray(np.rot90(astronaut))]
    items = []
    for i, im in enumerate(views * 2):
        Image.fromarray(np.ascontiguousarray(im)).save(src / f"p{i:02d}.jpg")
        items.append((f"p{i:02d}.jpg", src / f"p{i:02d}.jpg"))
        if i == 4:
            (src / "broken.png").write_bytes(b"\x89PNG broken")
            items.append(("broken.png", src / "broken.png"))
    items.append(("notes.txt", ("not-image", src / "notes.txt")))
    out, here = {}, []
    assert analyzer.onnx is not None
    real = analyzer.classify_prepared
    analyzer.classify_prepared = lambda prepared: here.append(len(prepared)) or real(prepared)
    try:
        for w, annotate in ((1, False), (3, False), (2, True)):
            here.clear()
            res, skipped = run_batch(analyzer, items, tmp_path / f"w{w}", annotate=annotate, progress=False,
                                     images_per_batch=3, workers=w)
            # one model call per run of 3 items with a good photo in it: here, or in the processes
            assert (here == []) if (w, annotate) == (3, False) else (len(here) == -(-len(items) // 3)), (w, here)
            out[w] = ((tmp_path / f"w{w}" / "predictions.csv").read_text(), [s["input"] for s in skipped],
                      [r["input"] for r in res])
    finally:
        del analyzer.classify_prepared
    assert out[3] == out[1] and out[2] == out[1]
    assert len(list((tmp_path / "w2").glob("*_annotated.png"))) == len(out[2][2])
    assert len(out[1][2]) >= 12 and out[1][1] == ["broken.png", "p05.jpg", "p13.jpg", "notes.txt"]


def test_faces_of_several_photos_in_one_batch(astronaut, analyzer):
    calls = []
    real = analyzer.predict_tensor

    def spy(batch, pts=None):
        calls.append(len(batch))
        return real(batch, pts)
    analyzer.predict_tensor = spy
    try:
        many = analyzer.analyze_many([astronaut, astronaut[:, ::-1], np.full((64, 64, 3), 9, np.uint8)])
    finally:
        analyzer.predict_tensor = real
    assert calls == [2] and [len(f) for f in many] == [1, 1, 0]
    one = analyzer.analyze(astronaut)[0]
    assert many[0][0]["probs"] == pytest.approx(one["probs"], abs=1e-5)


def test_big_photo_detected_on_a_downscaled_copy(astronaut, analyzer):
    """A 24 MP photo: the face is found where it is, landmarks in the photo's own pixels."""
    big = cv2.resize(astronaut, (6000, 6000), interpolation=cv2.INTER_CUBIC)[500:4500]
    seen = []
    real = analyzer.detector

    class Spy:
        name = real.name

        def __call__(self, rgb):
            seen.append(rgb.shape)
            return real(rgb)
    analyzer.detector = Spy()
    try:
        faces = analyzer.analyze(big)
    finally:
        analyzer.detector = real
    assert seen and max(seen[0][:2]) == analyzer.DETECT_MAX_SIDE
    assert len(faces) == 1 and faces[0]["label"] == "happiness"
    small = analyzer.analyze(astronaut)[0]
    k = 6000 / 512
    x0, y0, x1, y1 = faces[0]["box"]
    sx0, sy0, sx1, sy1 = small["box"]
    assert abs(x0 - sx0 * k) < 0.05 * (x1 - x0) and abs(y0 + 500 - sy0 * k) < 0.05 * (x1 - x0)
    lm = np.array(faces[0]["landmarks"])
    assert np.abs(lm - (np.array(small["landmarks"]) * k - [0, 500])).mean() < 0.03 * (x1 - x0)
