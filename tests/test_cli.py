"""The command line as a user meets it: exit codes and messages, never a traceback."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FERPLUS, needs_ferplus
from PIL import Image

from ferlab.app.analyzer import FaceAnalyzer, default_model_path
from ferlab.cli import main


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ferlab.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def astronaut_file(tmp_path_factory):
    from skimage import data
    p = tmp_path_factory.mktemp("img") / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(p)
    return p


def test_shipped_models_are_there_each_file_under_20_mb_and_their_sizes_in_the_readme():
    from ferlab.app.analyzer import shipped_models
    from ferlab.engine.checkpoint import MAX_WEIGHT_FILE_BYTES, weight_files, weights_size
    p = default_model_path()
    assert p.is_file() and p.with_suffix(".json").is_file()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, path in shipped_models().items():
        for f in weight_files(path):
            assert f.is_file() and f.stat().st_size <= MAX_WEIGHT_FILE_BYTES, f
        row = [line for line in readme.splitlines() if line.startswith(f"| `{name}` |")]
        assert row and f"{weights_size(path) / 1e6:.1f} MB" in row[0], (name, row)
    # the package's weights, each file once (an ensemble reads its members' files, it does not copy them)
    import ferlab
    pkg = Path(ferlab.__file__).parent
    files = [*(pkg / "weights").glob("*.safetensors"), *(pkg / "faces" / "blazeface_models").glob("*.tflite")]
    assert f"Every weight file above, each stored once: {sum(f.stat().st_size for f in files) / 1e6:.1f} MB together." in readme


def test_demo_astronaut_is_happy(tmp_path):
    p = run("demo", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "astronaut.png" in p.stdout and "-> happiness" in p.stdout.splitlines()[1]
    assert (tmp_path / "astronaut_annotated.png").is_file()
    rep = json.loads((tmp_path / "predictions.json").read_text())
    face = rep["results"][0]["faces"][0]
    assert face["label"] == "happiness" and abs(sum(face["probs"].values()) - 1) < 1e-4
    assert len(face["landmarks"]) == 68 and len(face["box"]) == 4


def test_predict_folder_with_broken_files(tmp_path, astronaut_file):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jpg").write_bytes(astronaut_file.read_bytes())
    (d / "b.png").write_bytes(astronaut_file.read_bytes()[:3000])  # truncated
    (d / "c.png").write_bytes(b"")                                 # empty
    (d / "notes.txt").write_text("hello")                          # not an image
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(d / "noface.png")
    Image.open(astronaut_file).convert("CMYK").save(d / "cmyk.jpg")
    p = run("predict", str(d), "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    rep = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(r["input"].split("/")[-1] for r in rep["results"]) == ["a.jpg", "cmyk.jpg"]
    assert sorted(s["input"].split("/")[-1] for s in rep["skipped"]) == ["b.png", "c.png", "noface.png", "notes.txt"]
    assert "skipped 4 of 6 inputs" in p.stderr


def test_every_command_runs_the_default_model_unless_told(tmp_path, astronaut_file):
    """One default (ferlab.DEFAULT_MODEL) for predict, video, serve and demo; --model picks another."""
    import ferlab
    from ferlab.cli import build_parser
    parser = build_parser()
    for argv in (["predict"], ["video", "0"], ["serve"], ["demo"]):
        assert parser.parse_args(argv).model == ferlab.DEFAULT_MODEL, argv
    assert parser.parse_args(["predict", "--model", "fast"]).model == "fast"
    p = run("predict", str(astronaut_file), "--out", str(tmp_path / "p"))
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert rep["model"] == str(default_model_path()) and rep["results"][0]["faces"][0]["label"] == "happiness"
    assert main(["predict", str(astronaut_file), "--model", "fast", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "predictions.json").read_text())["model"].endswith("fast.safetensors")


def test_every_shipped_model_finds_the_astronaut_happy_by_name(tmp_path, astronaut_file):
    """`ferlab predict --model NAME` for every name `ferlab models` lists as shipped."""
    from ferlab.app.analyzer import shipped_models
    for name, path in shipped_models().items():
        out = tmp_path / name
        assert main(["predict", str(astronaut_file), "--model", name, "--out", str(out)]) == 0, name
        rep = json.loads((out / "predictions.json").read_text())
        assert rep["model"] == str(path) and rep["results"][0]["faces"][0]["label"] == "happiness", name


def test_each_of_the_five_papers_models_ships_under_its_name():
    """The five papers' models are usable by name without training: RASA, DAN, Swin-SE, PCDA, Conv-cut."""
    from ferlab.app.analyzer import shipped_models
    from ferlab.engine.checkpoint import load_meta
    shipped = shipped_models()
    for name in ("rasa", "dan", "swin_se", "pcda", "convcut"):
        assert name in shipped, f"{name} does not ship"
        assert load_meta(shipped[name])["arch"] == name


@pytest.mark.parametrize("content,msg", [(None, "no such file"), (b"", "empty file"), (b"GIF89a-junk", "not an image")])
def test_single_bad_input_is_one_message(tmp_path, content, msg):
    f = tmp_path / "x.png"
    if content is not None:
        f.write_bytes(content)
    p = run("predict", str(f), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_no_face_exit_code(tmp_path):
    Image.fromarray(np.full((80, 80, 3), 200, np.uint8)).save(tmp_path / "blank.png")
    p = run("predict", str(tmp_path / "blank.png"), "--out", str(tmp_path / "o"))
    assert p.returncode == 3 and "no face found" in p.stderr


def test_user_errors_in_process(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing.safetensors")]) == 2
    assert "no such model file" in capsys.readouterr().err
    (tmp_path / "alone.safetensors").write_bytes(b"")
    assert main(["evaluate", str(tmp_path / "alone.safetensors")]) == 2
    assert "missing model description" in capsys.readouterr().err
    assert main(["train", "-", "data.dataset=folder", f"data.root={tmp_path / 'nope'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_models_lists_registry():
    p = run("models")
    assert p.returncode == 0 and "resnet18" in p.stdout.split()


def test_classify_crops_api():
    fa = FaceAnalyzer()
    recs = fa.classify_crops([np.zeros((48, 48), np.uint8), np.zeros((100, 90, 3), np.uint8)])
    assert len(recs) == 2 and set(recs[0]["probs"]) == set(fa.labels)


@needs_ferplus
def test_shipped_model_on_ferplus_crops():
    """The shipped model classifies real FER+ test crops far above chance (1/8)."""
    from ferlab.data.readers.ferplus import read_ferplus
    test = read_ferplus(FERPLUS, splits=("test",), find_duplicates=False)["test"]
    idx = np.arange(0, len(test), 16)
    fa = FaceAnalyzer()
    recs = fa.classify_crops([test.paths[i] for i in idx])
    acc = np.mean([fa.labels.index(r["label"]) == test.labels[i] for r, i in zip(recs, idx)])
    assert acc > 0.7


@needs_ferplus
def test_evaluate_cli_on_valid(tmp_path):
    ferplus_only = default_model_path().with_name("resnet18_ferplus.safetensors")  # trained on FER+ alone
    p = run("evaluate", str(ferplus_only), "--split", "valid", "--out", str(tmp_path), timeout=600)
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "valid_metrics.json").read_text())
    assert m["n"] == 3191 and f"accuracy {m['accuracy']:.4f}" in p.stdout
    assert (tmp_path / "valid_confusion.png").is_file() and (tmp_path / "valid_predictions.csv").is_file()


def test_evaluate_names_skipped_items_on_the_console(tmp_path):
    from PIL import Image
    from skimage import data
    for split in ("train", "test"):
        (tmp_path / "ds" / split / "happy").mkdir(parents=True)
        for i in range(10):
            Image.fromarray(data.astronaut()[60:200, 150:290]).save(tmp_path / "ds" / split / "happy" / f"a{i}.png")
    (tmp_path / "ds" / "test" / "sleepy").mkdir()
    Image.fromarray(data.astronaut()[60:200, 150:290]).save(tmp_path / "ds" / "test" / "sleepy" / "b.png")
    p = run("evaluate", str(default_model_path()), "data.dataset=folder", f"data.root={tmp_path / 'ds'}",
            "--split", "test", timeout=600)
    assert p.returncode == 0, p.stderr
    assert "1 dataset item(s) skipped" in p.stdout and "b.png" in p.stdout and "sleepy" in p.stdout


def test_precheck_knows_the_architectures_without_torch():
    """The early model check names an architecture as such; its list is read from the model files."""
    from ferlab.cli import architecture_names
    from ferlab.models import list_models
    assert architecture_names() == list_models()
