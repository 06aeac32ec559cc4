"""Faces from more than one source: the ExpW and SFEW readers, the labelled-box face choice, the
aligned-face cache, multi-source training (per-source weights, selection on several sources) and
calibration by temperature."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import pattern_image, save_img
from ferlab.data.arrays import load_splits
from ferlab.data.labels import CANONICAL
from ferlab.data.readers import DATASET_READERS, DatasetError
from ferlab.data.splits import merge

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_expw = pytest.mark.skipif(not (SHARED / "expw" / "index.csv").is_file(),
                                reason=f"ExpW not found at {SHARED / 'expw'}; CI has it")
needs_sfew = pytest.mark.skipif(not (SHARED / "sfew" / "index.csv").is_file(),
                                reason=f"SFEW not found at {SHARED / 'sfew'}; CI has it")


def astronaut_face() -> np.ndarray:
    from skimage import data
    return data.astronaut()[0:260, 110:330]  # her head and shoulders, 260 x 220


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """A photo of two people (the astronaut's face twice, the right one mirrored) and the two
    faces' boxes, found once by the shipped detector."""
    from ferlab.faces import FaceDetector
    face = astronaut_face()
    canvas = np.full((300, 520, 3), 90, np.uint8)
    canvas[20:280, 20:240] = face
    canvas[20:280, 280:500] = face[:, ::-1]
    path = tmp_path_factory.mktemp("two") / "two.jpg"
    Image.fromarray(canvas).save(path, quality=95)
    boxes = sorted((d.box for d in FaceDetector()(canvas)), key=lambda b: b[0])
    assert len(boxes) == 2, "the detector should find both faces"
    return path, boxes


def write_expw(root: Path, rows):
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "source_image", "face_id", "box_x0", "box_y0", "box_x1", "box_y1",
                    "box_confidence"])
        for r in rows:
            w.writerow(r)


def test_expw_reader_keeps_boxes_and_source_photos(tmp_path):
    for name in ("a_0", "a_1", "b_0"):
        save_img(tmp_path / "images" / f"{name}.jpg", pattern_image(1, 3, 64))
    write_expw(tmp_path, [["images/a_0.jpg", "happiness", "train", "a.jpg", 0, 1, 2, 30, 40, 9.0],
                          ["images/a_1.jpg", "anger", "train", "a.jpg", 1, 5, 6, 50, 60, 9.0],
                          ["images/b_0.jpg", "fear", "test", "b.jpg", 0, 0, 0, 64, 64, 9.0],
                          ["images/missing.jpg", "fear", "valid", "c.jpg", 0, 0, 0, 64, 64, 9.0]])
    splits = DATASET_READERS["expw"](tmp_path, label_set=CANONICAL)
    tr = splits["train"]
    assert [tr.label_set[i] for i in tr.labels] == ["happiness", "anger"]
    assert tr.groups == ["a.jpg", "a.jpg"]
    assert tr.flags["box"].tolist() == [[1, 2, 30, 40], [5, 6, 50, 60]]
    assert len(splits["test"]) == 1 and len(splits["valid"]) == 0 and "missing file" in splits["valid"].skipped[0][1]
    (tmp_path / "index.csv").write_text("path,label\nimages/a_0.jpg,happy\n")
    with pytest.raises(DatasetError, match="needs the columns"):
        DATASET_READERS["expw"](tmp_path, label_set=CANONICAL)


def test_sfew_reader_reads_val_as_test_with_movies(tmp_path):
    rows = [("Train/Happy/M1_1_1.png", "happiness", "train", "M1"), ("Train/Angry/M2_1_1.png", "anger", "train", "M2"),
            ("Val/Sad/M3_1_1.png", "sadness", "valid", "M3")]
    for p, *_ in rows:
        save_img(tmp_path / p, pattern_image(2, 1, 40))
    with open(tmp_path / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "movie"])
        w.writerows(rows)
    splits = DATASET_READERS["sfew"](tmp_path, label_set=CANONICAL)
    assert set(splits) == {"train", "test"} and splits["train"].groups == ["M1", "M2"]
    assert splits["test"].groups == ["M3"]
    # only the training split of a source, no valid carved out of it: SFEW in a multi-source run
    only = load_splits({"dataset": "sfew", "root": str(tmp_path), "use_splits": ["train"]})
    assert set(only) == {"train"} and len(only["train"]) == 2
    assert (only["train"].flags["input"] == "photo").all()  # photos: through the front end by default
    crops = load_splits({"dataset": "sfew", "root": str(tmp_path), "front_end": False, "use_splits": ["train"]})
    assert "input" not in crops["train"].flags
    with pytest.raises(DatasetError, match="use_splits"):
        load_splits({"dataset": "sfew", "root": str(tmp_path), "use_splits": ["training"]})


def test_csv_list_takes_boxes_and_groups(tmp_path):
    save_img(tmp_path / "x.png", pattern_image(0, 0, 32))
    (tmp_path / "list.csv").write_text("path,label,source_image,box_x0,box_y0,box_x1,box_y1\nx.png,happy,p1,1,2,3,4\n")
    s = DATASET_READERS["csv"](tmp_path, label_set=CANONICAL, csv_file="list.csv")["train"]
    assert s.groups == ["p1"] and s.flags["box"].tolist() == [[1, 2, 3, 4]]
    (tmp_path / "list.csv").write_text("path,label,box_x0,box_y0,box_x1,box_y1\nx.png,happy,1,two,3,4\n")
    with pytest.raises(DatasetError, match="not a number"):
        DATASET_READERS["csv"](tmp_path, label_set=CANONICAL, csv_file="list.csv")


def test_merge_fills_flags_a_part_lacks():
    from ferlab.data.readers import SampleList
    a = SampleList([Path("a")], np.array([0]), CANONICAL, flags={"box": np.array([[1, 2, 3, 4]], np.float32),
                                                                   "input": np.array(["photo"])})
    b = SampleList([Path("b"), Path("c")], np.array([1, 2]), CANONICAL, flags={"duplicate": np.array([True, False])})
    m = merge([a, b])
    assert m.flags["box"].shape == (3, 4) and np.isnan(m.flags["box"][1:]).all()
    assert m.flags["input"].tolist() == ["photo", "", ""] and m.flags["duplicate"].tolist() == [False, True, False]


def test_pick_face_matches_the_labelled_box():
    from ferlab.faces.frontend import MATCH_MIN_IOU, pick_face
    boxes = [(0, 0, 100, 100), (200, 0, 260, 60)]
    assert pick_face(boxes) == 0  # no box: the largest
    assert pick_face(boxes, (205, 5, 255, 55)) == 1  # the smaller face, because it is the labelled one
    assert pick_face(boxes, (400, 400, 450, 450)) is None  # no face on the box
    assert pick_face(boxes, np.full(4, np.nan)) == 0  # a NaN box is no box
    # IoU just under the floor is not a match
    assert MATCH_MIN_IOU == 0.3 and pick_face([(0, 0, 10, 10)], (0, 0, 10, 34)) is None
    assert pick_face([], (0, 0, 1, 1)) is None and pick_face([]) is None


def test_photo_evaluation_scores_the_face_on_the_box(two_faces, tmp_path):
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.app.photo_eval import evaluate_photos, read_photo_dataset
    path, (left, right) = two_faces
    far = (0, 290, 10, 299)
    with open(tmp_path / "list.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "box_x0", "box_y0", "box_x1", "box_y1"])
        w.writerow([str(path), "happy", *right])
        w.writerow([str(path), "happy", *far])
    s = read_photo_dataset(tmp_path / "list.csv")
    r = evaluate_photos(FaceAnalyzer(), s, tmp_path / "out", n_boot=10, progress=False)
    assert r["no_face"]["n"] == 1 and r["no_face"]["images"] == [str(path)]
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert abs(float(rows[0]["x0"]) - right[0]) < 1 and rows[1]["label"] == "no face"
    assert 0.0 <= r["ece"] <= 1.0


def test_aligned_cache_aligns_once_lists_misses_and_keys_on_the_input(two_faces, tmp_path, monkeypatch):
    from ferlab.data.readers import SampleList
    from ferlab.engine.inputs import model_input_images
    from ferlab.faces import aligned_cache
    path, (left, right) = two_faces
    blank = save_img(tmp_path / "blank.png", np.full((120, 120), 128))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    nan = [np.nan] * 4
    s = SampleList([path, path, path, blank, broken], np.array([1, 1, 1, 0, 0]), CANONICAL,
                   flags={"box": np.array([left, right, [0, 290, 10, 299], nan, nan], np.float32),
                          "input": np.array(["photo"] * 5)})
    imgs, ok = model_input_images(s, 48, 1)
    assert ok.tolist() == [True, True, False, False, False]
    reasons = dict(s.skipped)
    assert "overlaps the labelled box" in reasons[str(path)] and "no face found" in reasons[str(blank)]
    assert reasons[str(broken)].startswith("unreadable")
    assert imgs.shape == (5, 1, 48, 48) and not np.array_equal(imgs[0], imgs[1])
    # the right face is the left one mirrored: aligned, they are mirror images of each other
    assert np.abs(imgs[0, 0].astype(int) - imgs[1, 0, :, ::-1].astype(int)).mean() < 12
    assert not imgs[2:].any()
    # a second read comes from the cache: the front end does not run again
    monkeypatch.setattr(aligned_cache, "_Worker", None)
    s2 = s.subset(np.arange(5))
    s2.skipped = []
    again, ok2 = model_input_images(s2, 48, 1)
    assert np.array_equal(again, imgs) and np.array_equal(ok2, ok) and len(s2.skipped) == 3
    # another input size, colour or box makes another entry, never a stale one
    k = aligned_cache.front_end_key
    assert len({k(48, 1), k(64, 1), k(48, 3), k(48, 1, boxes=np.zeros((1, 4)))}) == 4
    with pytest.raises(TypeError):
        model_input_images(s2, 64, 3)  # not cached: needs the front end, which this test removed


def test_photo_faces_keep_the_landmarks_they_were_aligned_with(two_faces):
    """A landmark-reading model (RASA) trains on photos with the points the front end aligned each
    face with, in the aligned crop's pixels, as the analyzer gives them at inference."""
    from ferlab.data.readers import SampleList
    from ferlab.engine.inputs import model_input_images, model_input_landmarks
    from ferlab.faces.align import TEMPLATES, five_points
    path, (left, right) = two_faces
    s = SampleList([path, path, path], np.array([1, 1, 1]), CANONICAL,
                   flags={"box": np.array([left, right, [0, 290, 10, 299]], np.float32),
                          "input": np.array(["photo"] * 3)})
    with pytest.raises(ValueError, match="model_input_images first"):
        model_input_landmarks(s, 48)
    imgs, ok = model_input_images(s, 48, 1)
    assert ok.tolist() == [True, True, False] and np.isnan(s.flags["aligned_landmarks"][2]).all()
    kept = s.subset(np.flatnonzero(ok))  # the faces a run keeps, their points carried along
    pts = model_input_landmarks(kept, 48)
    assert pts.shape == (2, 68, 2) and np.isfinite(pts).all() and (pts > -3).all() and (pts < 51).all()  # on the crop
    # alignment put the eyes, nose and mouth corners on the template
    for p in pts:
        assert np.abs(five_points(p) - TEMPLATES["fer2013"] * 48).max() < 3.0
    # the right face is the left one mirrored: its chin and nose tip are the mirror images of the left's
    for i in (8, 30):
        assert abs(pts[1, i, 0] - (47 - pts[0, i, 0])) < 1.5 and abs(pts[1, i, 1] - pts[0, i, 1]) < 1.5


def test_a_landmark_model_trains_on_crops_and_photos_and_evaluates(tmp_path, two_faces, monkeypatch):
    from ferlab.engine.config import load_config
    from ferlab.engine.train import train
    cfg = load_config(None, [f"data={json.dumps(crop_and_photo_sources(tmp_path, two_faces))}", "model.name=rasa",
                             "model.kwargs={img_size: 48, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 4}",
                             "loss.name=bce", "schedule.epochs=1", "train.batch_size=8", "train.threads=1",
                             f"train.out_dir={tmp_path / 'run'}", "train.progress=false",
                             "train.select_on=[folder, photos]", "augment={flip: true}"])
    r = train(cfg, log=lambda *_: None)
    assert len(r["history"]) == 1 and set(r["history"][0]["valid_per_source"]) == {"folder", "photos"}
    assert (tmp_path / "run" / "best.safetensors").is_file()
    # evaluating it later reads the photos' points from their aligned faces: dlib never sees a photo as a crop
    import ferlab.faces
    from ferlab.data.arrays import load_splits
    from ferlab.engine.evaluate import evaluate_checkpoint_on_split
    seen = []

    def recording(samples, *args, **kw):
        seen.extend(str(p) for p in samples.paths)
        return real(samples, *args, **kw)
    real = ferlab.faces.dataset_landmarks
    monkeypatch.setattr(ferlab.faces, "dataset_landmarks", recording)
    valid = load_splits(cfg["data"])["valid"]
    m = evaluate_checkpoint_on_split(tmp_path / "run" / "best", valid)
    assert set(m["per_source"]) == {"folder", "photos"} and seen and str(two_faces[0]) not in seen
    # the generalisation benchmark scores a landmark model's crops with dlib's cached points of each crop
    from conftest import load_script
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.data.arrays import load_images
    from ferlab.faces import dataset_landmarks
    gen = load_script("benchmarks/generalisation.py")
    fa = FaceAnalyzer(str(tmp_path / "run" / "best"))
    crops = load_splits({"dataset": "folder", "root": str(tmp_path / "crops"), "labels": "basic7", "img_size": 48,
                         "channels": 1})["valid"]
    s, probs = gen.ferplus_probs(fa, crops)
    imgs, _ = load_images(s, 48, 1)
    assert probs.shape == (len(crops), 7)
    np.testing.assert_allclose(probs, fa.predict_tensor(imgs, dataset_landmarks(s, size=48)[0]), atol=1e-5)
    # calibrating it and scoring it on its selection splits read the same points (they raised before)
    from ferlab.engine.calibration import calibrate
    from ferlab.engine.ensemble import selection_accuracy
    rep = calibrate(tmp_path / "run" / "best", cfg["data"], write=False, log=lambda *_: None)
    assert rep["n"] > 0 and set(rep["per_source"]) == {"folder", "photos"} and rep["after"]["temperature"] > 0
    sel = selection_accuracy(tmp_path / "run" / "best", cfg["data"])
    assert set(sel["per_source_accuracy"]) == {"folder", "photos"} and sel["n"] == rep["n"]


def test_sampling_weights_draw_sources_in_proportion():
    from ferlab.engine.train import _epoch_order
    w = np.r_[np.ones(900), np.full(100, 3.0)]  # 100 faces of a source drawn 3x as often as 900 others
    order, _ = _epoch_order(len(w), 0, 0, w)
    share = float((order.numpy() >= 900).mean())
    assert abs(share - 300 / 1200) < 0.04


def crop_and_photo_sources(tmp_path, two_faces):
    """A crop dataset (pattern faces, 3 classes, train/valid/test) and a photo dataset (the two-face
    photo, the face given by its box), for multi-source training."""
    path, (left, right) = two_faces
    names = ["neutral", "happy", "surprise"]
    for split, n in (("train", 8), ("val", 4), ("test", 3)):
        for ci, name in enumerate(names):
            for k in range(n):
                save_img(tmp_path / "crops" / split / name / f"{k}.png", pattern_image(ci, hash((split, ci, k)) % 997))
    with open(tmp_path / "photos.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "box_x0", "box_y0", "box_x1", "box_y1"])
        for split in ("train", "valid"):
            w.writerow([str(path), "happy", split, *left])
            w.writerow([str(path), "happy", split, *right])
        w.writerow([str(path), "surprise", "train", 0, 290, 10, 299])  # no face on this box: listed, left out
    return {"dataset": "hybrid", "labels": "basic7", "img_size": 48, "channels": 1,
            "sources": [{"dataset": "folder", "root": str(tmp_path / "crops")},
                        {"dataset": "csv", "name": "photos", "root": str(tmp_path), "csv_file": "photos.csv",
                         "front_end": True, "weight": 4}]}


def test_multi_source_training_selects_on_the_named_sources(tmp_path, two_faces):
    from ferlab.engine.config import load_config
    from ferlab.engine.train import train
    cfg = load_config(None, [f"data={json.dumps(crop_and_photo_sources(tmp_path, two_faces))}",
                             "model.name=resnet18", "model.kwargs={small_input: true}", "schedule.epochs=2",
                             "train.batch_size=8", f"train.out_dir={tmp_path / 'run'}", "train.progress=false",
                             "train.select_on=[folder, photos]", "augment={flip: true}"])
    r = train(cfg, log=lambda *_: None)
    h = r["history"]
    assert len(h) == 2 and set(h[0]["valid_per_source"]) == {"folder", "photos"}
    for e in h:
        assert e["valid_selection"] == pytest.approx(np.mean(list(e["valid_per_source"].values())))
    assert r["best_valid_accuracy"] == pytest.approx(max(e["valid_selection"] for e in h))
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["train"]["composition"]["photos"]["happiness"] == 2
    assert any("overlaps the labelled box" in why for _, why in report["train"]["skipped"])
    assert "per_source" in r["test"] and "ece" in r["test"]
    bad = load_config(None, [f"data={json.dumps(crop_and_photo_sources(tmp_path, two_faces))}",
                             f"train.out_dir={tmp_path / 'bad'}", "train.select_on=[expw]", "schedule.epochs=1"])
    with pytest.raises(ValueError, match="select_on"):
        train(bad, log=lambda *_: None)


def test_bad_source_weight_is_one_line(tmp_path, two_faces):
    cfg = crop_and_photo_sources(tmp_path, two_faces)
    cfg["sources"][1]["weight"] = -1
    with pytest.raises(DatasetError, match="weight must be a positive number"):
        load_splits(cfg)


def test_expected_calibration_error():
    from ferlab.engine.metrics import expected_calibration_error as ece
    rng = np.random.RandomState(0)
    conf = rng.uniform(0.2, 1.0, 20000)
    assert ece(conf, rng.uniform(size=conf.size) < conf) < 0.02  # right as often as it says
    assert ece(np.full(1000, 0.99), np.arange(1000) < 600) == pytest.approx(0.39, abs=1e-6)  # over-confident
    assert np.isnan(ece([], []))


def test_temperature_is_recovered_and_applied(tmp_path, class_folder_dataset):
    from ferlab.engine.calibration import calibrate, calibration_report, fit_temperature
    rng = np.random.RandomState(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    labels = np.array([rng.choice(5, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    assert fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.1)  # logits 3x too sharp
    rep = calibration_report(true_logits * 3.0, labels, 3.0)
    assert rep["after"]["ece"] < rep["before"]["ece"] and rep["after"]["nll"] < rep["before"]["nll"]
    # a trained model: calibrate writes its temperature; the analyser's probabilities use it
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.engine.config import load_config
    from ferlab.engine.train import train
    cfg = load_config(None, ["data.dataset=folder", f"data.root={class_folder_dataset}", "data.labels=[neutral, happiness, surprise]",
                             "model.name=resnet18", "model.kwargs={small_input: true}", "schedule.epochs=1",
                             "train.batch_size=8", f"train.out_dir={tmp_path / 'run'}", "train.progress=false"])
    train(cfg, log=lambda *_: None)
    model = tmp_path / "run" / "best.safetensors"
    crops = np.stack([pattern_image(i % 3, i) for i in range(6)])
    before = FaceAnalyzer(model, backend="torch").classify_crops(crops)
    report = calibrate(model, log=lambda *_: None)
    meta = json.loads(model.with_suffix(".json").read_text())
    t = meta["temperature"]
    assert t == report["after"]["temperature"] and t != 1.0 and "calibration" in meta
    for backend in ("torch", "onnx"):
        after = FaceAnalyzer(model, backend=backend).classify_crops(crops)
        for b, a in zip(before, after):
            assert a["label"] == b["label"]
            logit_gap = np.log(b["confidence"]) - np.log(b["probs"][min(b["probs"], key=b["probs"].get)])
            calibrated_gap = np.log(a["confidence"]) - np.log(a["probs"][min(a["probs"], key=a["probs"].get)])
            assert calibrated_gap == pytest.approx(logit_gap / t, rel=1e-3, abs=1e-4)


@needs_expw
def test_expw_reader_on_the_shared_copy():
    splits = DATASET_READERS["expw"](SHARED / "expw", label_set=CANONICAL)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4559, "valid": 592, "test": 554}
    groups = {k: set(v.groups) for k, v in splits.items()}
    assert not groups["train"] & groups["test"] and not groups["valid"] & groups["test"]  # split by photo
    assert np.isfinite(splits["test"].flags["box"]).all()


@needs_sfew
def test_sfew_reader_on_the_shared_copy():
    splits = DATASET_READERS["sfew"](SHARED / "sfew", label_set=CANONICAL)
    assert {k: len(v) for k, v in splits.items()} == {"train": 859, "test": 405}
    assert not set(splits["train"].groups) & set(splits["test"].groups)  # no movie in both
