from pathlib import Path

import pytest
import torch

from ferlab.models import create_model, list_models
from ferlab.models.weights import WeightsError, load_pretrained_file


def test_registry():
    assert "resnet18" in list_models()
    with pytest.raises(KeyError, match="unknown model"):
        create_model("vgg99")


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_and_api(batch):
    m = create_model("resnet18", num_classes=7, in_chans=1).eval()
    x = torch.randn(batch, 1, 48, 48)
    feats = m.forward_features(x)
    assert feats.shape == (batch, 512, 3, 3)  # small-input stem: 48 -> 3x3 final maps
    assert m.forward_head(feats).shape == (batch, 7)
    assert m.forward_head(feats, pre_logits=True).shape == (batch, 512)
    m.reset_classifier(5)
    assert m(x).shape == (batch, 5)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=8, in_chans=1)
    x, y = torch.randn(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    # timm zero-initialises each block's last BN scale, so at init the residual branches get no
    # gradient by design; one SGD step first, then every parameter must receive one.
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing


def test_overfits_tiny_batch():
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=4, in_chans=1)
    x, y = torch.randn(8, 1, 32, 32), torch.arange(8) % 4
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_load_torchvision_layout_checkpoint(tmp_path):
    """A torchvision-style ResNet-18 checkpoint (RGB stem, 1000-class fc, 'state_dict' wrapper,
    'module.' prefixes) loads into a gray 8-class model: stem averaged over colour, fc skipped."""
    src = create_model("resnet18", num_classes=1000, in_chans=3).net.state_dict()
    ckpt = {"state_dict": {f"module.{k}": v.clone().normal_() if v.is_floating_point() else v
                           for k, v in src.items()}}
    torch.save(ckpt, tmp_path / "resnet18_msceleb.pth")
    m = create_model("resnet18", num_classes=8, in_chans=1, pretrained_file=tmp_path / "resnet18_msceleb.pth")
    w = ckpt["state_dict"]["module.conv1.weight"]
    torch.testing.assert_close(m.net.conv1.weight, w.mean(1, keepdim=True))
    torch.testing.assert_close(m.net.layer3[0].conv1.weight, ckpt["state_dict"]["module.layer3.0.conv1.weight"])
    assert m.net.fc.weight.shape == (8, 512)


def test_bad_weights_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        load_pretrained_file(create_model("resnet18").net, tmp_path / "junk.pth")
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="no tensor"):
        load_pretrained_file(create_model("resnet18").net, tmp_path / "other.pth")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_recipe_builds(path):
    """Each committed recipe: its model builds for its data (weights files left out) and its loss builds."""
    from ferlab.engine.config import load_config
    from ferlab.losses import build_loss
    cfg = load_config(path)
    from ferlab.models.weights import WEIGHT_FILE_KWARGS
    kw = {k: v for k, v in cfg["model"].get("kwargs", {}).items() if k not in WEIGHT_FILE_KWARGS}
    m = create_model(cfg["model"]["name"], num_classes=8, in_chans=cfg["data"]["channels"], **kw)
    assert getattr(m, "img_size", cfg["data"]["img_size"]) == cfg["data"]["img_size"]
    build_loss(cfg, class_prior=[1 / 8] * 8)  # the trainer gives the training set's class prior


@pytest.mark.parametrize("name", ["resnet18", "rasa", "dan", "swin_se", "pcda", "convcut"])
def test_every_model_has_timms_classifier_api(name):
    """get_classifier() is the final linear layer; reset_classifier changes it (t-SNE reads its input)."""
    kw = {"img_size": 64, "patch_size": 4, "window_size": 4} if name == "swin_se" else \
        {"img_size": 48, "embed_dim": 32, "num_heads": 4} if name == "pcda" else {}
    m = create_model(name, num_classes=5, in_chans=1, **kw)
    assert isinstance(m.get_classifier(), torch.nn.Linear) and m.get_classifier().out_features == 5
    m.reset_classifier(3)
    assert m.get_classifier().out_features == 3
