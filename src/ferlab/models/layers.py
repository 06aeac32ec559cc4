"""Building blocks shared by ferlab's models: image patches (around landmarks, on a grid, global),
a pre-norm transformer encoder block whose attention can be read out, attention rollout, and the
excitation half of squeeze-and-excitation for feature vectors.

Every function here works on whole batches with tensor ops (no Python loop over patches), so the
same code runs on CPU and GPU and exports to ONNX.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp


def landmark_patches(x: torch.Tensor, centres: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Square patches of side `patch_size` pixels centred on points.

    x: (B, C, H, W); centres: (B, N, 2) as (x, y) in pixels of x (pixel centres at integers).
    Returns (B, N, C * P * P). Patches reaching past the border are zero-padded there, never
    dropped or shifted, so patch n always belongs to point n. Sub-pixel centres are sampled
    bilinearly (one grid_sample call for the whole batch).
    """
    b, c, h, w = x.shape
    n, p = centres.shape[1], int(patch_size)
    offs = torch.arange(p, device=x.device, dtype=x.dtype) - (p - 1) / 2.0
    cx = centres[..., 0].to(x.dtype)[:, :, None, None] + offs.view(1, 1, 1, p)   # (B, N, 1, P)
    cy = centres[..., 1].to(x.dtype)[:, :, None, None] + offs.view(1, 1, p, 1)   # (B, N, P, 1)
    gx = ((2 * cx + 1) / w - 1).expand(b, n, p, p)
    gy = ((2 * cy + 1) / h - 1).expand(b, n, p, p)
    grid = torch.stack([gx, gy], dim=-1).reshape(b, n * p, p, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, N*P, P)
    return out.reshape(b, c, n, p, p).permute(0, 2, 1, 3, 4).reshape(b, n, c * p * p)


def grid_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """ViT-style non-overlapping patches, row by row: (B, (H/P)*(W/P), C * P * P)."""
    b, c, h, w = x.shape
    p = int(patch_size)
    if h % p or w % p:
        raise ValueError(f"grid patches: image {h}x{w} is not a multiple of the patch size {p}")
    t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b, (h // p) * (w // p), c * p * p)


def global_patch(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The whole image averaged down to one P x P patch: (B, 1, C * P * P)."""
    b, c = x.shape[:2]
    return F.adaptive_avg_pool2d(x, int(patch_size)).reshape(b, 1, -1)


class SqueezeExcitation(nn.Module):
    """Channel re-weighting of a feature vector (Hu et al. 2018, the excitation part only, as paper
    002 uses it on a transformer's pooled output): x * sigmoid(W2 relu(W1 x)), W1: C -> C/r."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SelfAttention(nn.Module):
    explicit_below = 128
    """Multi-head self-attention with an explicit head width.

    `head_dim=None` gives the usual ViT split (dim / num_heads per head). Paper 000 (RASA) writes
    each head with the full width D (W_SA in R^{D x 3D} per head, W_MSA in R^{kD x D}, scores
    scaled by sqrt(D)): pass head_dim=dim for that.
    """

    def __init__(self, dim: int, num_heads: int = 8, head_dim: int | None = None, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if return_attention or (t <= self.explicit_below and x.device.type == "cpu"):
            # short sequences on CPU: explicit softmax(QK^T)V is faster than the fused kernel
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
            out = F.dropout(attn, self.attn_drop, self.training) @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, t, -1)))
        return (out, attn) if return_attention else out


class EncoderBlock(nn.Module):
    """Pre-norm transformer layer: x + MSA(LN(x)), then x + FF(LN(x)) with a GELU MLP."""

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, head_dim, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            a, attn = self.attn(self.norm1(x), return_attention=True)
            x = x + a
            return x + self.mlp(self.norm2(x)), attn
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def attention_rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): heads averaged, the residual path added as
    identity, rows renormalised, layers multiplied. Returns (B, T, T): row i says how much output
    token i draws on each input token."""
    roll = None
    for a in attentions:
        a = a.float().mean(1)
        eye = torch.eye(a.shape[-1], device=a.device).expand_as(a)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(-1, keepdim=True)
        roll = a if roll is None else a @ roll
    return roll


class TimmClassifier(nn.Module):
    """A timm network (`self.net`) behind timm's uniform model API: forward_features, forward_head,
    get_classifier, reset_classifier; subclasses build `net` and name their Grad-CAM layer."""
    net: nn.Module

    def _wrap(self, net: nn.Module, num_classes: int) -> None:
        self.net = net
        self.num_classes = num_classes
        self.num_features = net.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.net.forward_head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.net.get_classifier()

    def reset_classifier(self, num_classes: int) -> None:
        self.net.reset_classifier(num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
