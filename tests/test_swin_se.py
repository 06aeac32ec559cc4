"""Swin-SE (paper 002): model, SE block by hand, sizes, timm/Microsoft weights, SAM by hand and with a
GradScaler and DDP, hybrid datasets and balancing by augmentation, weighted metrics, explain."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import pattern_image, save_img

from ferlab.engine.checkpoint import load_model, save_model
from ferlab.engine.sam import SAM, build_sam
from ferlab.models import create_model
from ferlab.models.layers import SqueezeExcitation
from ferlab.models.swin_se import check_swin_sizes
from ferlab.models.weights import WeightsError

# a narrow, shallower Swin-T (embed 24, 2 blocks per stage, same heads) at 32 px with patch 2 and
# window 2 (grids 16-8-4-2, so every stage has a real window): fast, same code paths
TINY = {"img_size": 32, "patch_size": 2, "window_size": 2, "embed_dim": 24, "depths": [2, 2, 2, 2]}


def tiny(name="swin_se", **kw):
    return create_model(name, num_classes=kw.pop("num_classes", 3), in_chans=1, **{**TINY, **kw})


@pytest.mark.parametrize("name", ["swin_se", "swin_t"])
@pytest.mark.parametrize("batch", [1, 3])
def test_shapes(name, batch):
    m = tiny(name).eval()
    x = torch.randn(batch, 1, 32, 32)
    assert m(x).shape == (batch, 3)
    assert m.forward_features(x).shape == (batch, 2, 2, 192)
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (batch, 192)
    assert isinstance(m.se, SqueezeExcitation) == (name == "swin_se")
    m.reset_classifier(5)
    assert m(x).shape == (batch, 5)


def test_paper_defaults():
    m = create_model("swin_se")
    assert m.num_classes == 7 and m.num_features == 768
    assert m.se.fc1.weight.shape == (48, 768) and m.se.fc2.weight.shape == (768, 48)  # r = 16
    assert m.swin.patch_embed.proj.weight.shape == (96, 3, 4, 4)
    assert m.swin.layers[0].blocks[0].attn.relative_position_bias_table.shape == (13 * 13, 3)  # window 7
    assert [len(s.blocks) for s in m.swin.layers] == [2, 2, 6, 2]
    assert m(torch.randn(1, 3, 224, 224)).shape == (1, 7)


def test_sizes_are_checked():
    assert check_swin_sizes(224, 4, 7) == [56, 28, 14, 7]
    assert check_swin_sizes(64, 4, 4) == [16, 8, 4, 2]
    with pytest.raises(ValueError, match="multiple of patch_size x 8"):
        check_swin_sizes(112, 4, 7)
    with pytest.raises(ValueError, match="windows that fit"):
        check_swin_sizes(96, 4, 7)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_model("swin_se", img_size=100)


def test_se_block_by_hand():
    se = SqueezeExcitation(4, reduction=2)
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, -1.0, 0]]))
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 1.0], [0, 0]]))
        se.fc2.bias.copy_(torch.tensor([0, 0, 0, -1.0]))
    x = torch.tensor([[2.0, 3.0, 1.0, 5.0]])
    # hidden = relu([2, 3 - 1]) = [2, 2]; gate = sigmoid([2, 2, 4, -1])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    expect = [2 * sig(2), 3 * sig(2), 1 * sig(4), 5 * sig(-1)]
    assert torch.allclose(se(x), torch.tensor([expect], dtype=torch.float32), atol=1e-6)


def test_gradient_reaches_every_trainable_part():
    m = tiny()
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 1])
    F.cross_entropy(m(x), y).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_overfits_a_tiny_batch_with_sam():
    torch.manual_seed(0)
    m = tiny(drop_path_rate=0.0)
    x, y = torch.randn(6, 1, 32, 32), torch.arange(6) % 3
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    sam = SAM(opt, rho=0.05)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        assert sam.perturb()
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        sam.restore()
        opt.step()
    assert (m.eval()(x).argmax(1) == y).all()


def test_save_load_round_trip(tmp_path):
    m = tiny().eval()
    meta = {"arch": "swin_se", "labels": ["a", "b", "c"], "model_kwargs": {"in_chans": 1, **TINY},
            "preprocess": {"img_size": 32, "channels": 1, "mean": 0.5, "std": 0.5}}
    save_model(tmp_path / "m", m, meta)
    m2, _ = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(m(x), m2.eval()(x))


def _timm_swin(**kw):
    from timm.models.swin_transformer import SwinTransformer
    return SwinTransformer(**{"img_size": 64, "patch_size": 4, "window_size": 4, "embed_dim": 24,
                              "num_classes": 1000, **kw})


def test_loads_timm_checkpoint_with_other_window_patch_and_channels(tmp_path):
    """timm's swin_tiny_patch4_window7_224 layout (here narrow), loaded into a gray model with
    window 2 and patch 2: tables interpolated, patch embedding resampled and averaged to gray."""
    from safetensors.torch import save_file
    src = _timm_swin(img_size=224, window_size=7)
    sd = src.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    same = create_model("swin_se", num_classes=7, in_chans=3, img_size=224, embed_dim=24,
                        pretrained_file=str(tmp_path / "model.safetensors"))
    assert torch.equal(same.swin.layers[2].blocks[3].mlp.fc1.weight, sd["layers.2.blocks.3.mlp.fc1.weight"])
    assert torch.equal(same.swin.layers[0].blocks[0].attn.relative_position_bias_table,
                       sd["layers.0.blocks.0.attn.relative_position_bias_table"])
    x = torch.randn(1, 3, 224, 224)
    assert torch.allclose(same.eval().forward_features(x), src.eval().forward_features(x), atol=1e-5)
    small = create_model("swin_se", num_classes=7, in_chans=1, img_size=32, patch_size=2, window_size=2,
                         embed_dim=24, pretrained_file=str(tmp_path / "model.safetensors"))
    assert small.swin.layers[0].blocks[0].attn.relative_position_bias_table.shape == (9, 3)
    assert small.swin.patch_embed.proj.weight.shape == (24, 1, 2, 2)
    assert torch.equal(small.swin.layers[1].downsample.reduction.weight, sd["layers.1.downsample.reduction.weight"])


def test_loads_microsoft_swin_layout_and_refuses_other_files(tmp_path):
    """The original repository's checkpoint: {'model': ...}, patch merging at the end of each stage,
    `head.weight`, plus relative_position_index / attn_mask buffers."""
    import re
    src = _timm_swin()
    ms = {}
    for k, v in src.state_dict().items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        ms[k.replace("head.fc.", "head.")] = v
    ms["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    assert "layers.0.downsample.reduction.weight" in ms and "head.weight" in ms
    torch.save({"model": ms, "epoch": 300}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    m = create_model("swin_t", num_classes=7, in_chans=3, img_size=64, window_size=4, embed_dim=24,
                     pretrained_file=str(tmp_path / "swin_tiny_patch4_window7_224.pth"))
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(m.eval().forward_features(x), src.eval().forward_features(x), atol=1e-5)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 3, 3)}}, tmp_path / "resnet.pth")
    with pytest.raises(WeightsError):
        create_model("swin_se", pretrained_file=str(tmp_path / "resnet.pth"))


# -- SAM -------------------------------------------------------------------------------------------

def _quadratic_step(rho, adaptive, scaler=None):
    """One SAM + SGD step on L(w) = sum(a * w^2)."""
    a = torch.tensor([1.0, 3.0, 0.5])
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 4.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    sam = SAM(opt, rho=rho, adaptive=adaptive)
    scaled = (lambda loss: loss) if scaler is None else scaler.scale
    scaled((a * w ** 2).sum()).backward()
    sam.perturb(1.0 if scaler is None else scaler.get_scale())
    opt.zero_grad()
    scaled((a * w ** 2).sum()).backward()
    sam.restore()
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()
    return w.detach()


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_by_hand(adaptive):
    a, w0, rho, lr = np.array([1.0, 3.0, 0.5]), np.array([1.0, -2.0, 4.0]), 0.05, 0.1
    g = 2 * a * w0
    t = np.abs(w0) if adaptive else np.ones(3)
    e = rho * t ** 2 * g / np.linalg.norm(t * g)
    expect = w0 - lr * 2 * a * (w0 + e)
    assert np.allclose(_quadratic_step(rho, adaptive).numpy(), expect, atol=1e-6)


def test_sam_with_grad_scaler_matches_unscaled():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert torch.allclose(_quadratic_step(0.05, False, scaler), _quadratic_step(0.05, False), atol=1e-6)


def test_sam_leaves_weights_alone_on_inf_gradients():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    sam = SAM(opt)
    w.grad = torch.tensor([float("inf"), 1.0])
    assert not sam.perturb()
    sam.restore()
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))


def test_build_sam_from_config():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert build_sam({"optim": {}}, opt) is None
    s = build_sam({"optim": {"sam": {"rho": 0.1, "adaptive": True}}}, opt)
    assert s.rho == 0.1 and s.adaptive
    with pytest.raises(ValueError, match="optim.sam"):
        build_sam({"optim": {"sam": {"rh0": 0.1}}}, opt)
    with pytest.raises(ValueError, match="positive"):
        build_sam({"optim": {"sam": {"rho": 0}}}, opt)


# -- hybrid datasets, balancing, metrics, training, explain ---------------------------------------

@pytest.fixture
def hybrid_sources(tmp_path):
    """Three datasets in three layouts, with their own label spellings."""
    fer = tmp_path / "fer2013"  # FER2013 image folders: train/test, 7 classes
    for split, n in (("train", 8), ("test", 3)):
        for ci, name in enumerate(["neutral", "happy", "surprise"]):
            for k in range(n):
                save_img(fer / split / name / f"{k}.png", pattern_image(ci, hash((split, ci, k)) % 1000))
    ck = tmp_path / "ck48"  # CK+48: class folders only, subject in the file name
    for ci, name in enumerate(["happy", "surprise", "contempt"]):
        for k in range(3):
            save_img(ck / name / f"S{k:03d}_001_0000001{ci}.png", pattern_image(min(ci + 1, 2), k))
    lst = tmp_path / "list"  # a CSV list (e.g. an AffectNet subset)
    rows = ["path,label,split"]
    for k in range(4):
        save_img(lst / f"n{k}.png", pattern_image(0, 50 + k))
        rows.append(f"n{k}.png,Neutral,{'test' if k == 3 else 'train'}")
    (lst / "labels.csv").write_text("\n".join(rows) + "\n")
    return [{"dataset": "fer2013_folders", "root": str(fer)}, {"dataset": "ckplus48", "root": str(ck)},
            {"dataset": "csv", "root": str(lst)}]


def test_hybrid_dataset_merges_and_reports(hybrid_sources):
    from ferlab.data.arrays import load_splits
    from ferlab.data.hybrid import composition
    labels = ["neutral", "happiness", "surprise"]
    s = load_splits({"dataset": "hybrid", "labels": labels, "sources": hybrid_sources})
    assert len(s["train"]) + len(s["valid"]) == 8 * 3 + 6 + 3  # CK+ contempt left out
    assert len(s["test"]) == 3 * 3 + 1 and set(s["test"].flags["source"]) == {"fer2013_folders", "csv"}
    comp = composition(s["train"])
    assert set(comp) == {"total", "fer2013_folders", "ckplus48", "csv"}
    held = composition(s["valid"])  # each source without a valid split gives a stratified share
    assert comp["ckplus48"]["neutral"] == 0 and comp["csv"]["neutral"] + held["csv"]["neutral"] == 3
    assert comp["ckplus48"]["happiness"] + held["ckplus48"]["happiness"] == 3
    assert sum(comp["total"].values()) == len(s["train"])
    assert any("contempt" in why or "outside" in why for _, why in s["train"].skipped)
    # balanced hold-outs (paper: equal counts per class)
    b = load_splits({"dataset": "hybrid", "labels": labels, "sources": hybrid_sources, "holdout_per_class": "min"})
    counts = np.bincount(b["test"].labels, minlength=3)
    assert (counts == counts.min()).all() and counts.min() == 3
    with pytest.raises(ValueError, match="holdout_per_class must be"):
        load_splits({"dataset": "hybrid", "labels": labels, "sources": hybrid_sources, "holdout_per_class": "half"})
    with pytest.raises(ValueError, match="data.sources"):
        load_splits({"dataset": "hybrid", "labels": labels})


def test_balance_plan_fills_every_class_up():
    from ferlab.data.hybrid import balance_plan
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1 + [3] * 0)
    copies = balance_plan(labels, 4, seed=0)
    total = np.bincount(np.concatenate([labels, labels[copies]]), minlength=4)
    assert total.tolist() == [10, 10, 10, 0]
    # copies of class 1 cycle through its 3 images: each used 2 or 3 times
    used = np.bincount(copies[labels[copies] == 1], minlength=13)[10:13]
    assert sorted(used.tolist()) == [2, 2, 3]
    assert np.array_equal(copies, balance_plan(labels, 4, seed=0))
    assert len(balance_plan(labels, 4, seed=0, target=12)) == 2 + 9 + 11
    with pytest.raises(ValueError, match="balance_target"):
        balance_plan(labels, 4, target="most")


def test_autocontrast_stretches_each_image():
    from ferlab.data.augment import augment_batch
    from ferlab.data.hybrid import BALANCE_AUGMENT
    x = torch.rand(4, 1, 16, 16) * 0.5 + 0.25
    out = augment_batch(x, {**BALANCE_AUGMENT, "rotate": 0, "autocontrast": 1.0}, torch.Generator().manual_seed(0))
    assert torch.allclose(out.amin(dim=(1, 2, 3)), torch.zeros(4), atol=1e-6)
    assert torch.allclose(out.amax(dim=(1, 2, 3)), torch.ones(4), atol=1e-6)
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    assert torch.allclose(out, (x - lo) / (hi - lo), atol=1e-5)


def test_weighted_metrics():
    from sklearn.metrics import precision_recall_fscore_support

    from ferlab.engine.metrics import classification_metrics
    y, p = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y, p, ["a", "b", "c"])
    pr, rc, f1, _ = precision_recall_fscore_support(y, p, average="weighted")
    assert (m["weighted_precision"], m["weighted_recall"], m["weighted_f1"]) == pytest.approx((pr, rc, f1))
    # by hand: weighted recall = accuracy; precision per class 1, 0.5, 0.5 weighted 3:2:1
    assert m["weighted_recall"] == pytest.approx(4 / 6)
    assert m["weighted_precision"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)


def test_swin_se_trains_with_sam_on_a_balanced_hybrid_set_and_explains(hybrid_sources, tmp_path):
    import yaml

    from ferlab.cli import main
    from ferlab.engine.config import load_config
    from ferlab.engine.train import train
    out = tmp_path / "run"
    cfg = load_config(None, [
        "data.dataset=hybrid", f"data.sources={json.dumps(hybrid_sources)}", "data.labels=[neutral,happiness,surprise]",
        "data.img_size=32", "data.channels=1", "data.balance_by_augmentation=true", "model.name=swin_se",
        f"model.kwargs={json.dumps(TINY)}",
        "optim={name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0001, sam: {rho: 0.05}}",
        "schedule={name: step, epochs: 2, step_epochs: 1, gamma: 0.1}", "train.batch_size=8", "train.threads=1",
        "train.progress=false", f"train.out_dir={out}"])
    r = train(cfg, log=lambda m: None)
    assert len(r["history"]) == 2 and np.isfinite(r["history"][-1]["train_loss"])
    rep = json.loads((out / "data_report.json").read_text())
    counts = rep["train"]["class_counts"]
    gen = rep["train"]["generated_copies"]["class_counts"]
    assert len({counts[k] + gen[k] for k in counts}) == 1  # equal after balancing
    assert rep["train"]["generated_copies"]["n"] > 0
    test = json.loads((out / "test_metrics.json").read_text())
    assert {"weighted_precision", "weighted_recall", "weighted_f1"} <= set(test)
    assert set(test["per_source"]) == {"fer2013_folders", "csv"}
    png = tmp_path / "swin.png"
    assert main(["explain", "--model", str(out / "best.safetensors"), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": cfg["data"]}))
    assert main(["data", str(tmp_path / "c.yaml")]) == 0


def test_sam_under_ddp_keeps_ranks_in_step(class_folder_dataset, tmp_path):
    """torchrun, 2 CPU processes (gloo), SAM: the first pass is local (no_sync), the second is
    all-reduced; training finishes and rank 0 writes the model."""
    out = tmp_path / "ddp_sam"
    kw = json.dumps(TINY)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
           "-m", "ferlab.cli", "train", "-", "data.dataset=folder", f"data.root={class_folder_dataset}",
           "data.labels=[neutral,happiness,surprise]", "data.img_size=32", "model.name=swin_se",
           f"model.kwargs={kw}", "optim={name: sgd, lr: 0.05, momentum: 0.9, sam: {rho: 0.05}}",
           "schedule.epochs=1", "schedule.name=constant", "train.batch_size=8", "train.threads=1",
           "train.progress=false", f"train.out_dir={out}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "best.safetensors").is_file()
