"""`ferlab adapt` / `ferlab.adapt`: a tiny set of real photos (the astronaut, shifted, scaled,
mirrored and relit) adapts a shipped model; the output is an ordinary model file that predict and
serve take; every bad input is one line and exit 2."""
import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from conftest import save_img


def _variants(n: int, seed: int) -> list[np.ndarray]:
    """n real photos of one face: crops at other places and scales, mirrored, relit."""
    rng = np.random.RandomState(seed)
    img = data.astronaut()
    out = []
    for i in range(n):
        x0, y0 = rng.randint(0, 60, size=2)
        side = rng.randint(330, 420)
        crop = img[y0:y0 + side, x0:x0 + side]
        crop = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)
        if i % 2:
            crop = crop[:, ::-1]
        out.append(np.clip(crop.astype(np.float32) * rng.uniform(0.7, 1.2), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Class folders: happy/ and neutral/ (synonyms of ferlab's names), 5 photos each, and a blank
    picture (no face) in neutral/."""
    root = tmp_path_factory.mktemp("photos")
    for c, name in enumerate(("happy", "neutral")):
        for i, im in enumerate(_variants(5, c)):
            save_img(root / name / f"{name}_{i}.jpg", im)
    save_img(root / "neutral" / "blank.png", np.full((120, 120, 3), 200, np.uint8))
    return root


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ferlab.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_adapt_writes_a_model_every_command_takes(photos, tmp_path):
    from ferlab import adapt
    from ferlab.app.analyzer import FaceAnalyzer, resolve_model
    from ferlab.engine.checkpoint import load_meta
    r = adapt("fast", photos, tmp_path / "out", steps=6, n_boot=50, progress=False, log=lambda *_: None)
    assert r.path == tmp_path / "out" / "model.safetensors" and r.path.is_file()
    rep = r.report
    assert rep["data"]["photos"] == 11 and rep["data"]["left_out"] == 1  # the blank picture
    assert rep["data"]["faces_per_class"] == {"happiness": 5, "neutral": 5}
    assert rep["labels"]["user"] == ["neutral", "happiness"] and rep["labels"]["new"] == []
    assert rep["held_out"]["base"]["n"] == rep["held_out"]["adapted"]["n"] == rep["data"]["held_out"] >= 2
    assert rep["training"]["steps_planned"] == 6
    skipped = list(csv.DictReader(open(tmp_path / "out" / "skipped.csv")))
    assert [s["path"].endswith("blank.png") for s in skipped] == [True] and "no face" in skipped[0]["why"]
    meta = load_meta(r.path)
    prov = meta["adapted_from"]
    assert prov["base"]["name"] == "fast" and len(prov["base"]["sha256"]) == 64
    assert prov["data"]["digest"] and prov["recipe"]["mode"] == "last"
    assert meta["labels"] == load_meta(resolve_model("fast"))["labels"]  # the base's 8 outputs kept
    # predict takes it as it is
    save_img(tmp_path / "astro.png", data.astronaut())
    p = run("predict", tmp_path / "astro.png", "--model", tmp_path / "out" / "model")
    assert p.returncode == 0, p.stderr
    assert "happiness" in p.stdout
    # and so does the service
    from fastapi.testclient import TestClient

    from ferlab.app.server import ServeSettings, create_app
    fa = FaceAnalyzer(str(tmp_path / "out" / "model"))
    with TestClient(create_app(fa, ServeSettings())) as c:
        res = c.post("/v1/analyze", content=(tmp_path / "astro.png").read_bytes(), headers={"Content-Type": "image/png"})
        assert res.status_code == 200, res.text
        assert res.json()["faces"][0]["label"] in meta["labels"]


def model_input_shape(meta: dict) -> tuple[int, int, int]:
    """(channels, size, size) of a model file's input, from its json."""
    pre = meta["preprocess"]
    return int(pre["channels"]), int(pre["img_size"]), int(pre["img_size"])


def test_only_these_labels_and_new_labels(photos, tmp_path):
    from ferlab import adapt
    from ferlab.engine.checkpoint import load_model
    quiet = {"steps": 3, "n_boot": 20, "progress": False, "log": lambda *_: None}
    r = adapt("fast", photos, tmp_path / "two", only_these_labels=True, **quiet)
    model, meta = load_model(r.path)
    assert meta["labels"] == ["neutral", "happiness"]
    import torch
    assert model(torch.zeros(1, *model_input_shape(meta))).shape == (1, 2)
    # a label the base does not know: refused without --new-labels, a new output with it
    pain = tmp_path / "pain_photos"
    for name, seed in (("happy", 0), ("Pain", 5)):
        for i, im in enumerate(_variants(4, seed)):
            save_img(pain / name / f"{i}.jpg", im)
    from ferlab.data.readers import DatasetError
    with pytest.raises(DatasetError, match="pain match nothing the base model knows.*--new-labels"):
        adapt("fast", pain, tmp_path / "x", **quiet)
    r = adapt("fast", pain, tmp_path / "new", new_labels=True, **quiet)
    _, meta = load_model(r.path)
    assert meta["labels"][-1] == "pain" and len(meta["labels"]) == 9
    assert r.report["labels"]["new"] == ["pain"]


def test_held_out_by_subject_from_a_csv(tmp_path):
    from ferlab.app.adapt import _split, read_user_photos
    rows = [(f"{s}_{c}_{i}.jpg", c, s) for s in "ABCDE" for c in ("happy", "sad") for i in range(2)]
    with open(tmp_path / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "person"])
        w.writerows(rows)
    paths, labels, subjects = read_user_photos(tmp_path / "index.csv", subject_column="person")
    assert subjects == [r[2] for r in rows] and labels[0] == "happy" and paths[0] == tmp_path / rows[0][0]
    y = np.array([0 if lab == "happy" else 1 for lab in labels])
    held = _split(y, subjects, 0.2, 0)
    held_people = {s for s, h in zip(subjects, held) if h}
    assert held_people and not held_people & {s for s, h in zip(subjects, held) if not h}  # nobody on both sides
    assert set(y[held]) == set(y[~held]) == {0, 1}


def _bad(tmp_path, photos):
    """Each bad input and the line it must get."""
    one = tmp_path / "one_class"
    for i, im in enumerate(_variants(4, 0)):
        save_img(one / "happy" / f"{i}.jpg", im)
    few = tmp_path / "few"
    for name, n in (("happy", 4), ("sad", 2)):
        for i, im in enumerate(_variants(n, 1)):
            save_img(few / name / f"{i}.jpg", im)
    blank = tmp_path / "blank"
    for name in ("happy", "sad"):
        for i in range(4):
            save_img(blank / name / f"{i}.png", np.full((80, 80, 3), 40 * i, np.uint8))
    (tmp_path / "list.csv").write_text("path,emotion,who\nhappy/happy_0.jpg,happy,a\n")
    (tmp_path / "notmodel.json").write_text("{}")
    (tmp_path / "notmodel.safetensors").write_bytes(b"not weights")
    return [
        (["fast", "--photos", one], "a single class"),
        (["fast", "--photos", few], "sadness (2): each class needs at least 4"),
        (["fast", "--photos", blank], "found no face in any of the 8 photos"),
        (["fast", "--photos", tmp_path / "list.csv"], "no label column 'label'"),
        (["fast", "--photos", tmp_path / "list.csv", "--label-column", "emotion", "--subject-column", "person"],
         "no subject column 'person'"),
        ([tmp_path / "notmodel", "--photos", photos], "is not a ferlab model"),
        (["fast", "--photos", tmp_path / "nowhere"], "no such file or folder"),
    ]


def test_bad_inputs_are_one_line_and_exit_2(photos, tmp_path, capsys):
    from ferlab.cli import main
    bad = _bad(tmp_path, photos)
    for args, message in bad:  # in process (the CLI's own error path), then one through the installed command
        code = main(["adapt", *map(str, args), "--out", str(tmp_path / "o"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    args, message = bad[0]
    p = run("adapt", *args, "--out", tmp_path / "o", "--quiet")
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_replay_takes_any_folder_of_unlabelled_photos(photos, tmp_path):
    """--replay-dataset photos: faces of any photos (nested folders, no labels) through the front
    end; the photo without a face is passed over; the model is held to the base on them."""
    from ferlab import adapt
    from ferlab.app.adapt import _replay_faces
    from ferlab.app.analyzer import resolve_model
    from ferlab.engine.checkpoint import load_meta
    rp = tmp_path / "replay"
    for i, im in enumerate(_variants(3, 7)):
        save_img(rp / ("a" if i % 2 else "b") / f"{i}.jpg", im)
    save_img(rp / "blank.png", np.full((90, 90, 3), 60, np.uint8))
    pre = load_meta(resolve_model("fast"))["preprocess"]
    faces = _replay_faces(rp, "photos", 100, pre, 0)
    assert faces.shape == (3, pre["channels"], pre["img_size"], pre["img_size"]) and faces.dtype == np.uint8
    assert len(_replay_faces(rp, "photos", 2, pre, 0)) <= 2  # a sample of the photos when there are more
    r = adapt("fast", photos, tmp_path / "out", steps=3, n_boot=10, progress=False, log=lambda *_: None,
              replay=rp, replay_dataset="photos")
    assert r.report["recipe"]["replay_data"] == {"source": str(rp), "dataset": "photos", "faces": 3}
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no photos in it"):
        _replay_faces(tmp_path / "empty", "photos", 10, pre, 0)


def test_an_interrupted_run_leaves_no_model(photos, tmp_path, monkeypatch):
    from ferlab.app import adapt as adapt_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(adapt_mod, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adapt_mod.adapt("fast", photos, tmp_path / "out", progress=False, log=lambda *_: None)
    assert not list((tmp_path / "out").glob("model.*"))


def test_the_recipe_moves_only_what_its_mode_names():
    import torch

    from ferlab.app.analyzer import resolve_model
    from ferlab.engine.adapt import Recipe, fit
    from ferlab.engine.checkpoint import load_model
    base, meta = load_model(resolve_model("fast"))
    norm = {"mean": meta["preprocess"]["mean"], "std": meta["preprocess"]["std"]}
    rng = np.random.RandomState(0)
    x = rng.randint(0, 255, (16, *model_input_shape(meta))).astype(np.uint8)
    y = np.arange(16) % 2
    for mode in ("head", "last", "full"):
        model = load_model(resolve_model("fast"))[0]
        before = {k: v.clone() for k, v in model.state_dict().items()}
        fit(model, base, norm, x, y, x[:4], y[:4], [(i, i) for i in range(8)],
            Recipe(mode=mode, steps=3, lr=0.05, early_stop=False), progress=False)
        moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        bn_stats = {k for k in moved if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
        assert not bn_stats  # batch-norm statistics stay the base's
        head = {k for k in moved if k.startswith("fc.")}
        last = {k for k in moved if k.startswith("stages.")}
        assert head
        if mode == "head":
            assert moved == head
        elif mode == "last":
            assert moved == head | last and {k for k in last if not k.startswith(f"stages.{len(base.stages) - 1}.")} == set()
        else:
            assert moved - head - last  # the earlier layers move too
    with pytest.raises(ValueError, match="choose one of head, last, full"):
        Recipe(mode="everything")


def test_an_ensemble_adapts_through_its_lead_member(photos, tmp_path):
    """An ensemble base (here `fast` with weight 0.7 and `resnet18_ferplus`) is adapted through its
    lead member: the output is that member alone, an ordinary model file; the held-out base score is
    the whole ensemble's; Grad-CAM of the ensemble runs on the lead member's last stage."""
    import torch

    from ferlab import adapt
    from ferlab.app.analyzer import resolve_model
    from ferlab.engine.checkpoint import load_model
    from ferlab.engine.ensemble import write_ensemble
    write_ensemble([resolve_model("fast"), resolve_model("resnet18_ferplus")], tmp_path / "ens", weights=[0.7, 0.3])
    said = []
    r = adapt(str(tmp_path / "ens.safetensors"), photos, tmp_path / "out", steps=4, n_boot=50, progress=False,
              log=said.append)
    model, meta = load_model(r.path)
    assert meta["arch"] == load_model(resolve_model("fast"))[1]["arch"] and meta["from_ensemble"]["member"] == 0
    assert any("lead member" in s for s in said)
    ens = load_model(tmp_path / "ens")[0]
    assert ens.gradcam_layer() is ens.members[0].gradcam_layer()
    with torch.no_grad():
        assert model(torch.zeros(1, *model_input_shape(meta))).shape == (1, 8)
