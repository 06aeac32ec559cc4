"""PCDA: product-cross dual attention (paper 003, Nie et al.), trained with the NeAA loss
(ferlab.losses.neaa).

    face -> image backbone IR-50 (3 stages)              f_img (B, 256, h, w)   14x14 at 112 px
         -> landmark backbone MobileFaceNet (frozen)     f_lm  (B, 128, 14, 14) its conv_4 map
    dot-product attention (eq. 1): heatmap H from f_lm, f_fusion = H * f_img, H by one of paper
        Table 4's methods: max (Max+Repeat, the default), sum (Sum+Repeat), abs_sum
        (Abs+Sum+Repeat), conv (a 1x1 conv 128 -> 256)
    cross-feature attention (eqs. 2-5): both maps -> tokens by a 1x1 projection to c_t, each with a
        class token and a position embedding; per block the landmark tokens give the queries and
        the fusion tokens the keys and values,
            t' = t_fusion + CrossAttention(Q_lm, K_fusion, V_fusion),  t_out = t' + MLP(Norm(t'))
        (the landmark tokens are the same input to every block; pre-norm as in ViT); 2 blocks,
        MLP ratio 4, dropout 0.5 -> the fusion class token (LayerNorm) -> FC.

Ablation switches (paper Table 1): `dot_attention=False` uses f_img as the fusion map;
`cross_attention=False` takes the queries from the fusion tokens (plain self-attention, same
parameters).

Choices the paper leaves open, made here: pre-norm blocks with LayerNorm on both token streams;
learnable position embeddings; the landmark map is resized (adaptive average pooling) to the
image map's grid when they differ (CPU recipes use a smaller image input); the landmark branch sees
the image at its own 112x112 input, gray repeated to 3 channels. `landmark_input="unit"` maps the
model's (x - 0.5) / 0.5 input back to [0, 1] for landmark checkpoints trained on [0, 1] images.

`image_backbone="resnet18"` puts the first 3 stages of ferlab's ResNet-18 where IR-50 stood (the same
256-channel map at 1/8 of the input) so that a ferlab-trained ResNet-18 can start it when no
face-recognition IR-50 is at hand (`train.init_from`); `landmark_gray=True` shows a gray-trained
landmark net the colour face made gray.

Weights: `pretrained_file` = IR-50 (ir50.pth or POSTER V2 layout) or a whole ferlab PCDA file;
`landmark_file` = the landmark net (mobilefacenet_model_best.pth.tar layout, or ferlab's own from
`ferlab landmarks train`). A frozen landmark net that was never trained is only useful for tests:
the recipes name a landmark file.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_

from ..data.colour import GREY_FROM_RGB
from .ir50 import IR50, ir50_key_map
from .mobilefacenet import MobileFaceNetLandmarks, load_mobilefacenet_weights
from .registry import register_model
from .weights import adapt_and_load, read_state_dict, require_loaded

HEATMAPS = ("max", "sum", "abs_sum", "conv")
IMAGE_BACKBONES = ("ir50", "resnet18")


@functools.lru_cache(maxsize=None)
def adaptive_pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): row i averages the inputs PyTorch's adaptive average pooling gives output i
    (that pooling applied to the identity; made once per size pair)."""
    return F.adaptive_avg_pool1d(torch.eye(n_in)[None], n_out)[0].T.contiguous()


class ResNetTrunk(nn.Module):
    """The first `num_stages` stages of ferlab's ResNet-18 (timm's, small-input stem: no max-pool),
    the stand-in for IR-50 when no face-recognition IR-50 is at hand: 3 stages give a 256-channel
    map at 1/8 of the input, the width and grid IR-50's 3 stages give. timm's `features_only` cut
    keeps ferlab's `resnet18` key names (`net.conv1`, `net.layer1` ...), so a trained ferlab
    ResNet-18 starts it (`train.init_from`)."""

    def __init__(self, in_chans: int = 3, num_stages: int = 3):
        super().__init__()
        if not 1 <= num_stages <= 4:
            raise ValueError(f"ResNet-18 has 4 stages; num_stages={num_stages}")
        import timm
        self.net = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(num_stages,),
                                     in_chans=in_chans)
        self.net.maxpool = nn.Identity()
        self.num_stages = num_stages
        self.num_features = self.net.feature_info.channels()[-1]
        self.reduction = 2 ** num_stages  # the stem's stride 2, then each stage after the first

    @property
    def blocks(self) -> nn.ModuleList:
        return nn.ModuleList(getattr(self.net, f"layer{i}") for i in range(1, self.num_stages + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


class LandmarkHeatmap(nn.Module):
    """Paper Table 4: the dot-product attention map multiplied into f_img, from f_lm."""

    def __init__(self, method: str = "max", landmark_channels: int = 128, image_channels: int = 256):
        super().__init__()
        if method not in HEATMAPS:
            raise ValueError(f"heatmap method {method!r}; one of {', '.join(HEATMAPS)}")
        self.method = method
        self.conv = nn.Conv2d(landmark_channels, image_channels, 1) if method == "conv" else None

    def forward(self, f_lm: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) for the repeat methods (broadcast = repeated over the image channels),
        (B, C_img, h, w) for conv."""
        if self.method == "max":
            return f_lm.amax(1, keepdim=True)
        if self.method == "sum":
            return f_lm.sum(1, keepdim=True)
        if self.method == "abs_sum":
            return f_lm.abs().sum(1, keepdim=True)
        return self.conv(f_lm)


class CrossFeatureBlock(nn.Module):
    """One transformer block of eq. 5: queries from the landmark tokens (or, with cross=False, from
    the fusion tokens themselves), keys and values from the fusion tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 attn_drop: float = 0.0, cross: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not a multiple of num_heads {num_heads}")
        self.num_heads, self.head_dim, self.cross = num_heads, dim // num_heads, cross
        self.norm_landmark = nn.LayerNorm(dim) if cross else None
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, t_fusion: torch.Tensor, t_lm: torch.Tensor, return_attention: bool = False):
        b, n, d = t_fusion.shape
        f = self.norm1(t_fusion)
        q_src = self.norm_landmark(t_lm) if self.cross else f
        q = self.q(q_src).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(f).view(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(-1)           # eq. 4
        out = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, n, d)
        x = t_fusion + self.proj_drop(self.proj(out))
        x = x + self.mlp(self.norm2(x))
        return (x, attn) if return_attention else x


class PCDA(nn.Module):
    has_aux_outputs = True
    gradcam_channels_last = False
    backbone_prefixes = ("image_backbone.", "landmark_net.")  # what ferlab.engine.head_training keeps frozen

    def __init__(self, num_classes: int = 7, in_chans: int = 3, img_size: int = 112, embed_dim: int = 768,
                 depth: int = 2, num_heads: int = 12, mlp_ratio: float = 4.0, drop_rate: float = 0.5,
                 attn_drop_rate: float = 0.0, heatmap: str = "max", dot_attention: bool = True,
                 cross_attention: bool = True, image_stages: int = 3, landmark_stage: str = "conv_4",
                 freeze_landmarks: bool = True, landmark_input: str = "pm1", freeze_backbone: bool = False,
                 image_backbone: str = "ir50", landmark_gray: bool = False):
        super().__init__()
        if landmark_input not in ("pm1", "unit"):
            raise ValueError("landmark_input is 'pm1' ((x - 0.5) / 0.5, ferlab's) or 'unit' ([0, 1])")
        if image_backbone not in IMAGE_BACKBONES:
            raise ValueError(f"image_backbone {image_backbone!r}; one of {', '.join(IMAGE_BACKBONES)}")
        self.img_size, self.num_classes, self.embed_dim = int(img_size), num_classes, embed_dim
        if image_backbone == "ir50":
            self.image_backbone = IR50(in_chans, num_stages=image_stages)
        else:
            self.image_backbone = ResNetTrunk(in_chans, num_stages=image_stages)
            self.trunk_from = {"resnet18": "image_backbone.net."}  # train.init_from: a ferlab ResNet-18
        # a landmark net trained on gray faces reads a colour face made gray (OpenCV's weights)
        self.landmark_gray = bool(landmark_gray) and in_chans == 3
        if self.landmark_gray:
            self.register_buffer("grey_from_rgb", torch.tensor(GREY_FROM_RGB).view(1, 3, 1, 1), persistent=False)
        self.landmark_net = MobileFaceNetLandmarks(in_chans=3)
        self.landmark_stage, self.landmark_input = landmark_stage, landmark_input
        self.freeze_landmarks = bool(freeze_landmarks)
        if self.freeze_landmarks:  # frozen: no gradients, and its BatchNorm always in eval mode
            self.landmark_net.requires_grad_(False).eval()
        c_img = self.image_backbone.num_features
        if landmark_stage not in MobileFaceNetLandmarks.STAGE_CHANNELS:
            raise ValueError(f"landmark_stage {landmark_stage!r}; one of {', '.join(MobileFaceNetLandmarks.STAGE_CHANNELS)}")
        c_lm = MobileFaceNetLandmarks.STAGE_CHANNELS[landmark_stage]
        grid = img_size // self.image_backbone.reduction
        if grid < 1 or img_size % self.image_backbone.reduction:
            raise ValueError(f"img_size {img_size} must be a multiple of {self.image_backbone.reduction} "
                             f"for {image_stages} {image_backbone} stages")
        self.grid = grid
        self.dot_attention = bool(dot_attention)
        self.heatmap = LandmarkHeatmap(heatmap, c_lm, c_img) if dot_attention else None
        self.embed_image = nn.Conv2d(c_img, embed_dim, 1)
        self.embed_landmark = nn.Conv2d(c_lm, embed_dim, 1)
        n = grid * grid + 1
        self.cls_fusion = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_landmark = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_fusion = nn.Parameter(torch.zeros(1, n, embed_dim))
        self.pos_landmark = nn.Parameter(torch.zeros(1, n, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList([CrossFeatureBlock(embed_dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate,
                                                       cross_attention) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        for p in (self.cls_fusion, self.cls_landmark, self.pos_fusion, self.pos_landmark):
            trunc_normal_(p, std=0.02)
        for m in [*self.blocks.modules(), self.classifier]:
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.freeze_backbone(freeze_backbone)

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Freeze the IR-50 image backbone (pretrained weights; the two-stage schedule, or the
        frozen-backbone ablations of benchmarks/ablations.py): only the attention module trains."""
        self.backbone_frozen = bool(frozen)
        self.image_backbone.requires_grad_(not frozen)
        if frozen:
            self.image_backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_landmarks:  # a frozen landmark net keeps its BatchNorm statistics
            self.landmark_net.eval()
        if getattr(self, "backbone_frozen", False):  # so does a frozen image backbone
            self.image_backbone.eval()
        return self

    # -- timm-style model API ---------------------------------------------------------------------
    def landmark_net_input(self, x: torch.Tensor) -> torch.Tensor:
        """The model's (x - 0.5) / 0.5 input as the landmark net expects it (made gray first with
        `landmark_gray`: a per-channel-equal normalisation commutes with the gray weights)."""
        if self.landmark_gray:
            x = (x * self.grey_from_rgb).sum(1, keepdim=True)
        return x * 0.5 + 0.5 if self.landmark_input == "unit" else x

    def landmark_features(self, x: torch.Tensor) -> torch.Tensor:
        """f_lm on the image grid: (B, C_lm, grid, grid)."""
        xl = self.landmark_net_input(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_landmarks):
            f = self.landmark_net.forward_features(xl, self.landmark_stage)
        h, w = int(f.shape[-2]), int(f.shape[-1])  # fixed by the landmark net's input (14 x 14)
        if h != self.grid or w != self.grid:
            # adaptive average pooling written as two fixed averaging matrices: the same numbers, and
            # ONNX can export it (its AdaptiveAvgPool needs sizes that divide)
            rows, cols = adaptive_pool_matrix(h, self.grid).to(f), adaptive_pool_matrix(w, self.grid).to(f)
            f = torch.einsum("ih,bchw,jw->bcij", rows, f, cols)
        return f

    def dot_product_attention(self, f_img: torch.Tensor, f_lm: torch.Tensor):
        """Eq. 1: (f_fusion, heatmap or None)."""
        if not self.dot_attention:
            return f_img, None
        h = self.heatmap(f_lm)
        return h * f_img, h

    def backbone_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the two backbones compute from a face batch: (f_img, f_lm), both on the image grid."""
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            raise ValueError(f"PCDA built for {self.img_size}x{self.img_size} input, got {tuple(x.shape[-2:])}")
        return self.image_backbone(x), self.landmark_features(x)

    def tokens(self, x: torch.Tensor):
        """Fusion and landmark tokens with their class tokens and positions (eq. 2), and the heatmap."""
        return self.tokens_from_features(*self.backbone_features(x))

    def tokens_from_features(self, f_img: torch.Tensor, f_lm: torch.Tensor):
        f_fusion, heat = self.dot_product_attention(f_img, f_lm)
        b = f_img.shape[0]
        t_f = torch.cat([self.cls_fusion.expand(b, -1, -1), self.embed_image(f_fusion).flatten(2).transpose(1, 2)], 1)
        t_l = torch.cat([self.cls_landmark.expand(b, -1, -1), self.embed_landmark(f_lm).flatten(2).transpose(1, 2)], 1)
        return self.pos_drop(t_f + self.pos_fusion), self.pos_drop(t_l + self.pos_landmark), heat

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_from_backbone(*self.backbone_features(x))

    def features_from_backbone(self, f_img: torch.Tensor, f_lm: torch.Tensor) -> torch.Tensor:
        t_f, t_l, _ = self.tokens_from_features(f_img, f_lm)
        for blk in self.blocks:
            t_f = blk(t_f, t_l)
        return self.norm(t_f)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls = x[:, 0]
        return cls if pre_logits else self.classifier(cls)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        return self.forward_from_features(*self.backbone_features(x), return_aux=return_aux)

    def forward_from_features(self, f_img: torch.Tensor, f_lm: torch.Tensor, return_aux: bool = False):
        """The attention module and classifier on backbone_features' output (for training on cached
        features of frozen backbones; ferlab.engine.head_training)."""
        cls = self.forward_head(self.features_from_backbone(f_img, f_lm), pre_logits=True)
        logits = self.classifier(cls)
        return {"logits": logits, "features": cls} if return_aux else logits

    def gradcam_layer(self) -> nn.Module:
        return self.image_backbone.blocks[-1]

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """For `ferlab explain` (paper Figs. 2 and 6), each (B, H, W) upsampled to the input, in [0, 1]:
        'heatmap' (the dot-product attention; mean over channels for conv) and 'class_attention'
        (how much the class token's query draws on each face position, heads averaged, last block);
        and 'landmarks', the landmark net's 68 points in input pixels (B, 68, 2)."""
        t_f, t_l, heat = self.tokens(x)
        attn = None
        for blk in self.blocks:
            t_f, attn = blk(t_f, t_l, return_attention=True)
        g = self.grid
        cls_attn = attn[:, :, 0, 1:].mean(1).view(-1, 1, g, g)
        if heat is None:
            heat = self.landmark_features(x).amax(1, keepdim=True)
        maps = {"heatmap": heat.float().mean(1, keepdim=True), "class_attention": cls_attn.float()}
        out = {}
        for k, m in maps.items():
            m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            lo, hi = m.flatten(1).min(1).values[:, None, None], m.flatten(1).max(1).values[:, None, None]
            out[k] = (m - lo) / (hi - lo).clamp_min(1e-12)
        out["landmarks"] = self.landmark_net(self.landmark_net_input(x)) * x.shape[-1] - 0.5
        return out


def load_pcda_weights(model: PCDA, path) -> dict:
    """A ferlab PCDA file (all keys), or an IR-50 face-recognition checkpoint for the image backbone."""
    sd = read_state_dict(path)
    if any(k.startswith("image_backbone.") for k in sd):
        report = adapt_and_load(model, sd)
    else:
        report = adapt_and_load(model, sd, lambda k: ir50_key_map(k, "image_backbone."))
    require_loaded(report, "image_backbone.", path, "IR-50", "expected ir50.pth, POSTER V2 or ferlab PCDA keys")
    return report


@register_model
def pcda(pretrained_file=None, landmark_file=None, **kwargs) -> PCDA:
    """PCDA with IR-50 + frozen MobileFaceNet landmarks, Max+Repeat heatmap, 2 cross blocks (paper)."""
    model = PCDA(**kwargs)
    if landmark_file:
        from pathlib import Path

        from .weights import WeightsError
        if not Path(landmark_file).is_file():
            raise WeightsError(f"{landmark_file}: no landmark-net weights there; train them once with "
                               "`ferlab landmarks train configs/landmarks_ferplus.yaml` (or give "
                               "mobilefacenet_model_best.pth.tar)")
        load_mobilefacenet_weights(model.landmark_net, landmark_file)
    if pretrained_file:
        load_pcda_weights(model, pretrained_file)
    return model
