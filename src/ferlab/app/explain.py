"""Where a model looks, drawn over the face as a PNG (`ferlab explain`).

- Models with an ``explain_map`` method give their own map in the form their paper uses
  (RASA: attention from the pooled output back to the landmark patches, paper 000 Fig. 3).
- Models with ``head_maps`` (DAN) show one map per attention head (paper 001 Fig. 1), plus Grad-CAM.
- Models with ``attention_maps`` (PCDA) show the landmark heatmap with the landmark net's 68 points
  (paper 003 Fig. 2), the class token's cross attention over the face, and Grad-CAM (Fig. 6).
- Every other model gets Grad-CAM (Selvaraju et al. 2017) on its ``gradcam_layer()``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models import model_args


def gradcam(model, x: torch.Tensor, *args, target: torch.Tensor | None = None, layer=None) -> dict:
    """Grad-CAM of the predicted (or `target`) class: (B, H, W) maps in [0, 1]."""
    layer = layer or model.gradcam_layer()
    store = {}
    h1 = layer.register_forward_hook(lambda m, i, o: store.__setitem__("act", o))
    h2 = layer.register_full_backward_hook(lambda m, gi, go: store.__setitem__("grad", go[0]))
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logits = model(x, *args)
            cls = logits.argmax(1) if target is None else target
            model.zero_grad(set_to_none=True)
            logits.gather(1, cls.view(-1, 1)).sum().backward()
    finally:
        h1.remove()
        h2.remove()
    if getattr(model, "gradcam_channels_last", False):  # (B, h, w, C) stages, e.g. timm's Swin
        store = {k: v.permute(0, 3, 1, 2) for k, v in store.items()}
    w = store["grad"].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((w * store["act"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return {"map": cam.detach(), "logits": logits.detach(), "method": "Grad-CAM"}


def _unit(m: torch.Tensor) -> torch.Tensor:
    m = m.float()
    lo = m.flatten(1).min(1).values.view(-1, 1, 1)
    hi = m.flatten(1).max(1).values.view(-1, 1, 1)
    return ((m - lo) / (hi - lo).clamp_min(1e-12)).cpu()


def explain_batch(model, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> dict:
    """Maps in [0, 1] over each image: ``panels`` is a list of (title, (B, H, W) maps); also the
    logits, the method's name and extras (RASA: patch weights and centres)."""
    model.eval()
    args = model_args(model, x, landmarks)[1:]
    if hasattr(model, "explain_map"):
        with torch.no_grad():
            out = model.explain_map(x, *args)
        out["method"] = "attention rollout from the pooled output to the patches"
        out["panels"] = [("attention: pooled output\n-> patches (rollout)", _unit(out["map"]))]
    elif hasattr(model, "attention_maps"):
        out = gradcam(model, x, *args)
        maps = model.attention_maps(x)
        out["panels"] = [("landmark heatmap (dot-product\nattention) + landmark net points", maps["heatmap"].cpu()),
                         ("class token -> face\n(cross attention, last block)", maps["class_attention"].cpu()),
                         ("Grad-CAM (image backbone)", _unit(out["map"]))]
        out["centres"] = maps["landmarks"]
        out["method"] = "landmark heatmap, cross attention, Grad-CAM"
    elif hasattr(model, "gradcam_layer"):
        out = gradcam(model, x, *args)
        out["panels"] = [("Grad-CAM", _unit(out["map"]))]
        if hasattr(model, "head_maps"):
            maps = model.head_maps(x)
            out["panels"] = [(f"head {i + 1}", maps[:, i].cpu()) for i in range(maps.shape[1])] + out["panels"]
            out["method"] = "cross attention heads + Grad-CAM"
    else:
        raise ValueError(f"{type(model).__name__} has neither explain_map nor gradcam_layer")
    return out


def save_figure(fig, path) -> Path:
    """Write a matplotlib figure as a PNG (folders created) and close it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(crops: list[np.ndarray], panels, titles: list[str], path, points=None, point_weights=None) -> Path:
    """One row per face: the aligned crop, then each panel's map over it (patch centres on the
    first panel, if any). `panels`: list of (name, (B, H, W) maps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, cols = len(crops), 1 + len(panels)
    fig, axes = plt.subplots(n, cols, figsize=(3 * cols, 3.2 * n), squeeze=False)
    for i, crop in enumerate(crops):
        gray = crop.ndim == 2 or crop.shape[-1] == 1
        img = crop.squeeze() if gray else crop
        axes[i, 0].imshow(img, cmap="gray" if gray else None)
        axes[i, 0].set_title(titles[i], fontsize=8)
        for j, (name, maps) in enumerate(panels, 1):
            axes[i, j].imshow(img, cmap="gray" if gray else None)
            axes[i, j].imshow(np.asarray(maps[i]), cmap="jet", alpha=0.45)
            axes[i, j].set_title(name, fontsize=9)
        if points is not None:
            p = np.asarray(points[i])
            # weighted (RASA's patch weights): size by weight; plain landmarks (PCDA's net): small dots
            size = 10
            if point_weights is not None:
                w = np.asarray(point_weights[i])
                size = 8 + 120 * w / max(w.max(), 1e-12)
            axes[i, 1].scatter(p[:, 0], p[:, 1], s=size, c="white", edgecolors="black", linewidths=0.4)
            axes[i, 1].set_xlim(-0.5, img.shape[1] - 0.5)   # points past the crop's edge do not shrink it
            axes[i, 1].set_ylim(img.shape[0] - 0.5, -0.5)
        for ax in axes[i]:
            ax.axis("off")
    return save_figure(fig, path)


def explain_faces(analyzer, rgb: np.ndarray, out_path, max_faces: int = 4, is_crop: bool = False) -> list[dict]:
    """Detect (or take `rgb` as one face crop), explain each face, write one PNG. Returns records."""
    if is_crop:
        batch, pts = analyzer.prepare_crops([rgb])
        records = [{"box": None}]
    else:
        batch, pts, faces = analyzer.prepare_faces(rgb, max_faces)
        records = [{"box": f["box"], "score": f["score"]} for f in faces]
    if not records:
        return []
    out = explain_batch(analyzer.model, *analyzer.model_inputs(batch, pts))
    probs = torch.softmax(out["logits"].float() / analyzer.temperature, 1).cpu().numpy()
    titles, centres, weights = [], None, None
    if "centres" in out:
        centres = out["centres"].cpu().numpy()
        if "weights" in out:
            weights = out["weights"][:, :centres.shape[1]].cpu().numpy()
    for i, r in enumerate(records):
        top = int(probs[i].argmax())
        r.update({"label": analyzer.labels[top], "confidence": float(probs[i, top])})
        t = f"{r['label']} {r['confidence']:.0%}"
        if out.get("global_weight") is not None:
            t += f"\nglobal patch {float(out['global_weight'][i]):.0%} of attention"
            r["global_patch_weight"] = float(out["global_weight"][i])
        titles.append(t)
        if weights is not None:
            r["patch_weights"] = [round(float(v), 5) for v in out["weights"][i]]
    render([c.transpose(1, 2, 0) for c in batch], out["panels"], titles, out_path, centres, weights)
    return records


@torch.no_grad()
def feature_embedding(model, x: torch.Tensor, *args) -> torch.Tensor:
    """The features the classifier sees, (B, D): the model's ``embed`` when it has one, else the
    input of its final linear layer (timm's ``get_classifier()``, which every ferlab model has)."""
    if hasattr(model, "embed") and not args:
        return model.embed(x)
    layer = model.get_classifier()
    store = {}
    h = layer.register_forward_pre_hook(lambda m, inp: store.__setitem__("f", inp[0]))
    try:
        model(x, *args)
    finally:
        h.remove()
    return store["f"].flatten(1)


def tsne_figure(features: np.ndarray, labels: np.ndarray, names: list[str], path, title: str = "", seed: int = 0) -> Path:
    """2-D t-SNE (van der Maaten & Hinton 2008) of the features, one colour per true class
    (paper 004 Fig. 4). Uses scikit-learn's TSNE (PCA initialisation, perplexity 30 or less)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE
    if len(features) < 5:
        raise ValueError(f"t-SNE needs at least 5 faces, got {len(features)}")
    xy = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(features) - 1) / 3), random_state=seed,
              learning_rate="auto").fit_transform(np.asarray(features, np.float32))
    fig, ax = plt.subplots(figsize=(6.5, 6))
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(names):
        sel = labels == c
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(c % 10), label=f"{name} ({int(sel.sum())})")
    ax.legend(markerscale=3, fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of the classifier's input features", fontsize=10)
    return save_figure(fig, path)
