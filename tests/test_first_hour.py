"""A newcomer's first hour: the README's snippets run as written, every command runs the same default
model and takes shipped names, the Python API takes what users hand it (paths, bytes, PIL images,
RGB and OpenCV BGR arrays) and says what it got otherwise, argument mistakes are caught before the
heavy imports, and every per-face CSV has one layout."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from conftest import ROOT, save_img

README = (ROOT / "README.md").read_text()
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def ferlab(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "ferlab.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def fa():
    from ferlab import FaceAnalyzer
    return FaceAnalyzer()


def test_analyze_takes_what_users_hand_it(fa, tmp_path):
    rgb = data.astronaut()
    path = save_img(tmp_path / "a.png", rgb)
    ref = fa.analyze(path)[0]["probs"]
    bgr = cv2.imread(str(path))
    for image, kw in ((path.read_bytes(), {}), (Image.open(path), {}), (rgb, {}), (bgr, {"bgr": True}),
                      (str(path), {})):
        got = fa.analyze(image, **kw)[0]["probs"]
        assert max(abs(got[k] - ref[k]) for k in ref) < 1e-5, type(image)
    # an OpenCV array read as RGB is another picture: the option matters
    assert fa.analyze(bgr)[0]["probs"] != ref
    from ferlab.data.imageio import BadImageError
    with pytest.raises(BadImageError, match="for several images use analyze_many"):
        fa.analyze([path, path])
    with pytest.raises(BadImageError, match="got a value of type int"):
        fa.analyze(3)
    with pytest.raises(BadImageError, match="not an image file"):
        fa.analyze(b"not an image at all")
    many = fa.analyze_many([path, bgr[:, :, ::-1]])
    assert len(many) == 2 and all(len(x) == 1 for x in many)
    with pytest.raises(BadImageError, match="for one image use analyze"):
        fa.analyze_many(str(path))


def test_one_default_model_stated_in_one_place():
    import ferlab
    from ferlab.app.analyzer import default_model_path
    from ferlab.cli import build_parser
    assert default_model_path().stem == ferlab.DEFAULT_MODEL
    p = build_parser()
    for argv in (["predict", "x.jpg"], ["video", "x.mp4"], ["serve"], ["demo"], ["explain"]):
        assert p.parse_args(argv).model == ferlab.DEFAULT_MODEL, argv
    assert f"`FaceAnalyzer()`, run `{ferlab.DEFAULT_MODEL}`" in README


def test_models_version_and_shipped_names_everywhere(tmp_path, class_folder_dataset):
    p = ferlab("models")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].startswith("Models by name")  # the table of every name first, then the shipped models
    s = next(i for i, x in enumerate(lines) if x.startswith("Shipped models"))
    assert lines[s + 1].split()[0] == "default" and "<- the default" in lines[s + 1]
    assert lines.index("") < next(i for i, x in enumerate(lines) if x.startswith("Architectures"))
    v = ferlab("--version")
    assert v.returncode == 0 and re.fullmatch(r"ferlab \d+\.\d+\.\d+", v.stdout.strip())
    # evaluate (a dataset split) takes a shipped name as predict does
    root = class_folder_dataset
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: folder, root: {root}, labels: fer8, img_size: 48, channels: 1}}\n")
    e = ferlab("evaluate", "fast", "--config", cfg, "--split", "test")
    assert e.returncode == 0, e.stderr
    assert re.search(r"test: n=\d+ accuracy", e.stdout)


def test_argument_mistakes_are_caught_before_torch_is_imported(tmp_path):
    code = ("import sys; from ferlab.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules, 'cv2' in sys.modules)")
    for argv, needle in ((["predict", "missing.jpg"], "missing.jpg: no such file or folder"),
                         (["video", "missing.mp4"], "missing.mp4: no such file or folder"),
                         (["predict", "--model", "nosuch", "x.jpg"], "model 'nosuch': no such model file"),
                         (["adapt", "fast", "--photos", "nowhere", "--out", "o"], "nowhere: no such file"),
                         (["evaluate", "nosuch", "--photos", "."], "model 'nosuch'")):
        p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path, env=ENV)
        assert p.stdout.split() == ["2", "False", "False"], (argv, p.stdout, p.stderr)
        assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_every_per_face_table_has_one_layout(tmp_path):
    from ferlab.app.face_table import FACE_COLUMNS
    photo = save_img(tmp_path / "photos" / "happy" / "a.png", data.astronaut())
    save_img(tmp_path / "photos" / "sad" / "blank.png", np.full((64, 64, 3), 90, np.uint8))
    assert ferlab("predict", photo, "--out", tmp_path / "p").returncode == 0
    assert ferlab("evaluate", "default", "--photos", tmp_path / "photos", "--out", tmp_path / "e").returncode == 0
    frames = tmp_path / "frames"
    for i in range(3):
        save_img(frames / f"{i:03d}.png", data.astronaut())
    assert ferlab("video", frames, "--out", tmp_path / "v", "--no-video").returncode == 0
    heads = {}
    for name, f in (("predict", tmp_path / "p" / "predictions.csv"), ("evaluate", tmp_path / "e" / "predictions.csv"),
                    ("video", tmp_path / "v" / "frames.csv")):
        rows = list(csv.reader(open(f)))
        heads[name] = rows[0]
        assert tuple(rows[0][:len(FACE_COLUMNS)]) == FACE_COLUMNS, (name, rows[0])
        assert rows[0][len(FACE_COLUMNS)].startswith("p_")
    assert heads["predict"][:19] == heads["evaluate"][:19] == heads["video"][:19]
    ev = list(csv.DictReader(open(tmp_path / "e" / "predictions.csv")))
    assert {r["label"] for r in ev if r["true_label"] == "sadness"} == {"no face"}


def test_predict_over_many_photos_says_where_things_are(tmp_path):
    for i in range(11):
        save_img(tmp_path / "many" / f"{i:02d}.jpg", data.astronaut()[::2, ::2])
    p = ferlab("predict", tmp_path / "many", "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert "predictions.csv" in p.stdout and "add --annotate for annotated copies" in p.stdout
    assert "faces by emotion: happiness 11" in p.stdout


def test_the_readme_snippets_run_as_written(tmp_path):
    """The Python block, run from the repository, and every `ferlab ...` command line of the README's
    usage block that needs no camera, server or dataset, run in a folder holding the files they name."""
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    p = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "happiness" in p.stdout
    # the files the shell lines name
    work = tmp_path / "work"
    save_img(work / "photo.jpg", data.astronaut())
    for i in range(2):
        save_img(work / "my_photos" / f"{i}.jpg", data.astronaut())
    video = cv2.VideoWriter(str(work / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    for _ in range(4):
        video.write(cv2.resize(data.astronaut()[:, :, ::-1], (256, 256)))
    video.release()
    from test_adapt import _variants
    for name, seed in (("happy", 0), ("neutral", 1)):
        for i, im in enumerate(_variants(4, seed)):
            save_img(work / "my_labelled" / name / f"{i}.jpg", im)
    usage = re.search(r"## Use\n\n(.*?)\n\n", README, re.S).group(1)
    commands = [line.split("#")[0].split() for line in usage.splitlines() if line.strip().startswith("ferlab ")]
    ran = 0
    for cmd in commands:
        if cmd[1] in ("serve",) or (cmd[1] == "video" and cmd[2].isdigit()):
            continue  # a server that runs until stopped; a webcam
        if "[PHOTO]" in cmd:
            cmd = [c for c in cmd if c != "[PHOTO]"]
        p = subprocess.run([sys.executable, "-m", "ferlab.cli", *cmd[1:]] + (["--steps", "3"] if cmd[1] == "adapt" else []),
                           capture_output=True, text=True, cwd=work, env=ENV, timeout=600)
        assert p.returncode == 0, (cmd, p.stderr[-1500:])
        if cmd[1] == "adapt":  # no --replay given: the user is told what that means and what to add
            assert "without --replay" in p.stdout and "--replay-dataset photos" in p.stdout, p.stdout
        ran += 1
    assert ran >= 6
    assert (work / "results" / "predictions.csv").is_file() and (work / "mine" / "model.safetensors").is_file()


def test_the_readme_pip_line_is_the_one_ci_installs_with():
    ci = (ROOT / ".ci" / "fresh_install.sh").read_text()
    line = re.search(r"\n    (pip install \. torchvision==[\d.]+)\n", README).group(1)
    assert f"\"$PIP\" install -q {line[len('pip install '):]}" in ci
    assert "bash .ci/fresh_install.sh" in (ROOT / ".ci" / "run").read_text()
    head = "\n".join(README.splitlines()[:80])
    for needle in ("pip install", "ferlab predict", "ferlab video", "ferlab serve", "from ferlab import FaceAnalyzer",
                   "bgr=True"):
        assert needle in head, needle
    assert not re.search(r"\bissue \d+|\bcommit [0-9a-f]{7}|this machine|\.\./shared", README)


def test_user_facing_docs_name_no_issues_commits_or_this_machine():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        bad = re.findall(r"\bissue \d+|\bcommit [0-9a-f]{7}|\b[0-9a-f]{7}:|this machine|\.\./shared|\bsession\b", text)
        assert not bad, (page.name, bad[:5])
    assert Path(ROOT / "LICENSE").read_text().startswith("MIT License")
