"""Trained models read as one (`ferlab.models.ensemble`): the file that holds them, and its member
weights chosen on the selection splits, never on a test set.

    ferlab ensemble default fast resnet18_ferplus --out runs/ensemble/ensemble
        # weights: the best point of a grid over the simplex (step 0.1) by the selection score of the
        # first member's training data (FER+ valid and ExpW valid: the mean of their accuracies)
    ferlab ensemble A B --weights 0.7,0.3 --out OUT   # weights given, nothing measured

Members must share labels, normalisation and framing; the ensemble reads its first member's input
(size, colour), and a member trained on a smaller or gray input gets the face resampled and made gray
inside the ensemble (put the member with the largest colour input first). Each keeps its own
calibration temperature. The result is a normal ferlab model file (PATH.safetensors + PATH.json)
with its members, their digests and the weight search in its JSON.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from ..data.colour import same_normalisation
from ..data.arrays import restrict_labels
from ..models import needs_landmarks
from ..models.ensemble import ProbabilityEnsemble
from .calibration import selection_split
from .checkpoint import MAX_WEIGHT_FILE_BYTES, load_model, save_model, weights_sha256
from .evaluate import predict_probs
from .inputs import model_input_images, model_input_landmarks

INPUT_KEYS = ("img_size", "channels", "mean", "std", "framing")


def load_members(paths) -> list[tuple[torch.nn.Module, dict, Path]]:
    """(model, meta, path) of each member; a clear error when they cannot be read as one."""
    paths = [Path(p).with_suffix(".safetensors") for p in paths]
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two models")
    members = []
    for p in paths:  # an ensemble given as a member gives its members (each with its own temperature)
        model, meta = load_model(p)
        if meta["arch"] == "ensemble":
            members += [(*member_model(model, meta, i), p) for i in range(len(model.members))]
        else:
            members.append((model, meta, p))
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two models")
    _, first, p0 = members[0]
    f = first["preprocess"]
    for _, meta, p in members[1:]:
        if meta["labels"] != first["labels"]:
            raise ValueError(f"{p} and {p0} have different labels ({meta['labels']} against {first['labels']})")
        m = meta["preprocess"]
        same = {k: m.get(k) for k in INPUT_KEYS} == {k: f.get(k) for k in INPUT_KEYS}
        readable = (same_normalisation(m, f) and m["channels"] in (f["channels"], 1)
                    and int(m["img_size"]) <= int(f["img_size"]))
        if not same and not readable:
            raise ValueError(f"{p} reads another input than {p0} ({ {k: m.get(k) for k in INPUT_KEYS} } against "
                             f"{ {k: f.get(k) for k in INPUT_KEYS} }): members share normalisation and framing, and the "
                             "first member's input must be the largest and in colour if any is")
    return members


def member_name(meta: dict, path: Path) -> str:
    """A member's name: its file's, or FILE/NAME for a member taken out of an ensemble file."""
    inner = meta.get("from_ensemble")
    return f"{path.stem}/{inner['name']}" if inner else path.stem


def member_specs(members) -> list[dict]:
    f = members[0][1]["preprocess"]
    specs = []
    for _, meta, _ in members:
        spec = {"arch": meta["arch"], "kwargs": meta.get("model_kwargs", {}), "temperature": float(meta.get("temperature", 1.0))}
        m = meta["preprocess"]
        if (int(m["img_size"]), int(m["channels"])) != (int(f["img_size"]), int(f["channels"])):
            spec["input"] = {"img_size": int(m["img_size"]), "channels": int(m["channels"])}
        specs.append(spec)
    return specs


def input_kwargs(members) -> dict:
    f = members[0][1]["preprocess"]
    return {"img_size": int(f["img_size"]), "in_chans": int(f["channels"])}


def build_ensemble(members, weights) -> ProbabilityEnsemble:
    """The ensemble module over loaded members, each member's trained weights copied in."""
    ens = ProbabilityEnsemble(member_specs(members), list(weights), num_classes=len(members[0][1]["labels"]),
                              **input_kwargs(members))
    for slot, (model, _, _) in zip(ens.members, members):
        slot.load_state_dict(model.state_dict())
    return ens.eval()


class _Member(torch.nn.Module):
    """Member i of an ensemble on the ensemble's input (for scoring members alone)."""

    def __init__(self, ens: ProbabilityEnsemble, i: int):
        super().__init__()
        self.ens, self.i = ens, i

    def forward(self, x):
        return self.ens.member_logits(self.i, x)


def selection_faces(meta: dict, data_cfg: dict):
    """(valid samples, their faces at the model's input) of the selection split of `data_cfg`, the
    model's labels only, faces that could not be read or found left out."""
    pre = meta["preprocess"]
    valid = restrict_labels(selection_split(data_cfg), tuple(meta["labels"]))
    imgs, ok = model_input_images(valid, pre["img_size"], pre["channels"], pre.get("framing", "fer2013"))
    keep = np.flatnonzero(ok)
    return valid.subset(keep), imgs[keep]


def selection_probs(members, data_cfg: dict):
    """(valid samples, [calibrated probabilities of each member]) on the selection (valid) split, each
    member reading the ensemble's input as it does inside the ensemble."""
    pre = members[0][1]["preprocess"]
    valid, imgs = selection_faces(members[0][1], data_cfg)
    ens = build_ensemble(members, [1.0] * len(members))
    probs = [predict_probs(_Member(ens, i).eval(), imgs, pre, torch.device("cpu"), temperature=float(mt.get("temperature", 1.0)))
             for i, (_, mt, _) in enumerate(members)]
    return valid, probs


def selection_score(probs: np.ndarray, labels: np.ndarray, sources: np.ndarray | None) -> dict:
    """Accuracy per source and their mean (each source counting the same, as in model selection)."""
    right = probs.argmax(1) == labels
    if sources is None:
        return {"per_source": {}, "score": float(right.mean())}
    per = {str(n): float(right[sources == n].mean()) for n in dict.fromkeys(sources.tolist())}
    return {"per_source": per, "score": float(np.mean(list(per.values())))}


def selection_accuracy(path, data_cfg: dict) -> dict:
    """A saved model's accuracy and selection score on the selection splits of `data_cfg` (FER+ valid
    by majority, ExpW valid through the front end): what a shipped model's JSON records as `valid`."""
    model, meta = load_model(path)
    valid, imgs = selection_faces(meta, data_cfg)
    points = model_input_landmarks(valid, meta["preprocess"]["img_size"]) if needs_landmarks(model) else None
    probs = predict_probs(model, imgs, meta["preprocess"], torch.device("cpu"), landmarks=points)
    s = selection_score(probs, valid.labels, valid.flags["source"])
    return {"n": int(len(valid)), "accuracy": float(np.mean(probs.argmax(1) == valid.labels)), "selection": s["score"],
            "per_source_accuracy": s["per_source"],
            "of": "the shipped weights (int8) on the selection splits: FER+ valid (majority) and ExpW valid "
                  "(faces the front end found)"}


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of n non-negative multiples of `step` summing to 1, the first member's
    largest weights first (so that ties go to the first member)."""
    k = int(round(1 / step))
    if k < 1 or abs(k * step - 1) > 1e-6:
        raise ValueError(f"step {step}: must divide 1 (e.g. 0.1, 0.05)")
    out = [c for c in itertools.product(range(k, -1, -1), repeat=n) if sum(c) == k]
    return [tuple(x / k for x in c) for c in out]


def choose_weights(probs: list[np.ndarray], labels: np.ndarray, sources, step: float = 0.1) -> dict:
    """The grid point with the best selection score; the table of every member alone beside it."""
    best, best_w = None, None
    for w in simplex_grid(len(probs), step):
        s = selection_score(sum(wi * p for wi, p in zip(w, probs)), labels, sources)
        if best is None or s["score"] > best["score"] + 1e-12:
            best, best_w = s, w
    alone = [selection_score(p, labels, sources) for p in probs]
    return {"weights": list(best_w), "selection": best, "members_alone": alone, "grid_step": step}


def write_ensemble(paths, out, weights=None, data_cfg: dict | None = None, step: float = 0.1, int8: bool = False,
                   log=print) -> dict:
    """Write the ensemble of the models at `paths` to OUT.safetensors + OUT.json; with no `weights`,
    choose them on the selection split of `data_cfg` (default: the first member's training data).
    Members of weight 0 are left out (when at least two others remain)."""
    members = load_members(paths)
    report = {}
    if weights is None:
        if data_cfg is None:
            data_cfg = members[0][1].get("config", {}).get("data")
            if not data_cfg:
                raise ValueError(f"{paths[0]}: its JSON holds no training config to choose the weights on; "
                                 "give --config or --weights")
        valid, probs = selection_probs(members, data_cfg)
        report = choose_weights(probs, valid.labels, valid.flags.get("source"), step)
        report["n"] = int(len(valid))
        weights = report["weights"]
        for (_, mt, p), s in zip(members, report["members_alone"]):
            log(f"  {member_name(mt, p):24s} alone: selection {s['score']:.4f} {s['per_source']}")
        log(f"  weights {', '.join(f'{w:g}' for w in weights)}: selection {report['selection']['score']:.4f} "
            f"{report['selection']['per_source']}")
    weights = [float(w) for w in weights]
    if len(weights) != len(members):
        raise ValueError(f"{len(weights)} weights for {len(members)} members (an ensemble given counts its members)")
    kept = [i for i, w in enumerate(weights) if w > 0]
    if 2 <= len(kept) < len(members):  # a member of weight 0 would cost its forward pass and add nothing
        left_out = [member_name(mt, p) for i, (_, mt, p) in enumerate(members) if i not in kept]
        log(f"  left out (weight 0): {', '.join(left_out)}")
        members, weights = [members[i] for i in kept], [weights[i] for i in kept]
        if report:
            report["left_out"] = left_out
    model = build_ensemble(members, weights)
    first = members[0][1]
    meta = {"summary": "ensemble of " + ", ".join(f"{member_name(mt, p)} ({w:.2g})"
                                                  for (_, mt, p), w in zip(members, model.member_weights.tolist())),
            "arch": "ensemble", "labels": first["labels"],
            "model_kwargs": {"members": member_specs(members), "weights": model.member_weights.tolist(),
                             **input_kwargs(members)},
            "preprocess": first["preprocess"],
            "ensemble": {"members": [{"name": member_name(mt, p), "path": str(p), "sha256": weights_sha256(p), "arch": mt["arch"],
                                      "temperature": float(mt.get("temperature", 1.0))} for _, mt, p in members],
                         "weights": model.member_weights.tolist(), "chosen_on": report or "given"},
            **({"dtype": "int8 weights (per-channel scales)"} if int8 else {})}
    save_model(out, model, meta, int8=int8, max_file_bytes=MAX_WEIGHT_FILE_BYTES)
    return meta


def lead_member_model(model: ProbabilityEnsemble, meta: dict) -> tuple[torch.nn.Module, dict]:
    """(model, meta) of the ensemble's lead member (the most weight) as a model file of its own: its
    architecture, input and temperature; provenance says which ensemble it came from."""
    return member_model(model, meta, model.lead_member())


def member_model(model: ProbabilityEnsemble, meta: dict, i: int) -> tuple[torch.nn.Module, dict]:
    """(model, meta) of an ensemble's member i as a model file of its own."""
    spec = meta["model_kwargs"]["members"][i]
    pre = dict(meta["preprocess"])
    if spec.get("input"):
        pre.update(img_size=spec["input"]["img_size"], channels=spec["input"]["channels"])
        if isinstance(pre.get("mean"), list):
            pre["mean"] = pre["mean"][:1] * pre["channels"]
    member = model.members[i]
    names = [m.get("name") for m in meta.get("ensemble", {}).get("members", [])]
    mmeta = {"arch": spec["arch"], "labels": meta["labels"], "model_kwargs": spec.get("kwargs", {}), "preprocess": pre,
             "temperature": float(spec.get("temperature", 1.0)),
             "from_ensemble": {"member": i, "name": names[i] if i < len(names) else f"member {i}",
                               "weight": float(model.member_weights[i])}}
    return member, mmeta
