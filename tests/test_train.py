import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ferlab.engine.config import ConfigError, load_config
from ferlab.engine.train import train


def tiny_cfg(root, out, *extra):
    return load_config(None, ["data.dataset=folder", f"data.root={root}", "data.labels=[neutral,happiness,surprise]",
                              "data.img_size=32", "data.channels=1", "model.name=resnet18",
                              "optim.name=adam", "optim.lr=0.002", "optim.weight_decay=0", "schedule.name=constant",
                              "schedule.epochs=5", "train.batch_size=8", "train.threads=1",
                              "train.progress=false", f"train.out_dir={out}", "augment.erasing=0", *extra])


def test_train_selects_on_valid_and_evaluates_test_once(class_folder_dataset, tmp_path):
    r = train(tiny_cfg(class_folder_dataset, tmp_path / "run"), log=lambda m: None)
    out = tmp_path / "run"
    for f in ("best.safetensors", "best.json", "last.safetensors", "last.json", "log.jsonl", "history.json",
              "test_metrics.json", "test_predictions.csv", "test_confusion.csv", "test_confusion.png",
              "data_report.json"):
        assert (out / f).is_file(), f
    hist = r["history"]
    assert len(hist) == 5
    # the best epoch is the first epoch with the highest *validation* accuracy
    valid = [h["valid_accuracy"] for h in hist]
    assert r["best_epoch"] == int(np.argmax(valid))
    meta = json.loads((out / "best.json").read_text())
    assert meta["epoch"] == r["best_epoch"] and meta["labels"] == ["neutral", "happiness", "surprise"]
    # the learnable toy task is learnt
    assert r["test"]["accuracy"] >= 0.9
    lines = (out / "test_predictions.csv").read_text().splitlines()
    assert lines[0].startswith("image,true,pred") and len(lines) == 1 + 12


def test_resume_reaches_the_same_result(class_folder_dataset, tmp_path):
    straight = train(tiny_cfg(class_folder_dataset, tmp_path / "a"), log=lambda m: None)
    part = train(tiny_cfg(class_folder_dataset, tmp_path / "b", "train.stop_after_epochs=2"), log=lambda m: None)
    assert part.get("interrupted") and len(part["history"]) == 2
    resumed = train(tiny_cfg(class_folder_dataset, tmp_path / "b"), resume=True, log=lambda m: None)
    assert [h["valid_accuracy"] for h in resumed["history"]] == [h["valid_accuracy"] for h in straight["history"]]
    wa, wb = load_file(str(tmp_path / "a" / "last.safetensors")), load_file(str(tmp_path / "b" / "last.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_weight_ema_is_saved_and_resumes_exactly(class_folder_dataset, tmp_path):
    ema = ("train.ema=0.6", "schedule.epochs=3", "train.evaluate_test=false")
    train(tiny_cfg(class_folder_dataset, tmp_path / "p", *ema[1:]), log=lambda m: None)
    straight = train(tiny_cfg(class_folder_dataset, tmp_path / "a", *ema), log=lambda m: None)
    wp, wa = load_file(str(tmp_path / "p" / "last.safetensors")), load_file(str(tmp_path / "a" / "last.safetensors"))
    assert any(not torch.equal(wp[k], wa[k]) for k in wp if wp[k].is_floating_point())  # the average, not the weights
    train(tiny_cfg(class_folder_dataset, tmp_path / "b", *ema, "train.stop_after_epochs=1"), log=lambda m: None)
    resumed = train(tiny_cfg(class_folder_dataset, tmp_path / "b", *ema), resume=True, log=lambda m: None)
    assert [h["valid_accuracy"] for h in resumed["history"]] == [h["valid_accuracy"] for h in straight["history"]]
    wb = load_file(str(tmp_path / "b" / "last.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    # a run and its resume must agree on the average: the saved weights of an averaged run are the average
    train(tiny_cfg(class_folder_dataset, tmp_path / "d", *ema, "train.stop_after_epochs=1"), log=lambda m: None)
    with pytest.raises(ValueError, match="trained with it"):
        train(tiny_cfg(class_folder_dataset, tmp_path / "d", *ema[1:]), resume=True, log=lambda m: None)
    train(tiny_cfg(class_folder_dataset, tmp_path / "e", *ema[1:], "train.stop_after_epochs=1"), log=lambda m: None)
    with pytest.raises(ValueError, match="trained without it"):
        train(tiny_cfg(class_folder_dataset, tmp_path / "e", *ema), resume=True, log=lambda m: None)
    for bad in ("2", "0", "fast"):  # refused before any data is read
        with pytest.raises(ValueError, match="train.ema"):
            train(tiny_cfg(class_folder_dataset, tmp_path / "c", f"train.ema={bad}"), log=lambda m: None)


def test_balanced_sampling_and_probability_mode(class_folder_dataset, tmp_path):
    r = train(tiny_cfg(class_folder_dataset, tmp_path / "c", "data.balanced_sampling=true", "schedule.epochs=1",
                       "data.label_mode=probability"), log=lambda m: None)
    assert r["best_epoch"] == 0


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["lr0.1"])
    with pytest.raises(ConfigError, match="did you mean optim.lr"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="did you mean optim.lr"):
        load_config(None, ["optim={name: sgd, lrr: 0.1}"])  # a whole section is checked key by key
    assert load_config(None, ["optim={name: adam, lr: 0.01}"])["optim"] == {"name": "adam", "lr": 0.01}
    assert load_config(None, ["loss.logit_adjust=1.0"])["loss"]["logit_adjust"] == 1.0  # free-form section


def ddp_train_command(root, out, port: int) -> tuple[list[str], dict]:
    """`ferlab train` under torchrun with 2 CPU processes (gloo) on the tiny class-folder set."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "ferlab.cli", "train", "-", "data.dataset=folder", f"data.root={root}",
           "data.labels=[neutral,happiness,surprise]", "data.img_size=32", "schedule.epochs=2",
           "schedule.name=constant", "optim.name=adam", "optim.lr=0.002", "train.batch_size=8", "train.threads=1",
           "train.progress=false", f"train.out_dir={out}"]
    return cmd, {**os.environ, "OMP_NUM_THREADS": "1"}


def test_ddp_two_processes_gloo(class_folder_dataset, tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks train on their shards, rank 0 writes."""
    out = tmp_path / "ddp"
    cmd, env = ddp_train_command(class_folder_dataset, out, 29517)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "best.safetensors").is_file() and (out / "test_metrics.json").is_file()
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert p.stdout.count("epoch 1/2") == 1  # only rank 0 logs


def test_clip_grad_norm_bounds_the_step(class_folder_dataset, tmp_path):
    """optim.clip_grad_norm clips the gradient the optimiser steps with: plain SGD (no momentum) with
    a tiny clip moves the weights by at most lr * clip in L2 norm over the whole first step."""
    lr, clip = 0.5, 1e-4
    common = ["optim.name=sgd", f"optim.lr={lr}", "optim.momentum=0", "optim.nesterov=false", "schedule.epochs=1",
              "train.stop_after_epochs=1", "train.batch_size=100", "augment.flip=false"]
    train(tiny_cfg(class_folder_dataset, tmp_path / "clip", *common, f"optim.clip_grad_norm={clip}"), log=lambda m: None)
    train(tiny_cfg(class_folder_dataset, tmp_path / "free", *common), log=lambda m: None)
    train(tiny_cfg(class_folder_dataset, tmp_path / "init", *common, "optim.lr=0"), log=lambda m: None)
    init = load_file(str(tmp_path / "init" / "last.safetensors"))  # lr 0: the initial weights

    def moved(run):
        w = load_file(str(tmp_path / run / "last.safetensors"))
        return torch.sqrt(sum(((w[k].float() - init[k].float()) ** 2).sum() for k in w
                              if "running" not in k and "num_batches" not in k))
    assert moved("clip") <= lr * clip * 1.01
    assert moved("free") > 100 * lr * clip
    with pytest.raises(ValueError, match="clip_grad_norm must be a positive number"):
        train(tiny_cfg(class_folder_dataset, tmp_path / "bad", *common, "optim.clip_grad_norm=-1"), log=lambda m: None)


def test_known_config_keys_follow_the_code_defaults():
    """The key lists that catch typos name every key the trainers' own defaults have."""
    from ferlab.data.augment import DEFAULT_AUGMENT
    from ferlab.engine.config import DEFAULTS, KNOWN_KEYS
    from ferlab.engine.landmark_training import DEFAULTS as LANDMARK_DEFAULTS
    assert set(DEFAULT_AUGMENT) == KNOWN_KEYS["augment"]
    assert set(LANDMARK_DEFAULTS) == KNOWN_KEYS["landmarks"]
    for section, body in DEFAULTS.items():
        if section != "loss":
            assert set(body) <= KNOWN_KEYS[section], section


def test_ddp_resume_only_rank0_writes(class_folder_dataset, tmp_path):
    """Two gloo ranks resume from a committed epoch; the run then ends like an uninterrupted one."""
    out = tmp_path / "ddp_resume"
    base, env = ddp_train_command(class_folder_dataset, out, 29519)
    p = subprocess.run(base + ["train.stop_after_epochs=1"], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run(base + ["--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(json.loads((out / "history.json").read_text())) == 2 and (out / "test_metrics.json").is_file()
    assert p.stdout.count("resumed from epoch 0") == 1
