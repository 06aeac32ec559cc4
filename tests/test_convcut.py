"""Conv-cut (paper 004): truncation, the Detail Extraction block and its attention by hand, per-sample
attention, weights in timm / facebook / torchvision layouts, the two-stage schedule, explain + t-SNE."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from ferlab.engine.checkpoint import load_model, save_model
from ferlab.models import create_model
from ferlab.models.convcut import SeparableConv2d, channel_self_attention
from ferlab.models.weights import WeightsError


def small(**kw):
    args = dict(num_classes=3, in_chans=1, backbone="convnext_atto")
    args.update(kw)
    return create_model("convcut", **args)


@pytest.mark.parametrize("batch", [1, 3])
def test_convcut_shapes_and_paper_defaults(batch):
    m = create_model("convcut", num_classes=8, in_chans=1).eval()      # ConvNeXt-Base, cut after stage 2
    x = torch.randn(batch, 1, 64, 64)
    assert m.forward_features(x).shape == (batch, 256, 8, 8)
    assert m(x).shape == (batch, 8) and m.embed(x).shape == (batch, 256)
    assert m.cut == {"stages": 2, "blocks": 0} and len(m.detail.convs) == 2
    assert m.detail.convs[0].depthwise.kernel_size == (4, 4) and m.detail.convs[1].depthwise.stride == (2, 2)
    assert m.detail.convs[1].pointwise.out_channels == 256 and m.detail.spatial_dropout.p == 0.1
    assert abs(sum(p.numel() for p in m.backbone.parameters()) / 1e6 - 2.17) < 0.01
    m.reset_classifier(5)
    assert m(x).shape == (batch, 5)


def test_every_cut_point_builds():
    for stages, blocks, chans in [(1, 0, 40), (2, 0, 80), (2, 3, 160), (3, 0, 160), (4, 0, 320)]:
        m = small(stages=stages, blocks=blocks).eval()
        assert m.backbone_chans == chans and m(torch.randn(1, 1, 64, 64)).shape == (1, 3)
    for bad in [dict(stages=0), dict(stages=4, blocks=1), dict(stages=2, blocks=7)]:
        with pytest.raises(ValueError, match="does not fit"):
            small(**bad)
    with pytest.raises(ValueError, match="de_layers"):
        small(de_layers=4)


def test_detail_extraction_attention_by_hand():
    # tokens = the channel values (d = 1): f_i = sum_j softmax_j(y_i y_j) y_j
    y = torch.tensor([[1.0, 0.0, -1.0]])
    e = math.exp
    f0 = (e(1) * 1 + e(0) * 0 + e(-1) * -1) / (e(1) + e(0) + e(-1))
    f1 = 0.0  # y_1 = 0: uniform weights over (1, 0, -1)
    f2 = (e(-1) * 1 + e(0) * 0 + e(1) * -1) / (e(1) + e(0) + e(-1))
    assert torch.allclose(channel_self_attention(y), torch.tensor([[f0, f1, f2]]), atol=1e-6)
    # separable convs keep working on maps smaller than their kernel (zero-padded bottom/right)
    sc = SeparableConv2d(4, 8, 4, 4)
    assert sc(torch.randn(2, 4, 6, 6)).shape == (2, 8, 2, 2) and sc(torch.randn(1, 4, 3, 3)).shape == (1, 8, 1, 1)
    x = torch.randn(1, 4, 8, 8)  # no padding when the map fits: depthwise then pointwise
    assert torch.allclose(sc(x), sc.pointwise(sc.depthwise(x)))
    # ablation switches: no Detail Extraction -> the backbone's pooled channels; no attention -> GAP only
    m = small(detail_extraction=False, self_attention=False).eval()
    x = torch.randn(2, 1, 64, 64)
    assert torch.allclose(m.embed(x), m.forward_features(x).mean((2, 3)))
    m2 = small(self_attention=False).eval()
    assert torch.allclose(m2.embed(x), m2.detail.feature_map(m2.forward_features(x)).mean((2, 3)))


def test_attention_stays_inside_each_sample():
    """The authors' code attends across the batch; here a face's output never depends on its batch."""
    m = small().eval()
    x = torch.randn(4, 1, 64, 64)
    alone = torch.cat([m(x[i:i + 1]) for i in range(4)])
    assert torch.allclose(m(x), alone, atol=1e-5)


def test_gradient_reaches_every_trainable_part_and_freezing():
    m = small().train()
    F.cross_entropy(m(torch.randn(4, 1, 64, 64)), torch.tensor([0, 1, 2, 1])).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    m = small(freeze_backbone=True).train()
    assert not m.backbone.training and m.detail.training
    F.cross_entropy(m(torch.randn(4, 1, 64, 64)), torch.tensor([0, 1, 2, 1])).backward()
    assert all(p.grad is None for p in m.backbone.parameters())
    assert all(p.grad is not None for p in m.detail.parameters())


def test_convcut_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = small(de_dropout=0.0)
    x, y = torch.randn(6, 1, 64, 64), torch.arange(6) % 3
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(40):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert (m(x).argmax(1) == y).all() and float(loss.detach()) < 0.3


def test_save_load_round_trip(tmp_path):
    m = small(stages=2, blocks=1, de_layers=3).eval()
    save_model(tmp_path / "m", m, {"arch": "convcut", "labels": ["a", "b", "c"],
                                   "model_kwargs": {"in_chans": 1, "backbone": "convnext_atto", "stages": 2, "blocks": 1,
                                                    "de_layers": 3},
                                   "preprocess": {"img_size": 64, "channels": 1, "mean": 0.5, "std": 0.5}})
    m2, _ = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(m(x), m2(x))


def _layouts():
    """One ImageNet ConvNeXt state dict (convnext_atto: the Base's layout, smaller) in timm's,
    facebook's and torchvision's key names, each with its 1000-class head."""
    import timm
    ref = timm.create_model("convnext_atto", pretrained=False, num_classes=1000)
    timm_sd = ref.state_dict()
    fb = {}
    for k, v in timm_sd.items():
        k2 = k.replace("stem.", "downsample_layers.0.")
        k2 = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", k2)
        k2 = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", k2)
        k2 = k2.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv").replace("head.norm", "norm").replace("head.fc", "head")
        fb[k2] = v
    tv = {}
    for k, v in timm_sd.items():
        if k.startswith("stem."):
            tv["features.0." + k[5:]] = v
            continue
        m = re.match(r"stages\.(\d+)\.downsample\.(\d+)\.(.*)", k)
        if m:
            tv[f"features.{2 * int(m.group(1))}.{m.group(2)}.{m.group(3)}"] = v
            continue
        m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", k)
        if m:
            s, j, rest = int(m.group(1)), m.group(2), m.group(3)
            name = {"conv_dw": "block.0", "norm": "block.2", "mlp.fc1": "block.3", "mlp.fc2": "block.5"}
            if rest == "gamma":
                tv[f"features.{2 * s + 1}.{j}.layer_scale"] = v.view(-1, 1, 1)
            else:
                part, leaf = rest.rsplit(".", 1)
                tv[f"features.{2 * s + 1}.{j}.{name[part]}.{leaf}"] = v
            continue
        tv["classifier." + k.split(".", 1)[1]] = v
    return ref, {"timm": timm_sd, "facebook": {"model": fb}, "torchvision": tv}


@pytest.mark.parametrize("layout", ["timm", "facebook", "torchvision"])
def test_loads_convnext_checkpoint_layouts(tmp_path, layout):
    ref, layouts = _layouts()
    path = tmp_path / f"convnext_{layout}.pth"
    torch.save(layouts[layout], path)
    m = create_model("convcut", num_classes=7, backbone="convnext_atto", pretrained_file=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    ref.eval()
    expect = ref.stages[1](ref.stages[0](ref.stem(x)))
    assert torch.allclose(m.forward_features(x), expect, atol=1e-5)
    g = create_model("convcut", in_chans=1, backbone="convnext_atto", pretrained_file=str(path))
    assert torch.allclose(g.backbone.stem[0].weight, ref.stem[0].weight.mean(1, keepdim=True))
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError):
        create_model("convcut", backbone="convnext_atto", pretrained_file=str(tmp_path / "other.pth"))


def _cfg(root, out, *extra):
    from ferlab.engine.config import load_config
    return load_config(None, [
        "data.dataset=folder", f"data.root={root}", "data.labels=[neutral,happiness,surprise]", "data.img_size=32",
        "data.channels=1", "model.name=convcut", "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0",
        "schedule.name=constant", "train.batch_size=8", "train.threads=1", "train.progress=false",
        f"train.out_dir={out}", "augment.erasing=0", *extra])


def test_two_stage_schedule_freezes_then_fine_tunes_and_resumes(class_folder_dataset, tmp_path):
    from safetensors.torch import load_file

    from ferlab.engine.train import train
    pre = small(num_classes=3)
    save_model(tmp_path / "pre", pre, {"arch": "convcut", "labels": []})
    kw = f"model.kwargs={{backbone: convnext_atto, pretrained_file: {tmp_path / 'pre.safetensors'}}}"
    out = tmp_path / "two"
    logs = []
    cfg = _cfg(class_folder_dataset, out, kw, "schedule.epochs=2", "schedule.freeze_epochs=1",
               "schedule.finetune_lr=0.0001", "train.stop_after_epochs=1")
    r = train(cfg, log=logs.append)
    assert r.get("interrupted")
    after1 = load_file(str(out / "last.safetensors"))
    key = "backbone.stages.1.blocks.0.conv_dw.weight"
    assert torch.equal(after1[key], pre.state_dict()[key])                 # stage one: backbone frozen
    assert not torch.equal(after1["classifier.weight"], pre.state_dict()["classifier.weight"])
    cfg["train"]["stop_after_epochs"] = None
    r = train(cfg, resume=True, log=logs.append)                           # resumes into stage two
    after2 = load_file(str(out / "last.safetensors"))
    assert not torch.equal(after2[key], after1[key])
    assert r["history"][-1]["lr"] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="pretrained"):
        train(_cfg(class_folder_dataset, tmp_path / "bad", "model.kwargs={backbone: convnext_atto}",
                   "schedule.epochs=2", "schedule.freeze_epochs=1", "schedule.finetune_lr=0.0001"), log=logs.append)


def test_convcut_trains_and_explains_with_gradcam_and_tsne(class_folder_dataset, tmp_path):
    from ferlab.cli import main
    from ferlab.engine.train import train
    out = tmp_path / "cc"
    train(_cfg(class_folder_dataset, out, "model.kwargs={backbone: convnext_atto}", "schedule.epochs=1"),
          log=lambda m: None)
    png = tmp_path / "gradcam.png"
    assert main(["explain", "--model", str(out / "best.safetensors"), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    tsne = tmp_path / "tsne.png"
    assert main(["explain", "--tsne", "--model", str(out / "best.safetensors"), "--split", "test",
                 "--out", str(tsne)]) == 0
    assert tsne.read_bytes()[:4] == b"\x89PNG"
    assert main(["explain", "--tsne", "--model", str(out / "best.safetensors"), "--split", "nope"]) == 2


def test_two_stage_schedule_under_ddp(class_folder_dataset, tmp_path):
    """torchrun, 2 gloo processes: DDP is rebuilt when the backbone unfreezes, and the ranks stay in step."""
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file
    pre = small(num_classes=3)
    save_model(tmp_path / "pre", pre, {"arch": "convcut", "labels": []})
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29523",
           "-m", "ferlab.cli", "train", "-", "data.dataset=folder", f"data.root={class_folder_dataset}",
           "data.labels=[neutral,happiness,surprise]", "data.img_size=32", "model.name=convcut",
           f"model.kwargs={{backbone: convnext_atto, pretrained_file: {tmp_path / 'pre.safetensors'}}}",
           "schedule.name=constant", "schedule.epochs=2", "schedule.freeze_epochs=1", "schedule.finetune_lr=0.0001",
           "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0", "train.batch_size=8", "train.threads=1",
           "train.progress=false", "augment.erasing=0", f"train.out_dir={out}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("backbone unfrozen") == 1
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 2 and hist[1]["lr"] == pytest.approx(1e-4)
    key = "backbone.stages.1.blocks.0.conv_dw.weight"
    assert not torch.equal(load_file(str(out / "last.safetensors"))[key], pre.state_dict()[key])
