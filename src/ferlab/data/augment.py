"""Batch augmentation on tensors (vectorised: one affine warp for the whole batch).

Training images are held as uint8 arrays at model resolution; each batch is augmented here on the
device it trains on, so CPU training spends no time in per-image Python transforms.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .colour import GREY_FROM_RGB

DEFAULT_AUGMENT = {"flip": True, "rotate": 10.0, "scale": (0.9, 1.1), "aspect": 1.0, "translate": 0.08,
                   "brightness": 0.2, "contrast": 0.2, "autocontrast": 0.0, "erasing": 0.25, "grey": 0.0}


def _mirror_68() -> list[int]:
    """Index permutation that relabels dlib's 68 points after a horizontal flip: the point that
    lands where the right eye's outer corner was is the left eye's outer corner, and so on."""
    pairs = [(i, 16 - i) for i in range(8)]                                    # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]                              # eyebrows
    pairs += [(31, 35), (32, 34)]                                              # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]      # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]                # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]                                    # inner lips
    perm = list(range(68))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR_68 = _mirror_68()


def _uniform(n, lo, hi, g, device):
    return torch.rand(n, generator=g, device="cpu").to(device) * (hi - lo) + lo


def _move_points(points: torch.Tensor, theta: torch.Tensor, flip: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Map (N, 68, 2) pixel points of the input through the warp that `theta` samples with
    (theta maps output to input coordinates, so points move by its inverse); on flipped samples
    the points are also relabelled (left eye <-> right eye, ...) so index i keeps its meaning."""
    size = torch.tensor([w, h], dtype=theta.dtype, device=points.device)
    u = (2 * points.to(theta.dtype) + 1) / size - 1                      # normalised, align_corners=False
    a, t = theta[:, :, :2], theta[:, :, 2]
    u_out = torch.linalg.solve(a, (u - t[:, None, :]).transpose(1, 2)).transpose(1, 2)
    out = ((u_out + 1) * size - 1) / 2
    if points.shape[1] == 68:
        mirrored = out[:, MIRROR_68]
        out = torch.where((flip < 0).view(-1, 1, 1), mirrored, out)
    return out.to(points.dtype)


def augment_batch(x: torch.Tensor, cfg: dict | None, g: torch.Generator, points: torch.Tensor | None = None):
    """x: float (N, C, H, W) in [0, 1]. Returns an augmented copy; `g` makes it reproducible.
    With `points` ((N, 68, 2) landmarks in pixels of x) returns (x, points moved with the warp)."""
    cfg = {**DEFAULT_AUGMENT, **(cfg or {})}
    n, dev = x.shape[0], x.device
    if n == 0:
        return x if points is None else (x, points)
    rot = cfg.get("rotate") or 0.0
    s_lo, s_hi = cfg.get("scale") or (1.0, 1.0)
    tr = cfg.get("translate") or 0.0
    asp = float(cfg.get("aspect") or 1.0)
    if rot or s_lo != 1.0 or s_hi != 1.0 or tr or cfg.get("flip") or asp != 1.0:
        ang = _uniform(n, -rot, rot, g, dev) * math.pi / 180
        scale = _uniform(n, s_lo, s_hi, g, dev)
        flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(dev) if cfg.get("flip") \
            else torch.ones(n, device=dev)
        tx, ty = _uniform(n, -tr, tr, g, dev) * 2, _uniform(n, -tr, tr, g, dev) * 2
        # aspect: the face stretched by r vertically against 1/r horizontally (sqrt each way), r
        # log-uniform in [1/aspect, aspect] -- photos resized without keeping their aspect ratio,
        # anamorphic video, a wrongly set webcam; drawn only when set, so other runs keep their stream
        r = torch.exp(_uniform(n, -math.log(asp), math.log(asp), g, dev)).sqrt() if asp != 1.0 \
            else torch.ones(n, device=dev)
        sx, sy = scale / r, scale * r
        c, s = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([torch.stack([c * flip / sx, -s / sy, tx], 1),
                             torch.stack([s * flip / sx, c / sy, ty], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if points is not None:
            points = _move_points(points, theta, flip, x.shape[-2], x.shape[-1])
    b, c = cfg.get("brightness") or 0.0, cfg.get("contrast") or 0.0
    if b or c:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        cf = _uniform(n, 1 - c, 1 + c, g, dev).view(n, 1, 1, 1)
        bf = _uniform(n, 1 - b, 1 + b, g, dev).view(n, 1, 1, 1)
        x = ((x - mean) * cf + mean) * bf
    p_ac = cfg.get("autocontrast") or 0.0
    if p_ac:  # torchvision's RandomAutocontrast: stretch each channel to the full [0, 1] range
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        stretched = torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
        apply = (torch.rand(n, generator=g) < p_ac).to(dev).view(n, 1, 1, 1)
        x = torch.where(apply, stretched, x)
    p_grey = cfg.get("grey") or 0.0
    if p_grey and x.shape[1] == 3:  # a colour model must read gray photos too: luminance in all three channels
        lum = (x * x.new_tensor(GREY_FROM_RGB).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
        apply = (torch.rand(n, generator=g) < p_grey).to(dev).view(n, 1, 1, 1)
        x = torch.where(apply, lum, x)
    p = cfg.get("erasing") or 0.0
    if p:
        h, w = x.shape[-2:]
        area = _uniform(n, 0.02, 0.2, g, dev)
        aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g, dev))
        eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
        ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
        y0 = _uniform(n, 0, 1, g, dev) * (h - eh)
        x0 = _uniform(n, 0, 1, g, dev) * (w - ew)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        box = (ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1)) & \
              (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1))
        apply = (torch.rand(n, generator=g) < p).to(dev).view(n, 1, 1)
        noise = torch.rand(x.shape, generator=g).to(dev)
        x = torch.where((box & apply).unsqueeze(1), noise, x)
    x = x.clamp(0, 1)
    return x if points is None else (x, points)
