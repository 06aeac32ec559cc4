"""Trained models read as one: `ferlab ensemble` and the `ensemble` architecture."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ferlab.engine.checkpoint import load_model, save_model
from ferlab.engine.ensemble import choose_weights, simplex_grid, write_ensemble
from ferlab.models import create_model

LABELS = ["neutral", "happiness", "surprise"]


def _tiny(tmp_path, name, seed, arch="fastnet_s", size=48, temperature=None, channels=1, mean=0.5):
    torch.manual_seed(seed)
    m = create_model(arch, num_classes=3, in_chans=channels)
    meta = {"arch": arch, "labels": LABELS, "model_kwargs": {"in_chans": channels},
            "preprocess": {"img_size": size, "channels": channels, "mean": mean, "std": 0.5, "framing": "fer2013"}}
    if temperature:
        meta["temperature"] = temperature
    save_model(tmp_path / name, m, meta)
    return tmp_path / f"{name}.safetensors"


def test_the_ensemble_is_the_weighted_mean_of_its_members_calibrated_probabilities(tmp_path):
    a = _tiny(tmp_path, "a", 0, temperature=2.0)
    b = _tiny(tmp_path, "b", 1, arch="fastnet_m")
    write_ensemble([a, b], tmp_path / "e", weights=[3, 1])
    ens, meta = load_model(tmp_path / "e")
    assert meta["arch"] == "ensemble" and meta["labels"] == LABELS
    assert [m["name"] for m in meta["ensemble"]["members"]] == ["a", "b"]
    x = torch.randn(4, 1, 48, 48)
    ma, mb = load_model(a)[0], load_model(b)[0]
    with torch.no_grad():
        want = 0.75 * torch.softmax(ma(x) / 2.0, 1) + 0.25 * torch.softmax(mb(x), 1)
        got = torch.softmax(ens(x), 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # int8 storage keeps the members' int8 weights and the weights of the mean
    write_ensemble([a, b], tmp_path / "q", weights=[3, 1], int8=True)
    q, _ = load_model(tmp_path / "q")
    assert torch.allclose(q.member_weights, torch.tensor([0.75, 0.25]))


def test_an_ensemble_keeps_each_further_member_in_a_file_of_its_own(tmp_path):
    """The first member in MODEL.safetensors, the second in MODEL.member1.safetensors (listed in the
    description); it loads as one model, its fingerprint covers both files (an ONNX cache made from
    it is never stale), and a missing or badly named part is one clear error."""
    from ferlab.engine.checkpoint import CheckpointError, file_fingerprint, weight_files, weights_sha256
    a, b = _tiny(tmp_path, "a", 0), _tiny(tmp_path, "b", 1, arch="fastnet_m")
    write_ensemble([a, b], tmp_path / "e", weights=[1, 1], int8=True)
    files = weight_files(tmp_path / "e")
    assert [f.name for f in files] == ["e.safetensors", "e.member1.safetensors"]
    assert json.loads((tmp_path / "e.json").read_text())["weight_shards"] == ["e.member1.safetensors"]
    from safetensors.torch import load_file
    assert all(k.startswith("members.1.") for k in load_file(str(files[1])))
    assert not any(k.startswith("members.1.") for k in load_file(str(files[0])))
    ens, _ = load_model(tmp_path / "e")
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        want = 0.5 * torch.softmax(load_model(a)[0](x), 1) + 0.5 * torch.softmax(load_model(b)[0](x), 1)
    torch.testing.assert_close(torch.softmax(ens(x), 1), want, atol=0.05, rtol=0)  # int8 storage
    before, digest = file_fingerprint(tmp_path / "e.safetensors"), weights_sha256(tmp_path / "e")
    raw = bytearray(files[1].read_bytes())
    raw[-1] ^= 1
    files[1].write_bytes(bytes(raw))
    assert file_fingerprint(tmp_path / "e.safetensors") != before and weights_sha256(tmp_path / "e") != digest
    files[1].unlink()
    with pytest.raises(CheckpointError, match="e.member1.safetensors: no such weights file"):
        load_model(tmp_path / "e")
    meta = json.loads((tmp_path / "e.json").read_text())
    (tmp_path / "e.json").write_text(json.dumps({**meta, "weight_shards": ["../elsewhere.safetensors"]}))
    with pytest.raises(CheckpointError, match="weight_shards"):
        load_model(tmp_path / "e")


def test_an_ensemble_reads_members_that_ship_on_their_own_from_their_files(tmp_path):
    """share_weights: a member that another model's file holds byte for byte (its int8 tensors, under
    no prefix there or another ensemble's members.N.) is read from that file, not kept twice; the
    model's outputs stay the same, its files beside it shrink to the rest, every file it reads counts
    in its digest, and a changed or missing source is one clear error."""
    from ferlab.engine.checkpoint import (CheckpointError, own_weight_files, share_weights, weight_files,
                                          weights_sha256)
    a_src, b_src = _tiny(tmp_path, "a0", 0), _tiny(tmp_path, "b0", 1, arch="fastnet_m")
    for name, src in (("a", a_src), ("b", b_src)):  # the members as they ship: int8 files of their own
        m, meta = load_model(src)
        save_model(tmp_path / name, m, meta, int8=True)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_ensemble([a, b], tmp_path / "e", weights=[3, 1], int8=True)
    write_ensemble([b, a], tmp_path / "other", weights=[1, 1], int8=True)  # a is its members.1.
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        before = load_model(tmp_path / "e")[0](x)
    unrelated = _tiny(tmp_path, "c", 5)
    entries = share_weights(tmp_path / "e", [unrelated, b, tmp_path / "other"])
    assert [(e["file"], e["take"], e["as"]) for e in entries] == [("b.safetensors", "", "members.1."),
                                                                   ("other.member1.safetensors", "members.1.", "members.0.")]
    assert [f.name for f in own_weight_files(tmp_path / "e")] == ["e.safetensors"]
    assert not (tmp_path / "e.member1.safetensors").exists()
    assert [f.name for f in weight_files(tmp_path / "e")] == ["e.safetensors", "b.safetensors", "other.member1.safetensors"]
    assert (tmp_path / "e.safetensors").stat().st_size < 1000
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "e")[0](x), before, atol=0, rtol=0)
    digest = weights_sha256(tmp_path / "e")
    m, meta = load_model(tmp_path / "b")  # b made again: not the bytes the ensemble was made from
    torch.manual_seed(9)
    save_model(tmp_path / "b", create_model("fastnet_m", num_classes=3, in_chans=1), meta, int8=True)
    assert weights_sha256(tmp_path / "e") != digest
    with pytest.raises(CheckpointError, match="b.safetensors: changed since e.json"):
        load_model(tmp_path / "e")
    b.unlink()
    with pytest.raises(CheckpointError, match="b.safetensors: no such weights file"):
        load_model(tmp_path / "e")
    meta = json.loads((tmp_path / "e.json").read_text())
    meta["weights_from"][1]["file"] = "../other.member1.safetensors"
    (tmp_path / "e.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights_from"):
        load_model(tmp_path / "e")


def test_an_ensemble_given_as_a_member_gives_its_members(tmp_path):
    """`ferlab ensemble E C`: E's members join C, each with its own temperature; the result is the
    weighted mean over all three, and provenance names each member inside E."""
    a, b, c = _tiny(tmp_path, "a", 0, temperature=2.0), _tiny(tmp_path, "b", 1, arch="fastnet_m"), _tiny(tmp_path, "c", 2)
    write_ensemble([a, b], tmp_path / "ab", weights=[1, 1])
    meta = write_ensemble([tmp_path / "ab", c], tmp_path / "abc", weights=[2, 1, 1])
    assert [m["name"] for m in meta["ensemble"]["members"]] == ["ab/a", "ab/b", "c"]
    assert [m["temperature"] for m in meta["model_kwargs"]["members"]] == [2.0, 1.0, 1.0]
    ens, _ = load_model(tmp_path / "abc")
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        want = (0.5 * torch.softmax(load_model(a)[0](x) / 2.0, 1) + 0.25 * torch.softmax(load_model(b)[0](x), 1)
                + 0.25 * torch.softmax(load_model(c)[0](x), 1))
        torch.testing.assert_close(torch.softmax(ens(x), 1), want, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="3 members"):
        write_ensemble([tmp_path / "ab", c], tmp_path / "bad", weights=[1, 1])
    meta = write_ensemble([tmp_path / "ab", c], tmp_path / "ac", weights=[1, 0, 1])  # a weight-0 member is left out
    assert [m["name"] for m in meta["ensemble"]["members"]] == ["ab/a", "c"]
    assert len(load_model(tmp_path / "ac")[0].members) == 2


def test_an_ensemble_of_a_colour_and_a_gray_model_given_as_a_member_gives_both(tmp_path):
    """The shipped default's shape: a 64 colour member and a 48 gray one (its mean written [0.5] where
    the colour member's is [0.5, 0.5, 0.5]); given with another colour model, all three join."""
    from ferlab.data.colour import same_normalisation
    assert same_normalisation({"mean": [0.5], "std": 0.5}, {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    assert not same_normalisation({"mean": [0.4], "std": 0.5}, {"mean": [0.5, 0.5, 0.5], "std": 0.5})
    colour = _tiny(tmp_path, "colour", 0, size=64, channels=3, mean=[0.5, 0.5, 0.5])
    gray = _tiny(tmp_path, "gray", 1)
    write_ensemble([colour, gray], tmp_path / "cg", weights=[0.8, 0.2])
    other = _tiny(tmp_path, "other", 2, arch="fastnet_m", size=64, channels=3, mean=[0.5, 0.5, 0.5])
    meta = write_ensemble([tmp_path / "cg", other], tmp_path / "all", weights=[2, 1, 1])
    assert [m["name"] for m in meta["ensemble"]["members"]] == ["cg/colour", "cg/gray", "other"]
    ens, _ = load_model(tmp_path / "all")
    assert torch.softmax(ens(torch.randn(2, 3, 64, 64)), 1).shape == (2, 3)


def test_members_must_read_one_input_and_weights_must_fit(tmp_path):
    a = _tiny(tmp_path, "a", 0)
    big = _tiny(tmp_path, "big", 1, size=64)
    with pytest.raises(ValueError, match="another input"):
        write_ensemble([a, big], tmp_path / "e", weights=[1, 1])
    with pytest.raises(ValueError, match="2 members"):
        write_ensemble([a, _tiny(tmp_path, "b", 2)], tmp_path / "e", weights=[1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        write_ensemble([a, _tiny(tmp_path, "c", 3)], tmp_path / "e", weights=[1, -1])
    with pytest.raises(ValueError, match="at least two"):
        write_ensemble([a], tmp_path / "e", weights=[1])


def test_the_weight_search_finds_the_best_mix_and_ties_go_to_the_first_member():
    assert len(simplex_grid(3, 0.5)) == 6 and simplex_grid(2, 0.5)[0] == (1.0, 0.0)
    y = np.array([0, 1, 2, 0, 1, 2])
    src = np.array(["a", "a", "a", "b", "b", "b"])
    eye = np.eye(3)
    good_on_a = np.where((src == "a")[:, None], eye[y], eye[(y + 1) % 3] * 0.6 + eye[y] * 0.4)
    good_on_b = np.where((src == "b")[:, None], eye[y], eye[(y + 1) % 3] * 0.6 + eye[y] * 0.4)
    r = choose_weights([good_on_a, good_on_b], y, src, step=0.1)
    assert r["selection"]["score"] == 1.0 and r["members_alone"][0]["score"] == 0.5
    assert r["weights"][0] > 0 and r["weights"][1] > 0  # only the mix gets both sources right
    same = choose_weights([eye[y], eye[y]], y, None, step=0.5)
    assert same["weights"] == [1.0, 0.0]


def test_ensemble_cli_runs_in_predict_and_refuses_bad_weights(tmp_path):
    a, b = _tiny(tmp_path, "a", 0), _tiny(tmp_path, "b", 1)
    out = tmp_path / "e"
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", "ensemble", str(a), str(b), "--weights", "0.5,0.5",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.with_suffix(".json").read_text())["ensemble"]["weights"] == [0.5, 0.5]
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", "predict", "--model", str(out), "--out",
                        str(tmp_path / "pred")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 face" in r.stdout, r.stderr
    for bad, needle in ((["--weights", "x,y"], "comma-separated"), (["--weights", "1"], "1 weights for 2")):
        r = subprocess.run([sys.executable, "-m", "ferlab.cli", "ensemble", str(a), str(b), *bad, "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", "ensemble", str(a), str(tmp_path / "nothing"),
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no such model file" in r.stderr


def test_a_gray_smaller_member_reads_the_colour_face_made_gray_and_area_resampled(tmp_path):
    """The ensemble reads its first member's input (64 px colour); a 48 px gray member gets each face
    as OpenCV would give it (gray by 0.299 R + 0.587 G + 0.114 B, INTER_AREA), also through ONNX."""
    import cv2

    from ferlab.engine.onnx_runtime import export_onnx
    torch.manual_seed(0)
    colour = create_model("fastnet_s", num_classes=3, in_chans=3)
    cmeta = {"arch": "fastnet_s", "labels": LABELS, "model_kwargs": {"in_chans": 3},
             "preprocess": {"img_size": 64, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": 0.5, "framing": "fer2013"}}
    save_model(tmp_path / "c", colour, cmeta)
    g = _tiny(tmp_path, "g", 1)
    meta = write_ensemble([tmp_path / "c.safetensors", g], tmp_path / "e", weights=[1, 1])
    assert meta["preprocess"]["img_size"] == 64 and meta["model_kwargs"]["members"][1]["input"] == {"img_size": 48, "channels": 1}
    ens, _ = load_model(tmp_path / "e")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    gray48 = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (48, 48), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    xg = torch.from_numpy(gray48)[None, None] / 127.5 - 1
    with torch.no_grad():
        want = 0.5 * torch.softmax(colour.eval()(x), 1) + 0.5 * torch.softmax(load_model(g)[0](xg), 1)
        got = torch.softmax(ens(x), 1)
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)  # OpenCV rounds its gray to whole levels
    onnx_path = export_onnx(ens, json.loads((tmp_path / "e.json").read_text()), tmp_path / "e.onnx")
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(np.exp(out) / np.exp(out).sum(1, keepdims=True), got.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="largest"):  # the smaller member first cannot read the larger
        write_ensemble([g, tmp_path / "c.safetensors"], tmp_path / "x", weights=[1, 1])


def test_a_soup_is_the_weight_mean_of_the_models_kept_greedily_on_the_selection_split(class_folder_dataset, tmp_path,
                                                                                      monkeypatch):
    """`ferlab soup`: uniform, the mean of every weight (BatchNorm statistics too); greedy, models join
    in order of their own selection score only while the soup's score does not fall."""
    from ferlab.engine import weight_average as wa
    from ferlab.engine.config import load_config
    paths = [_tiny(tmp_path, n, s) for n, s in (("a", 0), ("b", 1), ("c", 2))]
    data_cfg = load_config(None, ["data.dataset=folder", f"data.root={class_folder_dataset}",
                                  "data.labels=[neutral,happiness,surprise]", "data.img_size=48", "data.channels=1"])["data"]
    wa.write_soup(paths, tmp_path / "u", data_cfg, greedy=False, log=lambda *_: None)
    soup, meta = load_model(tmp_path / "u")
    states = [load_model(p)[0].state_dict() for p in paths]
    for k, t in soup.state_dict().items():
        if t.is_floating_point():
            torch.testing.assert_close(t, sum(s[k] for s in states) / 3)
    assert [i["kept"] for i in meta["soup"]["ingredients"]] == [True] * 3 and not meta["soup"]["greedy"]
    # greedy, with the scores made known: b (best alone) first; a joins (the pair scores as high), c does not
    scores = iter([0.5, 0.7, 0.4, 0.7, 0.6])  # a, b, c alone; then b+a, then b+a+c
    monkeypatch.setattr("ferlab.engine.ensemble.selection_score", lambda *a, **k: {"score": next(scores)})
    meta = wa.write_soup(paths, tmp_path / "g", data_cfg, log=lambda *_: None)
    assert [i["kept"] for i in meta["soup"]["ingredients"]] == [True, True, False]
    assert meta["soup"]["selection"] == 0.7
    assert [t["selection"] for t in meta["soup"]["greedy_trials"]] == [0.7, 0.6]
    got = load_model(tmp_path / "g")[0].state_dict()
    for k, t in got.items():
        if t.is_floating_point():
            torch.testing.assert_close(t, (states[0][k] + states[1][k]) / 2)
    with pytest.raises(ValueError, match="at least two"):
        wa.soup_models(paths[:1], data_cfg)
    other = _tiny(tmp_path, "d", 3, arch="fastnet_m")
    with pytest.raises(ValueError, match="differ"):
        wa.soup_models([paths[0], other], data_cfg)
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", "soup", str(paths[0]), str(other), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "differ" in r.stderr and "Traceback" not in r.stderr
