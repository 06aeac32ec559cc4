"""`ferlab evaluate MODEL --photos DATA`: labelled photos through the whole pipeline."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferlab.app.photo_eval import bootstrap, read_photo_dataset, score

TW = Path(__file__).resolve().parents[2] / "shared" / "data" / "twperformers"


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    """Class folders of real photos: the astronaut (happy) twice, one photo with no face, one
    corrupt file; labels as a user would name folders."""
    from skimage import data
    root = tmp_path_factory.mktemp("photos")
    (root / "Happy").mkdir()
    (root / "sad").mkdir()
    Image.fromarray(data.astronaut()).save(root / "Happy" / "astronaut.jpg", quality=92)
    Image.fromarray(data.astronaut()[:, ::-1]).save(root / "Happy" / "astronaut_mirrored.png")
    Image.fromarray(data.coffee()).save(root / "sad" / "coffee.jpg")
    (root / "sad" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ferlab.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_cli_on_class_folders(photo_tree, tmp_path):
    r = run_cli("evaluate", "default", "--photos", str(photo_tree), "--out", str(tmp_path), "--bootstrap", "50")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["n"] == 4 and m["classes"] == ["happiness", "sadness"]
    assert m["no_face"]["n"] == 1 and m["no_face"]["images"][0].endswith("coffee.jpg")
    assert m["unreadable"]["n"] == 1 and "broken.jpg" in m["unreadable"]["images"][0]
    assert m["per_class_recall"] == {"happiness": 1.0, "sadness": 0.0}
    assert m["accuracy"] == 0.5 and m["macro_recall"] == 0.5
    assert m["bootstrap"]["resampled"] == "images"
    assert m["confusion"]["cols"][-1] == "no face" and sum(map(sum, m["confusion"]["counts"])) == 4
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert len(rows) == 4 and sum(x["label"] != "no face" for x in rows) == 2
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    assert "accuracy 0.5000" in r.stdout and "1 image(s) with no face found" in r.stdout
    assert "1 unreadable image(s)" in r.stdout


def test_front_end_workers_change_nothing(photo_tree, tmp_path):
    """The same table and metrics with the front end on one thread and on three."""
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.app.photo_eval import evaluate_photos
    fa, s = FaceAnalyzer("fast"), read_photo_dataset(photo_tree)
    out = {}
    for w in (1, 3):
        m = evaluate_photos(fa, s, tmp_path / f"w{w}", n_boot=20, progress=False, log=lambda *_: None, workers=w)
        out[w] = ((tmp_path / f"w{w}" / "predictions.csv").read_text(),
                  {k: v for k, v in m.items() if k not in ("seconds", "ms_per_image")})
    assert out[1] == out[3] and out[1][1]["no_face"]["n"] == 1 and out[1][1]["unreadable"]["n"] == 1


def test_csv_list_with_subjects(photo_tree, tmp_path):
    lst = tmp_path / "list.csv"
    lst.write_text("path,label,subject\n"
                   f"{photo_tree / 'Happy' / 'astronaut.jpg'},happy,s1\n"
                   f"{photo_tree / 'Happy' / 'astronaut_mirrored.png'},surprise,s2\n"
                   f"{photo_tree / 'sad' / 'missing.jpg'},sad,s3\n")
    s = read_photo_dataset(lst)
    assert len(s) == 2 and s.groups == ["s1", "s2"] and s.skipped and "missing" in s.skipped[0][1]
    r = run_cli("evaluate", "default", "--photos", str(lst), "--out", str(tmp_path / "out"), "--bootstrap", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["bootstrap"]["resampled"] == "subjects"
    assert m["per_class_recall"]["surprise"] == 0.0 and m["per_class_recall"]["happiness"] == 1.0
    assert "skipped by the reader" in r.stdout


def test_bad_photo_dataset_is_one_line(tmp_path):
    r = run_cli("evaluate", "default", "--photos", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file or folder" in r.stderr
    r = run_cli("evaluate", "default", "--photos", str(tmp_path), "--dataset", "imagenet")
    assert r.returncode == 2 and "unknown dataset" in r.stderr


def test_scores_and_subject_bootstrap():
    true = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, -1, 1, 0, 2, 2])  # -1: no face
    s = score(true, pred, [0, 1, 2])
    assert s["accuracy"] == pytest.approx(4 / 6) and s["macro_recall"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    b = bootstrap(true, pred, [0, 1, 2], groups=["a", "a", "b", "b", "c", "c"], n_boot=200)
    lo, hi = b["accuracy_95"]
    assert b["resampled"] == "subjects" and 0 <= lo <= 4 / 6 <= hi <= 1
    # one subject, all right: no spread
    assert bootstrap(true[4:], pred[4:], [2], groups=["c", "c"], n_boot=20)["accuracy_95"] == [1.0, 1.0]


@pytest.mark.skipif(not (TW / "index.csv").is_file(), reason="../shared/data/twperformers is not here")
def test_twperformers_reader_and_a_real_subset(tmp_path):
    s = read_photo_dataset(TW, "twperformers")
    assert len(s) == 1232 and len(set(s.groups)) == 29
    assert int(s.flags["observers_agree"].sum()) == 881
    # 2 photos per class of one performer through the pipeline
    pick = [i for c in range(len(s.label_set)) for i in np.flatnonzero((s.labels == c) &
                                                                      (np.array(s.groups) == "tw01"))[:2]]
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.app.photo_eval import evaluate_photos
    m = evaluate_photos(FaceAnalyzer(), s.subset(pick), tmp_path, n_boot=20, progress=False)
    assert m["no_face"]["n"] == 0 and m["n"] == len(pick) and "observers_agree" in m["subsets"]
    assert m["per_class_recall"]["happiness"] == 1.0
