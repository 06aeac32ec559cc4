"""RASA (paper 000): patch extraction, model API, loss, training with landmarks, weights loading."""
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from ferlab.data.augment import augment_batch
from ferlab.engine.checkpoint import load_model, save_model
from ferlab.losses import build_loss
from ferlab.losses.bce import softmax_bce
from ferlab.models import create_model
from ferlab.models.layers import attention_rollout, global_patch, grid_patches, landmark_patches
from ferlab.models.weights import WeightsError


def face_points(b, size=96, seed=0):
    """68 plausible points: dlib's mean shape spread over the middle of the image, jittered."""
    g = torch.Generator().manual_seed(seed)
    base = torch.stack([torch.linspace(0.15, 0.85, 68), torch.linspace(0.25, 0.85, 68).roll(7)], 1)
    return (base.unsqueeze(0) + 0.03 * torch.randn(b, 68, 2, generator=g)) * size


# -- patch extraction ---------------------------------------------------------------------------
def test_landmark_patches_cut_the_pixels_around_each_point():
    x = torch.arange(2 * 3 * 20 * 24, dtype=torch.float32).reshape(2, 3, 20, 24)
    centres = torch.tensor([[[10.0, 7.0], [3.0, 15.0]], [[20.0, 2.0], [12.0, 12.0]]])
    p = landmark_patches(x, centres, 5)
    assert p.shape == (2, 2, 3 * 25)
    for b in range(2):
        for n in range(2):
            cx, cy = (int(v) for v in centres[b, n])
            ref = x[b, :, cy - 2:cy + 3, cx - 2:cx + 3]
            assert torch.allclose(p[b, n].view(3, 5, 5), ref, atol=1e-3)
    # even sizes: a centre between pixels gives exact pixels too
    p6 = landmark_patches(x, torch.tensor([[[10.5, 7.5]]] * 2), 6)
    assert torch.allclose(p6[0, 0].view(3, 6, 6), x[0, :, 5:11, 8:14], atol=1e-3)


def test_border_patches_are_zero_padded_not_dropped_or_shifted():
    x = torch.ones(1, 1, 16, 16)
    p = landmark_patches(x, torch.tensor([[[0.0, 0.0], [15.0, 8.0], [-30.0, -30.0]]]), 5).view(3, 5, 5)
    assert p.shape == (3, 5, 5)  # all three kept, in order
    assert torch.equal(p[0, 2:, 2:], torch.ones(3, 3)) and p[0, :2].abs().sum() == 0 and p[0, :, :2].abs().sum() == 0
    assert torch.equal(p[1, :, :3], torch.ones(5, 3)) and p[1, :, 3:].abs().sum() == 0
    assert p[2].abs().sum() == 0  # a point outside the image gives an all-padding patch


def test_resize_points_maps_pixel_centres():
    from ferlab.faces.landmarks import resize_points
    # pixel 0 and pixel 47 of a 48-wide image are the centres of the first/last 2x2 block at 96
    pts = resize_points(np.array([[[0.0, 47.0]]]), 48, 48, 96)
    assert np.allclose(pts, [[[0.5, 94.5]]])
    both = resize_points(np.zeros((2, 1, 2)), np.array([48, 100]), np.array([48, 50]), 96)
    # second image 100 high, 50 wide: x = 0.5 * 96/50 - 0.5, y = 0.5 * 96/100 - 0.5
    assert np.allclose(both[:, 0], [[0.5, 0.5], [0.46, -0.02]], atol=1e-6)


def test_grid_and_global_patches():
    x = torch.randn(2, 1, 8, 8)
    g = grid_patches(x, 4)
    assert g.shape == (2, 4, 16)
    assert torch.equal(g[1, 1].view(4, 4), x[1, 0, :4, 4:])  # row by row: second patch is top right
    assert torch.equal(g[1, 2].view(4, 4), x[1, 0, 4:, :4])
    gp = global_patch(x, 4)
    assert gp.shape == (2, 1, 16) and torch.allclose(gp[0, 0, 0], x[0, 0, :2, :2].mean())
    with pytest.raises(ValueError, match="multiple"):
        grid_patches(torch.randn(1, 1, 10, 10), 4)


def test_augmentation_moves_landmarks_with_the_image_and_relabels_flips():
    h = 64
    pts = torch.rand(12, 68, 2, generator=torch.Generator().manual_seed(0)) * 40 + 12
    ys, xs = torch.arange(h).view(1, h, 1).float(), torch.arange(h).view(1, 1, h).float()
    c = pts[:, 36]  # a bright blob on point 36 (outer corner of the image-left eye)
    x = torch.exp(-((xs - c[:, 0, None, None]) ** 2 + (ys - c[:, 1, None, None]) ** 2) / 3).unsqueeze(1)
    aug = {"flip": True, "rotate": 30, "scale": [0.8, 1.2], "translate": 0.1, "brightness": 0, "contrast": 0,
           "erasing": 0}
    xa, pa = augment_batch(x, aug, torch.Generator().manual_seed(1), pts)
    flat = xa[:, 0].flatten(1).argmax(1)
    peak = torch.stack([flat % h, flat // h], 1).float()
    d36 = (pa[:, 36] - peak).norm(dim=1)
    d45 = (pa[:, 45] - peak).norm(dim=1)  # after a flip the blob is the other eye's outer corner
    assert (torch.minimum(d36, d45) < 1.0).all()
    assert (d36 < 1.0).any() and (d45 < 1.0).any()  # both flipped and unflipped samples occurred
    # the same generator state gives the same image with or without points
    xb = augment_batch(x, aug, torch.Generator().manual_seed(1))
    assert torch.equal(xa, xb)


# -- model ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,tokens", [({}, 52), ({"global_patch": False}, 51), ({"landmark_set": "all"}, 69),
                                           ({"patch_mode": "grid"}, 65)])
@pytest.mark.parametrize("batch", [1, 3])
def test_rasa_output_shapes(kwargs, tokens, batch):
    m = create_model("rasa", num_classes=7, in_chans=1, img_size=96, patch_size=12, **kwargs).eval()
    x, lm = torch.randn(batch, 1, 96, 96), face_points(batch)
    assert m.num_tokens == tokens
    feats = m.forward_features(x, lm)
    assert feats.shape == (batch, tokens, 64)
    assert m.forward_head(feats).shape == (batch, 7)
    assert m.forward_head(feats, pre_logits=True).shape == (batch, 64)
    assert m(x, lm).shape == (batch, 7)
    m.reset_classifier(3)
    assert m(x, lm).shape == (batch, 3)


def test_rasa_paper_defaults_and_head_width():
    m = create_model("rasa")
    assert (m.img_size, m.patch_size, m.embed_dim, len(m.blocks), m.num_tokens) == (256, 32, 64, 6, 52)
    attn = m.blocks[0].attn
    assert attn.num_heads == 16 and attn.head_dim == 64  # every head at full width D (eqs. 3-5)
    assert attn.qkv.weight.shape == (3 * 16 * 64, 64) and attn.proj.weight.shape == (64, 16 * 64)
    vit_split = create_model("rasa", head_dim=4)
    assert vit_split.blocks[0].attn.qkv.weight.shape == (3 * 64, 64)


def test_rasa_needs_landmarks_with_a_clear_message():
    m = create_model("rasa", img_size=96, patch_size=12)
    assert m.needs_landmarks and not create_model("rasa_grid", img_size=96, patch_size=12).needs_landmarks
    with pytest.raises(ValueError, match="68 face landmarks"):
        m(torch.randn(1, 1, 96, 96))
    with pytest.raises(ValueError, match=r"\(batch, 68, 2\)"):
        m(torch.randn(1, 1, 96, 96), torch.zeros(1, 51, 2))


def test_gradient_reaches_every_trainable_part():
    m = create_model("rasa", img_size=48, patch_size=6, num_classes=4)
    x, lm = torch.randn(3, 1, 48, 48), face_points(3, 48)
    F.cross_entropy(m(x, lm), torch.tensor([0, 1, 3])).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_attention_from_pooled_output_and_explain_map():
    m = create_model("rasa", img_size=48, patch_size=6).eval()
    x, lm = torch.randn(2, 1, 48, 48), face_points(2, 48)
    info = m.token_attention(x, lm)
    assert info["weights"].shape == (2, 52)
    assert torch.allclose(info["weights"].sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(info["logits"], m(x, lm), atol=1e-5)
    ex = m.explain_map(x, lm)
    assert ex["map"].shape == (2, 48, 48) and ex["global_weight"].shape == (2,)
    # rollout of identity attention keeps every token on itself
    eye = torch.eye(4).expand(1, 2, 4, 4)
    assert torch.allclose(attention_rollout([eye, eye]), torch.eye(4).unsqueeze(0))


# -- loss -----------------------------------------------------------------------------------------
def test_softmax_bce_matches_hand_computed_values():
    # softmax([0, ln 3]) = [1/4, 3/4]; target class 1:
    # BCE = -(log(1 - 1/4) + log(3/4)) / 2 = -log(3/4)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert softmax_bce(logits, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(-math.log(0.75), abs=1e-6)
    # three classes, logits 0 -> p = 1/3 each, target class 0:
    # -(log(1/3) + 2 log(2/3)) / 3
    v = softmax_bce(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])).item()
    assert v == pytest.approx(-(math.log(1 / 3) + 2 * math.log(2 / 3)) / 3, abs=1e-6)
    # same as torch's BCELoss on softmax probabilities, and stable for extreme logits
    z = torch.randn(5, 8) * 3
    t = F.one_hot(torch.arange(5), 8).float()
    assert softmax_bce(z, t).item() == pytest.approx(F.binary_cross_entropy(z.softmax(1), t).item(), abs=1e-5)
    assert torch.isfinite(softmax_bce(torch.tensor([[0.0, 200.0]]), torch.tensor([[1.0, 0.0]])))
    # the config route, and the sigmoid variant: -(log(1-s(0)) + log s(ln3)) / 2
    loss = build_loss({"loss": {"name": "bce", "activation": "sigmoid"}})
    want = -(math.log(0.5) + math.log(0.75)) / 2
    assert loss(logits, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(want, abs=1e-6)
    assert build_loss({"loss": {"name": "bce"}}).activation == "softmax"
    with pytest.raises(ValueError, match="bad options"):  # a clear message, not a TypeError
        build_loss({"loss": {"name": "cross_entropy", "activation": "softmax"}})


def test_rasa_overfits_a_tiny_batch():
    torch.manual_seed(0)
    m = create_model("rasa", img_size=48, patch_size=6, num_classes=4)
    x, lm = torch.randn(8, 1, 48, 48), face_points(8, 48)
    y = F.one_hot(torch.arange(8) % 4, 4).float()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = None
    for _ in range(60):
        loss = softmax_bce(m(x, lm), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    assert (m(x, lm).argmax(1) == y.argmax(1)).all()


def test_save_load_round_trip(tmp_path):
    m = create_model("rasa", img_size=48, patch_size=6, num_classes=3, landmark_set="all").eval()
    meta = {"arch": "rasa", "labels": ["a", "b", "c"],
            "model_kwargs": {"in_chans": 1, "img_size": 48, "patch_size": 6, "landmark_set": "all"},
            "preprocess": {"img_size": 48, "channels": 1, "mean": 0.5, "std": 0.5}}
    save_model(tmp_path / "m", m, meta)
    m2, meta2 = load_model(tmp_path / "m")
    x, lm = torch.randn(2, 1, 48, 48), face_points(2, 48)
    assert torch.equal(m(x, lm), m2(x, lm)) and meta2["arch"] == "rasa"


# -- pretrained weights -----------------------------------------------------------------------------
def test_loads_a_timm_vit_checkpoint_by_key_mapping(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=48, patch_size=6, in_chans=1,
                            embed_dim=64, depth=6, num_heads=16, num_classes=1000)
    torch.save({"model": vit.state_dict()}, tmp_path / "vit.pth")
    m = create_model("rasa", img_size=48, patch_size=6, head_dim=4, num_classes=8,
                     pretrained_file=str(tmp_path / "vit.pth"))
    sd = vit.state_dict()
    assert torch.equal(m.patch_embed.proj.weight, sd["patch_embed.proj.weight"].reshape(64, -1))
    assert torch.equal(m.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"])
    assert torch.equal(m.blocks[5].mlp.fc2.weight, sd["blocks.5.mlp.fc2.weight"])
    assert m.head.weight.shape == (8, 64)  # 1000-class head left out
    # a checkpoint of another width is refused with a clear message
    with pytest.raises(WeightsError, match="encoder tensors did not match"):
        create_model("rasa", img_size=48, patch_size=6, pretrained_file=str(tmp_path / "vit.pth"))


def test_loads_a_ferlab_rasa_checkpoint_for_fine_tuning(tmp_path):
    src = create_model("rasa", img_size=48, patch_size=6, num_classes=8)
    save_model(tmp_path / "src", src, {"arch": "rasa"})
    m = create_model("rasa", img_size=48, patch_size=6, num_classes=7,
                     pretrained_file=str(tmp_path / "src.safetensors"))
    assert torch.equal(m.pos_embed, src.pos_embed) and torch.equal(m.blocks[0].norm1.weight, src.blocks[0].norm1.weight)
    assert m.head.weight.shape == (7, 64)


# -- end to end: training with cached landmarks, evaluation, app, explain, export ---------------------
def test_rasa_trains_with_dataset_landmarks_and_serves_everywhere(class_folder_dataset, tmp_path, capsys):
    import json
    import subprocess
    import sys

    import onnxruntime as ort
    from skimage import data

    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.cli import main
    from ferlab.engine.config import load_config
    from ferlab.engine.train import train

    out = tmp_path / "rasa"
    cfg = load_config(None, [
        "data.dataset=folder", f"data.root={class_folder_dataset}", "data.labels=[neutral,happiness,surprise]",
        "data.img_size=32", "data.channels=1", "model.name=rasa",
        "model.kwargs={img_size: 32, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 4}",
        "loss.name=bce", "optim.name=adam", "optim.lr=0.002", "optim.weight_decay=0", "schedule.name=constant",
        "schedule.epochs=3", "train.batch_size=8", "train.threads=1", "train.progress=false",
        f"train.out_dir={out}", "augment.erasing=0"])
    r = train(cfg, log=lambda m: None)
    assert len(r["history"]) == 3
    assert len((out / "test_predictions.csv").read_text().splitlines()) == 1 + 12  # every test image, once
    ckpt = out / "best"

    # the app: detected faces get landmarks from the front end; crops get them from dlib on the crop
    fa = FaceAnalyzer(str(ckpt.with_suffix(".safetensors")))
    faces = fa.analyze(data.astronaut())
    assert len(faces) == 1 and set(faces[0]["probs"]) == {"neutral", "happiness", "surprise"}
    recs = fa.classify_crops([data.astronaut()[70:175, 170:272]] * 2)
    # the same crop twice, same answer (up to float rounding: a batch's rows may take different CPU kernels)
    assert len(recs) == 2 and recs[0]["probs"] == pytest.approx(recs[1]["probs"], abs=1e-5)

    # explain: the attention map as a PNG
    png = tmp_path / "explain.png"
    assert main(["explain", "--model", str(ckpt.with_suffix(".safetensors")), "--out", str(png)]) == 0
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "global patch" in capsys.readouterr().out

    # evaluation from the CLI recomputes landmarks through the cache
    assert main(["evaluate", str(ckpt.with_suffix(".safetensors")), "--split", "valid"]) == 0

    # ONNX export takes the landmarks as a second input and matches PyTorch
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "export", str(ckpt.with_suffix(".safetensors")),
                        str(tmp_path / "exp"), "--onnx"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    model, _ = load_model(ckpt)
    x, lm = torch.randn(2, 1, 32, 32), face_points(2, 32)
    sess = ort.InferenceSession(str(tmp_path / "exp.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy(), "landmarks": lm.numpy()})[0]
    np.testing.assert_allclose(got, model(x, lm).detach().numpy(), atol=1e-4, rtol=1e-4)
    assert json.loads((tmp_path / "exp.json").read_text())["arch"] == "rasa"


def test_explain_cli_grad_cam_for_cnns(tmp_path):
    from ferlab.cli import main
    png = tmp_path / "cam.png"
    assert main(["explain", "--out", str(png)]) == 0  # the shipped ResNet-18: Grad-CAM
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["explain", str(tmp_path / "missing.jpg")]) == 2
