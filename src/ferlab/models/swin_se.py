"""Swin-SE (paper 002, Vats & Chadha): a Swin-T backbone with a squeeze-and-excitation block on the
pooled features before the classifier; trained with SAM (ferlab.optim.sam) on hybrid datasets.

    face (224x224x3 in the paper) -> Swin-T (timm SwinTransformer: patch 4, window 7, C=96,
         depths 2-2-6-2, heads 3-6-12-24) -> LayerNorm -> global average pool (768)
         -> SE, excitation only (paper Sec. 3.5): Linear 768->48, ReLU, Linear 48->768, Sigmoid,
            multiplied into the pooled vector -> dropout -> Linear 768->classes

`swin_t` is the same model without the SE block (the paper's Table 2 baseline).

Smaller inputs for CPU recipes: `img_size`, `patch_size` and `window_size` are checked together: the
image must divide into the 4 stages (img_size divisible by patch_size * 8) and each stage's grid must
be a multiple of the window or fit inside one window (then that stage attends globally, unshifted,
as in timm). E.g. 224/4/7 (paper), 96/4/6, 64/4/4, 48/2/6.

Weights: timm's `swin_tiny_patch4_window7_224` checkpoint keys (also the original Microsoft
layout, whose patch merging sits at the end of each stage); timm's own converter moves those keys,
interpolates the relative position tables to another window and resamples the patch embedding to
another patch size; colour patch embeddings are averaged for gray input. The ImageNet classifier is
left out.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

from .layers import SqueezeExcitation
from .registry import register_model
from .weights import WeightsError, adapt_and_load, build_with_weights, read_state_dict, require_loaded

NUM_STAGES = 4


def check_swin_sizes(img_size: int, patch_size: int, window_size: int, num_stages: int = NUM_STAGES) -> list[int]:
    """The token grid of every stage; a clear error when image, patch and window sizes don't fit."""
    step = patch_size * 2 ** (num_stages - 1)
    if img_size % step:
        ok = [s for s in range(step, 4 * step + 1, step)]
        raise ValueError(f"Swin: img_size {img_size} must be a multiple of patch_size x 8 = {step} "
                         f"(e.g. {', '.join(map(str, ok))})")
    grids = [img_size // patch_size // 2 ** i for i in range(num_stages)]
    for i, g in enumerate(grids):
        if g > window_size and g % window_size:
            fits = [w for w in range(2, grids[0] + 1) if all(r <= w or r % w == 0 for r in grids)]
            raise ValueError(f"Swin: stage {i + 1} has a {g}x{g} token grid, not a multiple of window_size "
                             f"{window_size}; windows that fit img_size {img_size} / patch {patch_size}: {fits}")
    return grids


class SwinSE(nn.Module):
    def __init__(self, num_classes: int = 7, in_chans: int = 3, img_size: int = 224, patch_size: int = 4,
                 window_size: int = 7, embed_dim: int = 96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                 se: bool = True, se_reduction: int = 16, drop_rate: float = 0.0, drop_path_rate: float = 0.1):
        super().__init__()
        check_swin_sizes(img_size, patch_size, window_size, len(depths))
        self.img_size = int(img_size)
        self.swin = SwinTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0,
                                    embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads),
                                    window_size=window_size, drop_path_rate=drop_path_rate)
        self.num_features = self.swin.num_features
        self.se = SqueezeExcitation(self.num_features, se_reduction) if se else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)

    # -- timm-style model API ---------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, C) feature map of the last stage, after the final LayerNorm (timm's NHWC)."""
        return self.swin.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        v = self.se(self.swin.forward_head(x, pre_logits=True))
        return v if pre_logits else self.classifier(self.drop(v))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # Grad-CAM on the last stage; its output is channels-last (B, h, w, C)
    gradcam_channels_last = True

    def gradcam_layer(self) -> nn.Module:
        return self.swin.layers[-1]


def load_swin_weights(model: SwinSE, path) -> dict:
    """Load a ferlab Swin-SE checkpoint, or a timm / Microsoft Swin checkpoint into the backbone."""
    sd = read_state_dict(path)
    if any(k.startswith("swin.") for k in sd):
        report = adapt_and_load(model, sd)
    else:
        try:
            sd = checkpoint_filter_fn(sd, model.swin)
        except Exception as e:  # noqa: BLE001 - any converter failure means the file is not a Swin checkpoint
            raise WeightsError(f"{path}: cannot convert as a Swin checkpoint ({type(e).__name__}: {e})") from None
        report = adapt_and_load(model, sd, lambda k: None if k.startswith("head.") else "swin." + k)
    require_loaded(report, "swin.", path, "Swin backbone")
    return report


@register_model
def swin_se(**kwargs) -> SwinSE:
    """Swin-T + squeeze-and-excitation on the pooled features (paper 002's model)."""
    return build_with_weights(SwinSE, load_swin_weights, **{"se": True, **kwargs})


@register_model
def swin_t(**kwargs) -> SwinSE:
    """Swin-T with a linear classifier (paper 002's baseline, no SE)."""
    return build_with_weights(SwinSE, load_swin_weights, **{**kwargs, "se": False})
