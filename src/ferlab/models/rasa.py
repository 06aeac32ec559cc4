"""RASA: Region Adaptive Self-Attention for facial emotion recognition (paper 000, Lee et al.).

    face image + 68 landmarks
      -> adaptive patch extractor: one P x P patch centred on each chosen landmark (the 51 non-jaw
         points by default) + the whole face averaged down to P x P as a global patch, appended last
      -> linear patch embedding to D + learnable 1-D position embedding (eq. 2)
      -> L pre-norm transformer layers, k heads, GELU feed-forward (eqs. 3-7)
      -> mean over all tokens (eq. 8) -> linear classifier (eq. 9)

Paper defaults: 256x256 input, P=32, D=64, k=16, L=6. The paper writes every head at the full
width D (W_SA in R^{D x 3D}, W_MSA in R^{kD x D}, scores / sqrt(D)); that is `head_dim=None`
(-> D) here. `head_dim=D // num_heads` gives the usual ViT split (about 6x fewer parameters).
The paper does not mention a final LayerNorm before pooling; ViT [14], which it follows, has one:
`final_norm=True` (default) keeps it.

`patch_mode="grid"` is the paper's "Grid" baseline: ViT patches of the same size cut on a regular
grid (the global patch stays an option there too). Landmarks are given in pixels of the model
input, (B, 68, 2) in dlib's order; the model picks its subset.

Layout of the weights follows timm's VisionTransformer (patch_embed.proj, pos_embed, blocks.N.*,
norm, head), so a timm ViT checkpoint of matching width loads by name (its conv patch embedding
is reshaped to the linear one); position embeddings of a different token count are left out.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from .layers import EncoderBlock, attention_rollout, global_patch, grid_patches, landmark_patches
from .registry import register_model
from .weights import adapt_and_load, read_state_dict, require_loaded

LANDMARK_SETS = {"non_jaw": list(range(17, 68)), "all": list(range(68))}


class RASA(nn.Module):
    def __init__(self, num_classes: int = 8, in_chans: int = 1, img_size: int = 256, patch_size: int = 32,
                 patch_mode: str = "landmarks", landmark_set: str = "non_jaw", global_patch: bool = True,
                 embed_dim: int = 64, depth: int = 6, num_heads: int = 16, head_dim: int | None = None,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 final_norm: bool = True):
        super().__init__()
        if patch_mode not in ("landmarks", "grid"):
            raise ValueError(f"patch_mode must be 'landmarks' or 'grid', not {patch_mode!r}")
        if landmark_set not in LANDMARK_SETS:
            raise ValueError(f"landmark_set must be one of {sorted(LANDMARK_SETS)}, not {landmark_set!r}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.img_size, self.patch_size = int(img_size), int(patch_size)
        self.patch_mode, self.landmark_set, self.use_global = patch_mode, landmark_set, bool(global_patch)
        if patch_mode == "grid":
            if self.img_size % self.patch_size:
                raise ValueError(f"grid patches need img_size ({img_size}) to be a multiple of patch_size ({patch_size})")
            self.num_local = (self.img_size // self.patch_size) ** 2
        else:
            self.register_buffer("landmark_index", torch.tensor(LANDMARK_SETS[landmark_set]), persistent=False)
            self.num_local = len(LANDMARK_SETS[landmark_set])
        self.num_tokens = self.num_local + int(self.use_global)
        self.num_features = self.embed_dim = embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Linear(in_chans * self.patch_size ** 2, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList([
            EncoderBlock(embed_dim, num_heads, head_dim or embed_dim, mlp_ratio, True, drop_rate, attn_drop_rate)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim) if final_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def needs_landmarks(self) -> bool:
        return self.patch_mode == "landmarks"

    # -- patches --------------------------------------------------------------------------------
    def patch_centres(self, x: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:
        """(B, num_local, 2) centres of the local patches in input pixels."""
        if self.patch_mode == "grid":
            g = self.img_size // self.patch_size
            c = (torch.arange(g, device=x.device, dtype=x.dtype) + 0.5) * self.patch_size - 0.5
            yy, xx = torch.meshgrid(c, c, indexing="ij")
            return torch.stack([xx, yy], -1).reshape(1, -1, 2).expand(x.shape[0], -1, -1)
        return landmarks[:, self.landmark_index].to(x.dtype)

    def extract_patches(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """The adaptive patch extractor PE(I) (eq. 1): (B, T, C * P * P)."""
        if self.patch_mode == "landmarks":
            if landmarks is None:
                raise ValueError("rasa (landmark patches) needs the 68 face landmarks of each image")
            if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2) or landmarks.shape[0] != x.shape[0]:
                raise ValueError(f"landmarks must be (batch, 68, 2) in input pixels, got {tuple(landmarks.shape)}")
            local = landmark_patches(x, landmarks[:, self.landmark_index], self.patch_size)
        else:
            if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
                raise ValueError(f"grid patches: expected {self.img_size}x{self.img_size} input, got "
                                 f"{x.shape[-2]}x{x.shape[-1]}")
            local = grid_patches(x, self.patch_size)
        if self.use_global:
            local = torch.cat([local, global_patch(x, self.patch_size)], 1)
        return local

    # -- timm-style model API ---------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, landmarks: torch.Tensor | None = None,
                         return_attention: bool = False):
        t = self.pos_drop(self.patch_embed.proj(self.extract_patches(x, landmarks)) + self.pos_embed)
        attns = []
        for blk in self.blocks:
            if return_attention:
                t, a = blk(t, return_attention=True)
                attns.append(a)
            else:
                t = blk(t)
        t = self.norm(t)
        return (t, attns) if return_attention else t

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean(1))  # patch aggregation: mean over all N+1 tokens (eq. 8)
        return x if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes)
        self._init_weights(self.head)

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, landmarks))

    # -- explain --------------------------------------------------------------------------------
    @torch.no_grad()
    def token_attention(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict:
        """Attention from the pooled output back to the input patches (attention rollout through
        all layers, rows averaged as the mean pooling does). Returns per-token weights (B, T)
        summing to 1, the local patch centres (B, num_local, 2) and the logits."""
        feats, attns = self.forward_features(x, landmarks, return_attention=True)
        weights = attention_rollout(attns).mean(1)
        return {"weights": weights, "centres": self.patch_centres(x, landmarks),
                "logits": self.forward_head(feats), "has_global": self.use_global}

    def explain_map(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict:
        """Attention over the face: each local patch's weight spread over its P x P square
        (overlaps add up), as paper Fig. 3; the global patch's share is returned apart."""
        info = self.token_attention(x, landmarks)
        b, _, h, w = x.shape
        p = self.patch_size
        ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, 1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, 1, w)
        c = info["centres"].float()
        inside = ((xs - c[..., 0, None, None]).abs() <= p / 2) & ((ys - c[..., 1, None, None]).abs() <= p / 2)
        wl = info["weights"][:, :self.num_local].float()
        heat = (inside.float() * wl[:, :, None, None]).sum(1)
        return {"map": heat, "global_weight": info["weights"][:, -1] if self.use_global else None,
                "logits": info["logits"], "weights": info["weights"], "centres": info["centres"]}


def timm_vit_key_map(sd: dict[str, torch.Tensor], model: RASA) -> dict[str, torch.Tensor]:
    """Rename/reshape a timm VisionTransformer state dict onto RASA: the conv patch embedding
    becomes the linear one; cls_token and mismatched position embeddings are dropped."""
    out = {}
    for k, v in sd.items():
        if k == "patch_embed.proj.weight" and v.ndim == 4:
            v = v.reshape(v.shape[0], -1)
        if k == "cls_token" or (k == "pos_embed" and v.shape != model.pos_embed.shape):
            continue
        out[k] = v
    return out


def _build(num_classes=8, in_chans=1, pretrained_file=None, **kwargs) -> RASA:
    model = RASA(num_classes=num_classes, in_chans=in_chans, **kwargs)
    if pretrained_file:
        sd = timm_vit_key_map(read_state_dict(pretrained_file), model)
        head = sd.get("head.weight")
        skip = ("head.",) if head is None or head.shape[0] != num_classes else ()
        report = adapt_and_load(model, sd, skip_prefixes=skip)
        require_loaded(report, "blocks.", pretrained_file, "encoder",
                       "the checkpoint's width, heads or depth differ from this model's")
    return model


@register_model
def rasa(**kwargs) -> RASA:
    """RASA with landmark-centred patches (paper defaults: P=32 at 256x256, D=64, 16 heads, 6 layers)."""
    return _build(**kwargs)


@register_model
def rasa_grid(**kwargs) -> RASA:
    """The paper's "Grid" baseline: the same encoder on regular grid patches of the same size."""
    kwargs.setdefault("patch_mode", "grid")
    return _build(**kwargs)
