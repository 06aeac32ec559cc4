"""Aspect-ratio jitter (augment.aspect): faces stretched taller or wider, landmarks moved with them,
and runs that do not ask for it keep their random stream."""
import torch

from ferlab.data.augment import augment_batch

STILL = {"flip": False, "rotate": 0, "scale": [1, 1], "translate": 0, "brightness": 0, "contrast": 0, "erasing": 0}


def test_aspect_stretches_both_ways_within_its_range():
    x = torch.zeros(200, 1, 64, 64)
    x[:, :, 22:42, 22:42] = 1  # a 20x20 square at the centre
    y = augment_batch(x, {**STILL, "aspect": 1.35}, torch.Generator().manual_seed(0))
    h = (y[:, 0].amax(2) > 0.5).sum(1).float()
    w = (y[:, 0].amax(1) > 0.5).sum(1).float()
    ratio = h / w
    assert ratio.max() > 1.2 and ratio.min() < 1 / 1.2  # taller and wider faces both occur
    assert ratio.max() < 1.35 * 1.12 and ratio.min() > 1 / (1.35 * 1.12)  # within the range (+ a pixel each side)
    assert ((h * w) / 400).sub(1).abs().max() < 0.15  # the area is kept: a stretch, not a zoom


def test_aspect_moves_landmarks_with_the_image():
    h = 64
    pts = torch.rand(16, 68, 2, generator=torch.Generator().manual_seed(0)) * 36 + 14
    ys, xs = torch.arange(h).view(1, h, 1).float(), torch.arange(h).view(1, 1, h).float()
    c = pts[:, 30]
    x = torch.exp(-((xs - c[:, 0, None, None]) ** 2 + (ys - c[:, 1, None, None]) ** 2) / 3).unsqueeze(1)
    aug = {**STILL, "rotate": 20, "aspect": 1.4}
    xa, pa = augment_batch(x, aug, torch.Generator().manual_seed(3), pts)
    flat = xa[:, 0].flatten(1).argmax(1)
    peak = torch.stack([flat % h, flat // h], 1).float()
    assert ((pa[:, 30] - peak).norm(dim=1) < 1.0).all()


def test_no_aspect_keeps_the_earlier_stream():
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    aug = {"rotate": 10, "scale": [0.9, 1.1], "translate": 0.08}
    a = augment_batch(x, aug, torch.Generator().manual_seed(5))
    b = augment_batch(x, {**aug, "aspect": 1.0}, torch.Generator().manual_seed(5))
    c = augment_batch(x, {**aug, "aspect": 1.3}, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
