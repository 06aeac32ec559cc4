"""PCDA (paper 003): model shapes and switches, the dual attention and NeAA loss by hand, weights
in the IR-50 / POSTER V2 / MobileFaceNet layouts, the landmark net and its trainer, training."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import needs_ferplus

from ferlab.engine.checkpoint import load_model, save_model
from ferlab.losses import NeAALoss, build_loss, neaa_loss
from ferlab.models import create_model
from ferlab.models.ir50 import IR50
from ferlab.models.mobilefacenet import MobileFaceNetLandmarks, mobilefacenet_landmarks
from ferlab.models.pcda import PCDA, CrossFeatureBlock, LandmarkHeatmap
from ferlab.models.weights import WeightsError


def small_pcda(**kw):
    args = dict(num_classes=3, in_chans=1, img_size=32, embed_dim=32, num_heads=4, drop_rate=0.0)
    args.update(kw)
    return create_model("pcda", **args)


@pytest.mark.parametrize("heatmap", ["max", "sum", "abs_sum", "conv"])
@pytest.mark.parametrize("batch", [1, 3])
def test_pcda_shapes(heatmap, batch):
    m = small_pcda(heatmap=heatmap).eval()
    x = torch.randn(batch, 1, 32, 32)
    out = m(x, return_aux=True)
    assert out["logits"].shape == (batch, 3) and out["features"].shape == (batch, 32)
    assert torch.equal(m(x), out["logits"])
    maps = m.attention_maps(x)
    assert maps["heatmap"].shape == maps["class_attention"].shape == (batch, 32, 32)
    assert maps["landmarks"].shape == (batch, 68, 2)
    m.reset_classifier(5)
    assert m(x).shape == (batch, 5)
    with pytest.raises(ValueError, match="32x32"):
        m(torch.randn(1, 1, 48, 48))


def test_pcda_paper_sizes():
    """Paper section 3 / Table 8: 14x14 maps of 256 (IR-50) and 128 (MobileFaceNet) channels at
    112 px; IR-50 17.6 M and landmark net 1.0 M parameters; 34.2 M in all (we get 33.4 M)."""
    m = create_model("pcda").eval()
    x = torch.randn(1, 3, 112, 112)
    assert m.image_backbone(x).shape == (1, 256, 14, 14)
    assert m.landmark_features(x).shape == (1, 128, 14, 14)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert abs(count(m.image_backbone) / 1e6 - 17.6) < 0.05 and abs(count(m.landmark_net) / 1e6 - 1.0) < 0.02
    assert 32.5e6 < count(m) < 35e6
    assert m.num_classes == 7 and len(m.blocks) == 2 and m.blocks[0].mlp.fc1.out_features == 4 * 768
    assert m.heatmap.method == "max" and m.freeze_landmarks


def test_heatmap_methods_by_hand():
    f_lm = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2 channels, 1, 2)
    assert torch.equal(LandmarkHeatmap("max", 2, 4)(f_lm), torch.tensor([[[[1.0, 0.5]]]]))
    assert torch.equal(LandmarkHeatmap("sum", 2, 4)(f_lm), torch.tensor([[[[-2.0, -1.5]]]]))
    assert torch.equal(LandmarkHeatmap("abs_sum", 2, 4)(f_lm), torch.tensor([[[[4.0, 2.5]]]]))
    conv = LandmarkHeatmap("conv", 2, 4)
    assert conv(f_lm).shape == (1, 4, 1, 2)
    with pytest.raises(ValueError, match="heatmap method"):
        LandmarkHeatmap("mean")
    # eq. 1: the heatmap, repeated over the image channels, multiplies f_img element-wise
    m = small_pcda()
    f_img = torch.randn(2, 256, 4, 4)
    f_l = torch.randn(2, 128, 4, 4)
    fused, h = m.dot_product_attention(f_img, f_l)
    assert torch.allclose(fused, f_img * f_l.max(1, keepdim=True).values)
    no_dot = small_pcda(dot_attention=False)
    assert no_dot.dot_product_attention(f_img, f_l)[0] is f_img


def test_cross_feature_block_by_hand():
    """Eqs. 3-5: queries from the landmark tokens, keys and values from the fusion tokens."""
    torch.manual_seed(0)
    blk = CrossFeatureBlock(8, num_heads=1, cross=True).eval()
    t_f, t_l = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    q = blk.q(blk.norm_landmark(t_l))
    k, v = blk.kv(blk.norm1(t_f)).split(8, -1)
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), -1)
    t1 = t_f + blk.proj(attn @ v)
    expect = t1 + blk.mlp(blk.norm2(t1))
    out, a = blk(t_f, t_l, return_attention=True)
    assert torch.allclose(out, expect, atol=1e-5) and torch.allclose(a[:, 0], attn, atol=1e-6)
    # the landmark tokens steer the result; without cross attention they are not used at all
    assert not torch.allclose(blk(t_f, torch.randn_like(t_l)), out)
    self_blk = CrossFeatureBlock(8, num_heads=2, cross=False).eval()
    assert torch.equal(self_blk(t_f, t_l), self_blk(t_f, torch.zeros_like(t_l)))


def test_gradient_reaches_every_trainable_part_and_landmarks_stay_frozen():
    for heatmap in ("max", "conv"):
        m = small_pcda(heatmap=heatmap).train()
        bn = m.landmark_net.conv1.bn
        before = bn.running_mean.clone()
        out = m(torch.randn(4, 1, 32, 32), return_aux=True)
        NeAALoss()(out, F.one_hot(torch.tensor([0, 0, 1, 1]), 3).float()).backward()
        trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
        assert trainable and all(not n.startswith("landmark_net.") for n, _ in trainable)
        for n, p in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        assert all(p.grad is None for p in m.landmark_net.parameters())
        assert torch.equal(bn.running_mean, before) and not m.landmark_net.training
    # unfrozen, the landmark net trains too
    m = small_pcda(freeze_landmarks=False)
    m(torch.randn(2, 1, 32, 32)).sum().backward()
    assert m.landmark_net.conv_4.model[0].conv.conv.weight.grad is not None


def test_neaa_loss_by_hand():
    # neutral (class 0): f0=(0,0), f1=(1,0), f2=(0,2): pair MSEs 0.5, 2, 2.5, each counted twice,
    # / (3-1)^2 -> 10 / 4 = 2.5. Class 1: f3=(1,1) confident (anchor), f4=(3,1): MSE 2, / N_c=2 -> 1.
    # Class 2 has one sample: 0.
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 1.0], [5.0, 5.0]])
    logits = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 10, 0], [0, 0, 0], [0, 0, 9]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    assert torch.isclose(neaa_loss(f, logits, labels, neutral=0), torch.tensor(3.5))
    # the anchor is the lowest-entropy sample: make f4 the confident one instead -> same distance
    logits2 = logits.clone()
    logits2[3], logits2[4] = torch.zeros(3), torch.tensor([0.0, 10, 0])
    assert torch.isclose(neaa_loss(f, logits2, labels, neutral=0), torch.tensor(3.5))
    # no neutral class: class 0 is anchored too (anchor = f0, all equal entropy -> first): (0 + 0.5 + 2) / 3
    assert torch.isclose(neaa_loss(f, logits, labels, neutral=None), torch.tensor(2.5 / 3 + 1.0))
    # batches where every class has 0 or 1 samples, or a single neutral face: 0, no NaN
    assert neaa_loss(f[[0, 3, 5]], logits[[0, 3, 5]], labels[[0, 3, 5]]).item() == 0.0
    assert neaa_loss(f[:0], logits[:0], labels[:0]).item() == 0.0
    # the anchor is a target: no gradient reaches it
    fg = f.clone().requires_grad_(True)
    neaa_loss(fg, logits, labels).backward()
    assert torch.equal(fg.grad[3], torch.zeros(2)) and fg.grad[4].abs().sum() > 0
    assert fg.grad[5].abs().sum() == 0


def test_neaa_total_loss_and_neutral_index_from_the_label_set():
    out = {"logits": torch.randn(6, 3), "features": torch.randn(6, 4)}
    t = F.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 3).float()
    loss = NeAALoss(weight=0.01)
    total = loss(out, t)
    expect = F.cross_entropy(out["logits"], t) + 0.01 * neaa_loss(out["features"], out["logits"], t.argmax(1), 0)
    assert torch.isclose(total, expect) and set(loss.parts) == {"ce", "neaa"}
    assert build_loss({"loss": {"name": "neaa"}}, ["happiness", "neutral", "sadness"]).neutral_index == 1
    assert build_loss({"loss": {"name": "neaa"}}, ["happiness", "sadness"]).neutral_index is None
    with pytest.raises(ValueError, match="class-token features"):
        loss(out["logits"], t)


def test_pcda_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = small_pcda()
    x = torch.randn(6, 1, 32, 32)
    t = F.one_hot(torch.arange(6) % 3, 3).float()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-4)
    loss_fn = NeAALoss()
    for _ in range(50):
        loss = loss_fn(m(x, return_aux=True), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.train()  # batch statistics, as during training (50 steps leave BN running means behind)
    assert (m(x).argmax(1) == t.argmax(1)).all() and loss_fn.parts["ce"] < 0.5


def test_save_load_round_trip(tmp_path):
    m = small_pcda(heatmap="conv").eval()
    kwargs = {"in_chans": 1, "img_size": 32, "embed_dim": 32, "num_heads": 4, "heatmap": "conv"}
    save_model(tmp_path / "m", m, {"arch": "pcda", "labels": ["a", "b", "c"], "model_kwargs": kwargs,
                                   "preprocess": {"img_size": 32, "channels": 1, "mean": 0.5, "std": 0.5}})
    m2, _ = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(m(x), m2(x))


def _ir50_checkpoint(layout: str):
    """A state dict in the ir50.pth (face.evoLVe) or POSTER V2 layout, all 4 stages + the head."""
    ref = IR50(3, num_stages=4)
    res = {"bn1": 0, "conv1": 1, "prelu": 2, "conv2": 3, "bn2": 4}
    stem = {"conv": 0, "bn": 1, "prelu": 2}
    starts = [0, 3, 7, 21]
    sd = {}
    for k, v in ref.state_dict().items():
        parts = k.split(".")
        if parts[0] == "stem":
            sd[f"input_layer.{stem[parts[1]]}.{parts[2]}"] = v
            continue
        unit = int(parts[1])
        if layout == "poster_v2":
            stage = max(i for i, s in enumerate(starts) if unit >= s)
            if stage == 3:
                continue
            body = f"body{stage + 1}.{unit - starts[stage]}"
        else:
            body = f"body.{unit}"
        if parts[2] == "shortcut":
            sd[f"{body}.shortcut_layer.{ {'conv': 0, 'bn': 1}[parts[3]]}.{parts[4]}"] = v
        else:
            sd[f"{body}.res_layer.{res[parts[2]]}.{parts[3]}"] = v
    if layout == "ir50":
        sd["output_layer.3.weight"] = torch.randn(512, 512 * 49)
    return ref, sd


@pytest.mark.parametrize("layout", ["ir50", "poster_v2"])
def test_loads_ir50_layouts(tmp_path, layout):
    ref, sd = _ir50_checkpoint(layout)
    path = tmp_path / f"{layout}.pth"
    torch.save({"module." + k: v for k, v in sd.items()} if layout == "ir50" else sd, path)
    m = create_model("pcda", num_classes=7, pretrained_file=str(path)).eval()
    x = torch.randn(1, 3, 112, 112)
    ref3 = IR50(3, num_stages=3)
    ref3.load_state_dict({k: v for k, v in ref.state_dict().items() if k in ref3.state_dict()})
    assert torch.allclose(m.image_backbone(x), ref3.eval()(x), atol=1e-5)
    # gray model: the stem's colour kernel averaged
    g = create_model("pcda", in_chans=1, img_size=48, pretrained_file=str(path))
    assert torch.allclose(g.image_backbone.stem.conv.weight, ref.stem.conv.weight.mean(1, keepdim=True))


def test_loads_mobilefacenet_landmark_checkpoint_and_refuses_others(tmp_path):
    src = MobileFaceNetLandmarks().eval()
    torch.save({"epoch": 90, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}},
               tmp_path / "mobilefacenet_model_best.pth.tar")
    m = create_model("pcda", landmark_file=str(tmp_path / "mobilefacenet_model_best.pth.tar"))
    x = torch.randn(2, 3, 112, 112)
    assert torch.allclose(m.landmark_net(x), src(x), atol=1e-5)
    assert not any(p.requires_grad for p in m.landmark_net.parameters())
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError):
        create_model("pcda", landmark_file=str(tmp_path / "other.pth"))
    with pytest.raises(WeightsError):
        create_model("pcda", pretrained_file=str(tmp_path / "other.pth"))


def test_landmark_net_outputs_and_box_geometry(monkeypatch, tmp_path):
    from ferlab.engine.checkpoint import save_model as save
    from ferlab.engine.landmark_training import normalised_mean_error
    from ferlab.faces.landmarks import NetLandmarks, make_landmarker
    net = MobileFaceNetLandmarks().eval()
    assert net(torch.randn(2, 1, 48, 48)).shape == (2, 68, 2)   # gray and any size: prepared to 3 x 112
    assert net.forward_features(torch.randn(1, 3, 112, 112), "conv_4").shape == (1, 128, 14, 14)
    save(tmp_path / "lm", net, {"arch": "mobilefacenet_landmarks", "labels": []})
    lm = make_landmarker(str(tmp_path / "lm.safetensors"))
    assert isinstance(lm, NetLandmarks)
    pts = lm.on_crops([np.zeros((48, 48), np.uint8), np.zeros((60, 60, 3), np.uint8)])
    assert pts.shape == (2, 68, 2)
    # __call__ cuts the box to the FER2013 framing and maps points back to the photo: the crop's
    # centre point lands 0.036 / 0.057 box sides left of / above the box centre
    monkeypatch.setattr(lm, "on_crop", lambda crop: np.full((68, 2), (crop.shape[1] - 1) / 2, np.float32))
    img = np.zeros((200, 300, 3), np.uint8)
    p = lm(img, (100, 50, 180, 130))   # an 80-px box centred at (140, 90)
    assert np.allclose(p, [140 - 0.036 * 80, 90 - 0.057 * 80], atol=1.0)
    assert np.allclose(lm(img, (-20, -20, 40, 40)), [10 - 0.036 * 60, 10 - 0.057 * 60], atol=1.0)  # past the edge
    # NME: a 1-pixel shift of every point with eye corners 10 apart -> 0.1
    t = np.zeros((1, 68, 2), np.float32)
    t[0, 45, 0] = 10
    assert np.allclose(normalised_mean_error(t + [1, 0], t), 0.1)


@needs_ferplus
def test_landmarks_train_command_then_pcda_and_the_front_end_use_it(tmp_path, capsys):
    from conftest import FERPLUS

    from ferlab.cli import main
    out = tmp_path / "lm"
    rc = main(["landmarks", "train", "configs/landmarks_ferplus.yaml", f"data.root={FERPLUS}",
               "landmarks.epochs=1", "landmarks.batch_size=16", "landmarks.train_subset=48",
               "landmarks.max_eval=16", f"landmarks.out_dir={out}", "landmarks.threads=1"])
    assert rc == 0, capsys.readouterr().err
    assert "valid NME" in capsys.readouterr().out
    import json
    report = json.loads((out / "report.json").read_text())
    assert report["best_epoch"] == 1 and report["test"]["faces"] > 0 and report["valid_nme"] > 0
    m = create_model("pcda", in_chans=1, img_size=48, embed_dim=32, num_heads=4,
                     landmark_file=str(out / "best.safetensors"))
    ref = mobilefacenet_landmarks(pretrained_file=str(out / "best.safetensors"))
    assert torch.equal(m.landmark_net.conv1.conv.weight, ref.conv1.conv.weight)
    # the front end with the net instead of dlib
    from skimage import data as skdata

    from ferlab import FaceAnalyzer
    faces = FaceAnalyzer(landmarks=str(out / "best.safetensors")).analyze(skdata.astronaut())
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 68


def test_pcda_trains_end_to_end_and_explains(class_folder_dataset, tmp_path):
    from ferlab.cli import main
    from ferlab.engine.config import load_config
    from ferlab.engine.train import train
    src = MobileFaceNetLandmarks().eval()
    save_model(tmp_path / "lm", src, {"arch": "mobilefacenet_landmarks", "labels": []})
    out = tmp_path / "pcda"
    cfg = load_config(None, [
        "data.dataset=folder", f"data.root={class_folder_dataset}", "data.labels=[neutral,happiness,surprise]",
        "data.img_size=32", "data.channels=1", "model.name=pcda",
        f"model.kwargs={{img_size: 32, embed_dim: 32, num_heads: 4, landmark_file: {tmp_path / 'lm.safetensors'}}}",
        "loss={name: neaa, weight: 0.01}", "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0",
        "schedule.name=constant", "schedule.epochs=2", "train.batch_size=8", "train.threads=1",
        "train.progress=false", f"train.out_dir={out}", "augment.erasing=0"])
    r = train(cfg, log=lambda m: None)
    assert set(r["history"][0]["train_loss_parts"]) == {"ce", "neaa"}
    m, meta = load_model(out / "best.safetensors")
    assert "landmark_file" not in meta["model_kwargs"]   # the checkpoint holds the landmark net itself
    assert torch.equal(m.landmark_net.conv1.conv.weight, src.conv1.conv.weight)
    png = tmp_path / "pcda.png"
    assert main(["explain", "--model", str(out / "best.safetensors"), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_head_training_on_cached_features_keeps_the_backbones_and_matches_the_full_model(class_folder_dataset, tmp_path):
    """benchmarks/ablations.py pcda: rows train only the attention module on the cached features of
    a trained PCDA's frozen backbones; the result is an ordinary checkpoint that runs from images."""
    from ferlab.engine.config import load_config
    from ferlab.engine.head_training import train_head
    from ferlab.engine.train import train
    src = MobileFaceNetLandmarks().eval()
    save_model(tmp_path / "lm", src, {"arch": "mobilefacenet_landmarks", "labels": []})
    base = ["data.dataset=folder", f"data.root={class_folder_dataset}", "data.labels=[neutral,happiness,surprise]",
            "data.img_size=32", "data.channels=1", "model.name=pcda",
            f"model.kwargs={{img_size: 32, embed_dim: 32, num_heads: 4, landmark_file: {tmp_path / 'lm.safetensors'}}}",
            "loss={name: neaa, weight: 0.01}", "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0",
            "schedule.name=constant", "train.batch_size=8", "train.threads=1", "train.progress=false",
            "augment.erasing=0"]
    train(load_config(None, base + ["schedule.epochs=1", f"train.out_dir={tmp_path / 'full'}"]), log=lambda m: None)
    backbone, _ = load_model(tmp_path / "full" / "best.safetensors")
    cache = tmp_path / "features.pt"
    logs = []
    row = base + ["schedule.epochs=3", f"head_training.backbone_file={tmp_path / 'full' / 'best.safetensors'}",
                  f"head_training.cache_file={cache}"]
    r = train_head(load_config(None, row + [f"train.out_dir={tmp_path / 'row1'}"]), log=logs.append)
    assert cache.is_file() and any("features cached" in m for m in logs)
    assert len(r["history"]) == 3 and 0 <= r["test"]["accuracy"] <= 1 and "per_class" in r["test"]
    m, meta = load_model(tmp_path / "row1" / "best.safetensors")
    assert meta["head_training"]["backbone_file"].endswith("best.safetensors")
    sd, ref = m.state_dict(), backbone.state_dict()
    for k in sd:  # the backbones (BatchNorm statistics included) are the trained model's; the head is new
        if k.startswith(PCDA.backbone_prefixes):
            assert torch.equal(sd[k], ref[k]), k
    assert not torch.equal(sd["classifier.weight"], ref["classifier.weight"])
    # the cache holds what the backbones compute from the standardised training faces and their mirror images
    from ferlab.engine.evaluate import normalise
    from ferlab.engine.train import load_split_arrays
    splits, arrays = load_split_arrays(load_config(None, base)["data"])
    cached = torch.load(cache, weights_only=True)
    x = normalise(torch.from_numpy(arrays["train"][:4]), {"mean": 0.5, "std": 0.5})
    with torch.no_grad():
        for key, img in (("train", x), ("train_flip", x.flip(-1))):
            for c, f in zip(cached[key], m.backbone_features(img)):
                assert c.shape[0] == len(splits["train"]) and torch.allclose(c[:4].float(), f, atol=1e-2, rtol=1e-2), key
    # a second row reads the same cache; its valid accuracy is the full model's on the images
    logs.clear()
    r2 = train_head(load_config(None, row + ["model.kwargs.dot_attention=false", "schedule.epochs=1",
                                              f"train.out_dir={tmp_path / 'row2'}"]), log=logs.append)
    assert not any("features cached" in m for m in logs)
    from ferlab.data.arrays import load_splits
    from ferlab.engine.evaluate import evaluate_checkpoint_on_split
    valid = load_splits(load_config(None, base)["data"])["valid"]
    assert abs(evaluate_checkpoint_on_split(tmp_path / "row2" / "best", valid)["accuracy"]
               - r2["best_valid_accuracy"]) < 0.1
    # a landmark net that trains cannot be cached
    with pytest.raises(ValueError, match="frozen backbones"):
        train_head(load_config(None, row + ["model.kwargs.freeze_landmarks=false", f"train.out_dir={tmp_path / 'r3'}"]),
                   log=lambda m: None)


def test_the_shipped_landmark_net_agrees_with_dlib_on_a_real_face():
    """`--landmarks net`: the MobileFaceNet ferlab ships (fitted to dlib's points on FER+ train)
    finds the astronaut's 68 points close to dlib's (NME 0.064 when recorded, against a mean of
    0.115 on FER+ test crops: benchmarks/results/landmarks_ferplus.json)."""
    from skimage import data as skdata

    from ferlab.engine.landmark_training import normalised_mean_error
    from ferlab.faces import DlibLandmarks, FaceDetector
    from ferlab.faces.landmarks import NetLandmarks, make_landmarker, shipped_landmark_net
    assert shipped_landmark_net().is_file()
    net = make_landmarker("net")
    assert isinstance(net, NetLandmarks)
    photo = skdata.astronaut()
    box = FaceDetector("auto")(photo)[0].box
    nme = normalised_mean_error(net(photo, box)[None], DlibLandmarks()(photo, box)[None])[0]
    assert nme < 0.1, nme


def test_resnet18_trunk_takes_ir50s_place_and_starts_from_a_trained_resnet18(tmp_path):
    """image_backbone='resnet18': ferlab's ResNet-18 cut after 3 stages gives the map IR-50's 3 stages
    give (256 channels at 1/8 of the input); a trained ferlab ResNet-18 starts it through
    train.init_from (its stages 1-3 copied, the gray first convolution split over R, G, B), the
    attention module stays as built; the trunk's output is the ResNet's own layer3 map."""
    from ferlab.data.colour import GREY_FROM_RGB
    from ferlab.engine.train import init_from_checkpoint
    torch.manual_seed(0)
    m = small_pcda(in_chans=3, img_size=48, image_backbone="resnet18").eval()
    x = torch.randn(2, 3, 48, 48)
    assert m.image_backbone(x).shape == (2, 256, 6, 6) and m.grid == 6
    assert not any(k.startswith("image_backbone.net.layer4") or k.startswith("image_backbone.net.fc")
                   for k in m.state_dict())
    gray = create_model("resnet18", num_classes=3, in_chans=1, small_input=True).eval()
    save_model(tmp_path / "r18", gray, {"arch": "resnet18", "labels": ["neutral", "happiness", "surprise"],
                                        "model_kwargs": {"in_chans": 1, "small_input": True}})
    rest_before = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("image_backbone.")}
    init_from_checkpoint(m, tmp_path / "r18", "pcda", ["a", "b", "c"])
    assert torch.equal(m.image_backbone.net.layer3[1].conv2.weight, gray.net.layer3[1].conv2.weight)
    split = gray.net.conv1.weight * torch.tensor(GREY_FROM_RGB).view(1, 3, 1, 1)
    assert torch.allclose(m.image_backbone.net.conv1.weight, split)
    for k, v in m.state_dict().items():
        if k in rest_before:
            assert torch.equal(v, rest_before[k]), k
    g = torch.randn(2, 1, 48, 48)
    with torch.no_grad():  # colour start = the gray ResNet's own layer3 on the face made gray
        n = gray.net
        ref = n.layer3(n.layer2(n.layer1(n.act1(n.bn1(n.conv1(g))))))
        assert torch.allclose(m.image_backbone(g.expand(-1, 3, -1, -1)), ref, atol=1e-5)
    out = m(x, return_aux=True)
    assert out["logits"].shape == (2, 3) and m.gradcam_layer() is m.image_backbone.net.layer3
    with pytest.raises(ValueError, match="image_backbone"):
        small_pcda(image_backbone="vgg")


def test_landmark_gray_shows_the_landmark_net_the_face_made_gray():
    """landmark_gray=True: a colour face's landmark features are those of its gray version (OpenCV's
    weights), i.e. what a gray-trained landmark net was trained on; without it the colour goes in."""
    from pathlib import Path

    import ferlab
    from ferlab.data.colour import GREY_FROM_RGB
    shipped = str(Path(ferlab.__file__).parent / "weights" / "landmarks_mobilefacenet68.safetensors")
    torch.manual_seed(0)
    m = small_pcda(in_chans=3, img_size=32, landmark_gray=True, landmark_file=shipped).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    g = (x * torch.tensor(GREY_FROM_RGB).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.no_grad():
        a, b = m.landmark_features(x), m.landmark_features(g.expand(-1, 3, -1, -1))
        scale = float(a.abs().max())
        assert scale > 1e-3 and float((a - b).abs().max()) < 1e-4 * scale
        plain = small_pcda(in_chans=3, img_size=32, landmark_file=shipped).eval()
        plain.load_state_dict(m.state_dict())
        assert float((plain.landmark_features(x) - a).abs().max()) > 0.05 * scale
    assert "grey_from_rgb" not in m.state_dict()  # a constant, not a weight


@pytest.mark.parametrize("n_in,n_out", [(14, 6), (14, 7), (14, 3), (5, 4), (14, 14)])
def test_landmark_map_pooling_is_adaptive_average_pooling(n_in, n_out):
    """The landmark map goes to the image grid by fixed averaging matrices (exportable to ONNX), the
    same numbers as PyTorch's adaptive average pooling."""
    from ferlab.models.pcda import adaptive_pool_matrix
    f = torch.randn(2, 3, n_in, n_in)
    m = adaptive_pool_matrix(n_in, n_out)
    torch.testing.assert_close(torch.einsum("ih,bchw,jw->bcij", m, f, m), F.adaptive_avg_pool2d(f, n_out))


def test_a_48px_pcda_exports_to_onnx_with_the_same_outputs(tmp_path):
    """PCDA at 48 px (landmark map 14x14 pooled to the 6x6 image grid) runs on ONNX Runtime."""
    import onnxruntime as ort

    from ferlab.engine.onnx_runtime import export_onnx
    torch.manual_seed(0)
    m = small_pcda(in_chans=3, img_size=48, image_backbone="resnet18", landmark_gray=True).eval()
    meta = {"arch": "pcda", "labels": ["a", "b", "c"], "preprocess": {"img_size": 48, "channels": 3, "mean": 0.5, "std": 0.5}}
    import warnings
    with warnings.catch_warnings(record=True) as caught:  # a user sees none of the tracer's notes
        warnings.simplefilter("always")
        path = export_onnx(m, meta, tmp_path / "p.onnx")
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    x = torch.randn(2, 3, 48, 48)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, m(x).numpy(), atol=1e-4, rtol=1e-4)
