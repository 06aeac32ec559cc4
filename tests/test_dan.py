"""DAN (paper 001): model shapes, gradients, the three losses by hand, weights loading, training."""
import math

import pytest
import torch
import torch.nn.functional as F

from ferlab.engine.checkpoint import load_model, save_model
from ferlab.losses import DANLoss, affinity_loss, build_loss, center_loss, partition_loss
from ferlab.models import create_model
from ferlab.models.weights import WeightsError


def small_dan(**kw):
    return create_model("dan", num_classes=kw.pop("num_classes", 3), in_chans=1, small_input=True, **kw)


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
@pytest.mark.parametrize("batch", [1, 3])
def test_dan_shapes(heads, batch):
    m = small_dan(num_heads=heads).eval()
    x = torch.randn(batch, 1, 48, 48)
    out = m(x, return_aux=True)
    assert out["logits"].shape == (batch, 3) and out["features"].shape == (batch, 512)
    assert out["heads"].shape == (batch, heads, 512) and out["head_maps"].shape == (batch, heads, 3, 3)
    assert out["centres"].shape == (3, 512)
    assert torch.equal(m(x), out["logits"])
    if heads > 1:  # AFN: log-softmax across heads
        assert torch.allclose(out["heads"].exp().sum(1), torch.ones(batch, 512), atol=1e-4)
    assert m.head_maps(x).shape == (batch, heads, 48, 48)
    m.reset_classifier(5)
    assert m.eval()(x).shape == (batch, 5) and m.class_centres.shape == (5, 512)


def test_dan_paper_defaults():
    m = create_model("dan")
    assert m.num_heads == 4 and m.num_classes == 7 and m.classifier.in_features == 512
    assert m(torch.randn(2, 3, 224, 224), return_aux=True)["head_maps"].shape == (2, 4, 7, 7)
    h = m.heads[0]
    assert h.spatial.reduce[0].weight.shape == (256, 512, 1, 1)
    assert h.spatial.conv1x3[0].weight.shape == (512, 256, 1, 3) and h.spatial.conv3x1[0].weight.shape == (512, 256, 3, 1)
    assert h.channel.fc[0].weight.shape == (32, 512) and h.channel.fc[3].weight.shape == (512, 32)


def test_gradient_reaches_every_trainable_part():
    m = small_dan()
    # timm zero-initialises the last BN of each residual block: one SGD step first wakes them up
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, t = torch.randn(4, 1, 48, 48), F.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()
    loss_fn = DANLoss()
    for _ in range(2):
        opt.zero_grad()
        loss_fn(m(x, return_aux=True), t).backward()
        if _ == 0:
            opt.step()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_affinity_loss_by_hand():
    # centres (0,0) and (2,0): per-dim variance across classes (unbiased) = (2, 0) -> sigma_c^2 = 2
    centres = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    feats = torch.tensor([[1.0, 1.0], [2.0, 3.0]])
    labels = torch.tensor([0, 1])
    # distances: |(1,1)-(0,0)|^2 = 2, |(2,3)-(2,0)|^2 = 9 -> mean 5.5 / 2
    assert affinity_loss(feats, centres, labels).item() == pytest.approx(5.5 / 2)
    assert center_loss(feats, centres, labels).item() == pytest.approx(0.5 * 5.5)


def test_partition_loss_by_hand():
    # one sample, k=2 heads, C=2 channels: variances across heads (unbiased) 2 and 8
    heads = torch.tensor([[[0.0, 0.0], [2.0, 4.0]]])
    want = (math.log(1 + 2 / 2) + math.log(1 + 2 / 8)) / 2
    assert partition_loss(heads).item() == pytest.approx(want, abs=1e-6)
    assert partition_loss(heads, "code").item() == pytest.approx(math.log(1 + 2 / 5), abs=1e-6)
    assert partition_loss(torch.randn(3, 1, 5)).item() == 0.0  # a single head: no partition loss


def test_dan_loss_combines_the_parts():
    out = {"logits": torch.tensor([[2.0, 0.0]]), "features": torch.tensor([[1.0, 1.0]]),
           "centres": torch.tensor([[0.0, 0.0], [2.0, 0.0]]), "heads": torch.tensor([[[0.0, 0.0], [2.0, 4.0]]])}
    t = torch.tensor([[1.0, 0.0]])
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    af = 2 / 2
    pt = (math.log(2) + math.log(1.25)) / 2
    assert DANLoss()(out, t).item() == pytest.approx(ce + af + pt, abs=1e-5)
    assert DANLoss(lambda_affinity=0.5, lambda_partition=2.0)(out, t).item() == pytest.approx(ce + 0.5 * af + 2 * pt,
                                                                                            abs=1e-5)
    assert DANLoss(feature_loss="center", partition=False)(out, t).item() == pytest.approx(ce + 0.5 * 2, abs=1e-5)
    assert DANLoss(feature_loss="none", partition=False)(out, t).item() == pytest.approx(ce, abs=1e-5)
    loss = build_loss({"loss": {"name": "dan", "feature_loss": "center"}})
    assert loss.feature_loss == "center" and loss.l1 == 1.0
    with pytest.raises(ValueError, match="auxiliary"):
        DANLoss()(out["logits"], t)


def test_dan_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = small_dan()
    x = torch.randn(6, 1, 48, 48)
    t = F.one_hot(torch.arange(6) % 3, 3).float()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss_fn = DANLoss()
    for _ in range(25):
        m.train()
        loss = loss_fn(m(x, return_aux=True), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.train()  # batch statistics, as during training
    assert (m(x).argmax(1) == t.argmax(1)).all()
    assert loss_fn.parts["ce"] < 0.5


def test_save_load_round_trip(tmp_path):
    m = small_dan(num_heads=2).eval()
    meta = {"arch": "dan", "labels": ["a", "b", "c"], "model_kwargs": {"in_chans": 1, "num_heads": 2, "small_input": True},
            "preprocess": {"img_size": 48, "channels": 1, "mean": 0.5, "std": 0.5}}
    save_model(tmp_path / "m", m, meta)
    m2, _ = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 48, 48)
    assert torch.equal(m(x), m2(x))


def test_loads_torchvision_resnet18_msceleb_layout(tmp_path):
    """resnet18_msceleb.pth: {'state_dict': torchvision ResNet-18 keys} incl. an fc of another size."""
    import timm
    ref = timm.create_model("resnet18", pretrained=False, num_classes=12000)  # same key names as torchvision
    sd = {k: v for k, v in ref.state_dict().items()}
    assert "layer4.1.bn2.running_var" in sd and "fc.weight" in sd
    torch.save({"state_dict": sd, "epoch": 30}, tmp_path / "resnet18_msceleb.pth")
    m = create_model("dan", num_classes=7, pretrained_file=str(tmp_path / "resnet18_msceleb.pth"))
    assert torch.equal(m.backbone.layer3[1].conv2.weight, sd["layer3.1.conv2.weight"])
    assert torch.equal(m.backbone.bn1.running_mean, sd["bn1.running_mean"])
    # gray model: first conv averaged over colour
    g = create_model("dan", num_classes=7, in_chans=1, pretrained_file=str(tmp_path / "resnet18_msceleb.pth"))
    assert torch.allclose(g.backbone.conv1.weight, sd["conv1.weight"].mean(1, keepdim=True))


def test_loads_the_authors_dan_checkpoint_layout(tmp_path):
    src = create_model("dan", num_classes=7)
    authors = {}
    trunk = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    head = {"spatial.reduce": "sa.conv1x1", "spatial.conv3x3": "sa.conv_3x3", "spatial.conv1x3": "sa.conv_1x3",
            "spatial.conv3x1": "sa.conv_3x1", "channel.fc": "ca.attention"}
    for k, v in src.state_dict().items():
        if k.startswith("backbone."):
            first, rest = k[9:].split(".", 1)
            authors[f"features.{trunk[first]}.{rest}"] = v
        elif k.startswith("heads."):
            _, i, unit, sub, rest = k.split(".", 4)
            authors[f"cat_head{i}.{head[unit + '.' + sub]}.{rest}"] = v
        elif k.startswith("classifier_bn."):
            authors["bn." + k[14:]] = v
        elif k.startswith("classifier."):
            authors["fc." + k[11:]] = v
    torch.save({"iter": 21, "model_state_dict": authors}, tmp_path / "rafdb_epoch21_acc0.897.pth")
    m = create_model("dan", num_classes=7, pretrained_file=str(tmp_path / "rafdb_epoch21_acc0.897.pth")).eval()
    x = torch.randn(2, 3, 112, 112)
    assert torch.allclose(m(x), src.eval()(x), atol=1e-5)
    # something that is not a ResNet-18 is refused clearly
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError):
        create_model("dan", pretrained_file=str(tmp_path / "other.pth"))


def test_dan_trains_end_to_end_and_explains(class_folder_dataset, tmp_path):
    from ferlab.cli import main
    from ferlab.engine.config import load_config
    from ferlab.engine.train import train
    out = tmp_path / "dan"
    cfg = load_config(None, [
        "data.dataset=folder", f"data.root={class_folder_dataset}", "data.labels=[neutral,happiness,surprise]",
        "data.img_size=32", "data.channels=1", "model.name=dan", "model.kwargs={num_heads: 2, small_input: true}",
        "loss.name=dan", "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0", "schedule.name=constant",
        "schedule.epochs=2", "train.batch_size=8", "train.threads=1", "train.progress=false",
        f"train.out_dir={out}", "augment.erasing=0"])
    r = train(cfg, log=lambda m: None)
    assert set(r["history"][0]["train_loss_parts"]) == {"ce", "affinity", "partition"}
    png = tmp_path / "dan.png"
    assert main(["explain", "--model", str(out / "best.safetensors"), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
