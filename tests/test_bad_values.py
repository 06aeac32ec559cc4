"""Every bad value a user can give (CLI options, config keys, environment variables, broken model
files) ends in one clear line on stderr and exit status 2, never a traceback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from skimage import data
    d = tmp_path_factory.mktemp("bad")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    weights = Path(__file__).resolve().parents[1] / "src" / "ferlab" / "weights"
    meta = json.loads((weights / "default.json").read_text())
    single = json.loads((weights / "resnet18_ferplus.json").read_text())  # one gray network
    # weights whose JSON describes another model
    (d / "mismatch.safetensors").write_bytes((weights / "resnet18_ferplus.safetensors").read_bytes())
    (d / "mismatch.json").write_text(json.dumps({**single, "model_kwargs": {**single["model_kwargs"], "in_chans": 3}}))
    (d / "otherarch.safetensors").write_bytes((weights / "resnet18_ferplus.safetensors").read_bytes())
    (d / "otherarch.json").write_text(json.dumps({**single, "arch": "dan"}))
    # a safetensors file whose header claims 2**40 bytes
    (d / "huge.safetensors").write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    (d / "huge.json").write_text(json.dumps(meta))
    (d / "badjson.safetensors").write_bytes((weights / "default.safetensors").read_bytes())
    (d / "badjson.json").write_text("{not json")
    (d / "listjson.safetensors").write_bytes((weights / "default.safetensors").read_bytes())
    (d / "listjson.json").write_text("[1, 2, 3]")
    (d / "cfg_typo.yaml").write_text("optim: {lrr: 0.1}\n")
    (d / "cfg_list.yaml").write_text("- a\n- b\n")
    (d / "a_file").write_text("x")
    return d


IMG = "{d}/astronaut.png"
CASES = [  # (argv, extra environment, text the one error line must hold)
    (["predict", IMG, "--upsample", "-1"], {}, "must be at least 0"),
    (["predict", IMG, "--upsample", "two"], {}, "is not a whole number"),
    (["predict", IMG, "--min-score", "nan"], {}, "not a finite number"),
    (["predict", IMG, "--detector", "yolo"], {}, "invalid choice"),
    (["predict", IMG, "--model", "swin_t"], {}, "is an architecture"),  # one that does not ship (a baseline)
    (["predict", IMG, "--model", "{d}/nothing.safetensors"], {}, "no such model file"),
    (["predict", IMG, "--model", "{d}/mismatch.safetensors"], {}, "do not match"),
    (["predict", IMG, "--model", "{d}/otherarch.safetensors"], {}, "do not match"),
    (["predict", IMG, "--model", "{d}/huge.safetensors"], {}, "header"),
    (["predict", IMG, "--model", "{d}/badjson.safetensors"], {}, "not valid JSON"),
    (["predict", IMG, "--model", "{d}/listjson.safetensors"], {}, "not a ferlab model description"),
    (["predict", IMG, "--landmarks", "{d}/huge.safetensors"], {}, "header"),
    (["predict", IMG], {"FERLAB_MAX_PIXELS": "abc"}, "FERLAB_MAX_PIXELS"),
    (["predict", IMG], {"FERLAB_MAX_PIXELS": "0"}, "FERLAB_MAX_PIXELS"),
    (["predict", IMG, "--out", "{d}/a_file/sub"], {}, "a_file"),
    (["evaluate", "default", "--photos", "{d}", "--bootstrap", "0"], {}, "must be at least 1"),
    (["train", "-", "train.batch_size=0"], {}, "train.batch_size=0: must be"),
    (["train", "-", "optim.lrr=0.1"], {}, "did you mean optim.lr"),
    (["train", "-", "optimm.lr=0.1"], {}, "unknown section"),
    (["train", "-", "schedule.epochs=abc"], {}, "schedule.epochs='abc'"),
    (["train", "-", "optim.lr=-1"], {}, "optim.lr=-1"),
    (["train", "-", "data.channels=2"], {}, "data.channels=2"),
    (["train", "-", "data.img_size=0"], {}, "data.img_size=0"),
    (["train", "-", "train.threads=0"], {}, "train.threads=0"),
    (["train", "-", "data.label_mode=soft"], {}, "data.label_mode"),
    (["train", "-", "model.name=vgg99"], {}, "vgg99"),
    (["train", "-", "loss.name=focal"], {}, "unknown loss"),
    (["train", "-", "train.init_from={d}/huge.safetensors"], {}, "header"),
    (["train", "-", "model.kwargs.pretrained_file={d}/huge.safetensors"], {}, "header"),
    (["train", "{d}/cfg_typo.yaml"], {}, "optim.lrr"),
    (["train", "{d}/cfg_list.yaml"], {}, "mapping"),
    (["train", "-", "data.dataset=ferplus", "data.root={d}/nowhere"], {}, "does not exist"),
    (["train", "-", "train.out_dir={d}/no_run", "--resume"], {}, "nothing to resume"),
    (["evaluate", "{d}/huge.safetensors"], {}, "header"),
    (["calibrate", "{d}/huge.safetensors"], {}, "header"),
    (["calibrate", "{d}/mismatch.safetensors", "--config", "{d}/cfg_typo.yaml"], {}, "lrr"),
    (["interpolate", "default", "resnet18_ferplus", "{d}/mix", "--alpha", "1.5"], {}, "alpha must be between"),
    (["interpolate", "default", "{d}/huge.safetensors", "{d}/mix", "--alpha", "0.5"], {}, "header"),
    (["export", "{d}/mismatch.safetensors", "{d}/x"], {}, "do not match"),
    (["train", "-", "distill.teacher={d}/nowhere"], {}, "no such model file"),
    (["train", "-", "distill.teacher=default", "distill.temperature=0"], {}, "distill.temperature"),
    (["train", "-", "distill.teacher=default", "distill.flip_average=maybe"], {}, "distill.flip_average"),
    (["train", "-", "augment.aspect=0.5"], {}, "augment.aspect"),
    (["video", "{d}/nothing.mp4", "--detect-every", "0"], {}, "must be at least 1"),
    (["predict", IMG, "--min-face", "2"], {}, "must be at least 8"),
    (["models"], {"FERLAB_CACHE": "{d}/a_file"}, None),  # a command that needs no cache still works
]


@pytest.mark.parametrize("argv,env,needle", CASES, ids=[" ".join(c[0][:3]) + " " + str(i) for i, c in enumerate(CASES)])
def test_bad_value_is_one_line_and_exit_2(files, argv, env, needle, monkeypatch, capsys):
    """In-process (fast): any exception escaping main() fails the test, as a traceback would."""
    from ferlab.cli import main
    argv = [a.format(d=files) for a in argv]
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(d=files))
    monkeypatch.chdir(files)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    err = capsys.readouterr().err
    if needle is None:
        assert rc == 0, err
        return
    assert rc == 2, (rc, err[-1500:])
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert needle in lines[-1], lines
    assert len([x for x in lines if "error" in x]) == 1, lines


def test_a_bad_value_in_a_fresh_process_prints_no_traceback(files):
    """The same path end to end, as a user runs it (a fresh process, its own stderr)."""
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "train", "-", "optim.lrr=0.1"], capture_output=True,
                       text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300, cwd=files)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["ferlab: error: override 'optim.lrr=0.1': unknown key optim.lrr "
                                             "(did you mean optim.lr?)"]
