"""Checkpoints: model weights as safetensors + a JSON of config and metadata, training state as a
tensors-only .pt read with weights_only=True. Every file is written atomically (temp + rename), and
a training run's epoch is one atomic unit (RunCheckpoints)."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save

from ..data.colour import GREY_FROM_RGB
from ..data.cache import atomic_write_bytes


class CheckpointError(ValueError):
    pass


# The most an export (`ferlab export`, `ferlab ensemble`) writes to PATH.safetensors: the tensors past
# it continue in PATH.part1.safetensors, PATH.part2... (the shipped package keeps every file under it,
# a test checks; training runs write one file whatever the size)
MAX_WEIGHT_FILE_BYTES = 20 * 10 ** 6


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


INT8_SCALE = ".int8_scale"


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 of a weight matrix / conv kernel: (q, scale), w ~ q * scale."""
    scale = w.detach().float().abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
    q = torch.round(w.detach().float() / scale.view(-1, *[1] * (w.ndim - 1))).clamp(-127, 127).to(torch.int8)
    return q, scale


def _half_if_it_fits(v: torch.Tensor) -> torch.Tensor:
    """float16 where every finite value stays finite (|v| <= 65504), else the tensor in float32: a
    BatchNorm's running variance over large activations (DAN's logits: 1e5) must not become inf."""
    h = v.half()
    return v.float() if bool((torch.isinf(h) & torch.isfinite(v)).any()) else h


def save_model(path, model: nn.Module, meta: dict, half: bool = False, int8: bool = False,
               shards: dict[str, str] | None = None, max_file_bytes: int | None = None) -> None:
    """Write PATH.safetensors and PATH.json (meta: arch, labels, preprocessing, config).
    half: float tensors as float16. int8: weight matrices and kernels as int8 with one float scale
    per output channel (KEY + '.int8_scale'), the other float tensors as float16 (for shipping), or
    float32 for a tensor whose values float16 cannot hold.
    shards: {NAME: key prefix}: those tensors go to PATH.NAME.safetensors instead (by default, the
    model's own `weight_shards()`: an ensemble keeps each further member in a file of its own).
    max_file_bytes: see write_weights."""
    sd = {}
    for k, v in _unwrap(model).state_dict().items():
        v = v.detach().cpu()
        if int8 and v.is_floating_point() and v.ndim >= 2:
            sd[k], sd[k + INT8_SCALE] = quantize_int8(v)
        else:
            sd[k] = _half_if_it_fits(v) if (half or int8) and v.is_floating_point() else v
    if shards is None:
        shards = _unwrap(model).weight_shards() if hasattr(_unwrap(model), "weight_shards") else {}
    write_weights(path, sd, meta, shards, max_file_bytes)


def _split_by_size(sd: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """`sd` cut into groups of at most `max_bytes` of tensors each (less 1 % for the file's header),
    by huggingface_hub's splitter (a tensor larger than that is a group of its own)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    split = split_torch_state_dict_into_shards(sd, max_shard_size=int(max_bytes * 0.99))
    return [{k: sd[k] for k in names} for names in split.filename_to_tensors.values()]


def write_weights(path, sd: dict[str, torch.Tensor], meta: dict, shards: dict[str, str] | None = None,
                  max_file_bytes: int | None = None) -> None:
    """Write a model's tensors and description atomically: the tensors under each shard's key prefix
    to PATH.NAME.safetensors (listed in the description's `weight_shards`), the rest to
    PATH.safetensors, continued in PATH.part1.safetensors, ... where they pass `max_file_bytes`;
    the description last."""
    main = Path(path).with_suffix(".safetensors")
    meta = {k: v for k, v in meta.items() if k != "weight_shards"}
    rest, names = dict(sd), []
    for name, prefix in (shards or {}).items():
        part = {k: rest.pop(k) for k in list(rest) if k.startswith(prefix)}
        if not part:
            raise CheckpointError(f"shard {name!r}: no tensor starts with {prefix!r}")
        names.append(f"{main.stem}.{name}.safetensors")
        atomic_write_bytes(main.parent / names[-1], _safetensors_bytes(part))
    rest, *more = _split_by_size(rest, max_file_bytes) if max_file_bytes else [rest]
    for i, part in enumerate(more, 1):
        names.append(f"{main.stem}.part{i}.safetensors")
        atomic_write_bytes(main.parent / names[-1], _safetensors_bytes(part))
    atomic_write_bytes(main, _safetensors_bytes(rest))
    if names:
        meta["weight_shards"] = names
    atomic_write_bytes(main.with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())


def _safetensors_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.contiguous() for k, v in sd.items()}, metadata={"format": "pt"})


def own_weight_files(path) -> list[Path]:
    """The files that hold a model's own weights: PATH.safetensors, then the shards its description
    lists (plain file names beside it). A model without a description is its one file."""
    main = Path(path).with_suffix(".safetensors")
    meta = _read_meta_quietly(main)
    shards = meta.get("weight_shards", [])
    if not isinstance(shards, list) or not all(_plain_name(n) and n != main.name for n in shards):
        raise CheckpointError(f"{main.with_suffix('.json')}: 'weight_shards' must list file names beside it ending in .safetensors")
    return [main] + [main.parent / n for n in shards]


def weight_files(path) -> list[Path]:
    """Every file a model's weights are read from: its own (own_weight_files), then the files of other
    models beside it whose tensors it shares (`weights_from`: an ensemble whose members ship on their own)."""
    main = Path(path).with_suffix(".safetensors")
    return own_weight_files(main) + [main.parent / e["file"] for e in shared_weights(main)]


def shared_weights(path) -> list[dict]:
    """A model's `weights_from` entries, checked: {file: a .safetensors beside it, take: key prefix read
    there, as: the prefix those keys get here, sha256: of that file when this model was written}."""
    main = Path(path).with_suffix(".safetensors")
    entries = _read_meta_quietly(main).get("weights_from", [])
    ok = isinstance(entries, list) and all(
        isinstance(e, dict) and _plain_name(e.get("file")) and e["file"] != main.name
        and isinstance(e.get("take"), str) and isinstance(e.get("as"), str) and isinstance(e.get("sha256"), str)
        for e in entries)
    if not ok:
        raise CheckpointError(f"{main.with_suffix('.json')}: 'weights_from' must list {{file, take, as, sha256}} "
                              "with file names beside it ending in .safetensors")
    return entries


def _plain_name(n) -> bool:
    return isinstance(n, str) and Path(n).name == n and n.endswith(".safetensors")


def _read_meta_quietly(main: Path) -> dict:
    jpath = main.with_suffix(".json")
    try:
        meta = json.loads(jpath.read_text()) if jpath.is_file() else {}
    except ValueError:
        meta = {}
    return meta if isinstance(meta, dict) else {}


def file_sha256(*paths) -> str:
    """The SHA-256 of the files' bytes, one after another."""
    import hashlib
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _member_prefixes(keys) -> set[str]:
    """`members.N.` of every ensemble member a state dict's keys hold."""
    return {".".join(k.split(".", 2)[:2]) + "." for k in keys if k.startswith("members.")}


def share_weights(path, sources) -> list[dict]:
    """Rewrite the model at PATH so that every group of its tensors (an ensemble's member:
    `members.N.`) that one file of another model holds byte for byte, under whichever prefix there, is
    read from that file instead of kept twice (`weights_from`; the source files must stay beside it, and a
    changed source is refused at load). `sources`: model paths beside PATH. Returns the entries."""
    main = Path(path).with_suffix(".safetensors")
    meta = load_meta(main)
    sd = {}
    for f in own_weight_files(main):
        sd.update(read_safetensors(f))
    groups = sorted(_member_prefixes(sd))
    entries, taken = [], set()
    src_files = []
    for src in sources:
        sfile = Path(src).with_suffix(".safetensors")
        if sfile.parent.resolve() != main.parent.resolve():
            raise CheckpointError(f"{sfile}: a model whose weights are shared must sit beside {main.name}")
        src_files += own_weight_files(sfile)  # each of a sharded model's files on its own
    for sfile in src_files:
        other = read_safetensors(sfile)
        takes = [""] + sorted(_member_prefixes(other))
        for g in groups:
            if g in taken:
                continue
            mine = {k[len(g):]: v for k, v in sd.items() if k.startswith(g)}
            for t in takes:
                theirs = {k[len(t):]: v for k, v in other.items() if k.startswith(t)}
                if theirs.keys() == mine.keys() and all(v.dtype == theirs[k].dtype and v.shape == theirs[k].shape
                                                        and torch.equal(v, theirs[k]) for k, v in mine.items()):
                    entries.append({"file": sfile.name, "take": t, "as": g, "sha256": file_sha256(sfile)})
                    taken.add(g)
                    break
    if not entries:
        return []
    for f in own_weight_files(main)[1:]:
        f.unlink()
    rest = {k: v for k, v in sd.items() if not any(k.startswith(g) for g in taken)}
    meta = {k: v for k, v in meta.items() if k not in ("weight_shards", "weights_from")}
    meta["weights_from"] = entries
    write_weights(main, rest, meta)
    return entries


def weights_sha256(path) -> str:
    """The SHA-256 of a model's weights: of its one file, or of its files in order when it is sharded."""
    return file_sha256(*weight_files(path))


def weights_size(path) -> int:
    """Bytes of a model's weight files together."""
    return sum(f.stat().st_size for f in weight_files(path) if f.is_file())


def load_meta(path) -> dict:
    p = Path(path).with_suffix(".json")
    if not p.is_file():
        raise CheckpointError(f"{p}: missing model description (JSON beside the .safetensors)")
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None


def load_model(path, device="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from PATH.safetensors + PATH.json (no pickle involved)."""
    from ..models import create_model, list_models
    meta = load_meta(path)
    wpath = Path(path).with_suffix(".safetensors")
    jpath = Path(path).with_suffix(".json")
    if not isinstance(meta, dict) or not isinstance(meta.get("arch"), str) or not isinstance(meta.get("labels"), list) \
            or not meta["labels"] or not isinstance(meta.get("model_kwargs", {}), dict) \
            or not isinstance(meta.get("preprocess", {}), dict):
        raise CheckpointError(f"{jpath}: not a ferlab model description (needs 'arch', a list of 'labels', "
                              "'preprocess' and optional 'model_kwargs')")
    if meta["arch"] not in list_models():
        raise CheckpointError(f"{jpath}: unknown architecture {meta['arch']!r} (known: {', '.join(list_models())})")
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: no such weights file")
    try:
        model = create_model(meta["arch"], num_classes=len(meta["labels"]), **meta.get("model_kwargs", {}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{jpath}: model_kwargs do not build a {meta['arch']} ({e})") from None
    sd = {}
    parts = [(f, None) for f in own_weight_files(wpath)] + [(wpath.parent / e["file"], e) for e in shared_weights(wpath)]
    for f, shared in parts:
        if not f.is_file():
            raise CheckpointError(f"{f}: no such weights file (a part of the weights that {jpath.name} lists)")
        part = read_safetensors(f)
        if shared is not None:  # another model's file: the tensors under `take`, renamed to `as`
            if file_sha256(f) != shared["sha256"]:
                raise CheckpointError(f"{f}: changed since {jpath.name} was made from it (its SHA-256 differs); "
                                      f"make {wpath.stem} again from the new file")
            part = {shared["as"] + k[len(shared["take"]):]: v for k, v in part.items() if k.startswith(shared["take"])}
        if set(part) & set(sd):
            raise CheckpointError(f"{f}: holds weights another of the model's files holds too, e.g. {min(set(part) & set(sd))}")
        sd.update(part)
    for k in [k for k in sd if k.endswith(INT8_SCALE)]:  # int8-stored weights back to float
        scale, base = sd.pop(k), k[:-len(INT8_SCALE)]
        if base not in sd:
            raise CheckpointError(f"{wpath}: {k} has no weight {base} beside it")
        sd[base] = sd[base].float() * scale.view(-1, *[1] * (sd[base].ndim - 1))
    own = model.state_dict()
    sd = {k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        missing = sorted(set(own) - set(sd))
        extra = sorted(set(sd) - set(own))
        shape = [k for k in sd if k in own and sd[k].shape != own[k].shape]
        detail = "; ".join(x for x in [f"{len(missing)} weights missing (e.g. {missing[0]})" if missing else "",
                                       f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                                       f"{len(shape)} of another shape (e.g. {shape[0]})" if shape else ""] if x)
        raise CheckpointError(f"{wpath}: the weights do not match the model {jpath.name} describes "
                              f"({detail or e})") from None
    return model.to(device).eval(), meta


def grey_weights_for_colour(src: dict, target: dict) -> dict:
    """`src` (a gray model's state dict) with each single-channel convolution kernel whose place in
    `target` (a colour model of that architecture) takes three channels split over R, G and B by
    GREY_FROM_RGB: the colour model holding these weights reads a colour face as the gray model reads
    that face made gray. Every other tensor is returned as it is."""
    out = dict(src)
    for k, v in src.items():
        t = target.get(k)
        if t is not None and v.shape != t.shape and v.ndim == 4 and v.shape[1] == 1 and t.shape[1] == 3 \
                and v.shape[0] == t.shape[0] and v.shape[2:] == t.shape[2:]:
            out[k] = v * torch.tensor(GREY_FROM_RGB, dtype=v.dtype).view(1, 3, 1, 1)
    return out


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file; a truncated, corrupt or hostile one (say, a header that claims
    gigabytes) is one CheckpointError, never a crash or a huge allocation."""
    from ..models.weights import WeightsError
    from ..models.weights import read_safetensors as read_checked
    try:
        return read_checked(Path(path))
    except WeightsError as e:
        raise CheckpointError(str(e)) from None


def save_train_state(path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_train_state(path) -> dict:
    """Training state saved by save_train_state: tensors, numbers and dicts only (weights_only);
    anything else (a truncated file, a pickle holding code) is refused with one message."""
    try:
        st = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's message would suggest weights_only=False: never
        kind = "truncated or corrupt" if "zip" in str(e).lower() or "EOF" in str(e) or "archive" in str(e).lower() \
            else "refused: it holds something other than tensors and numbers"
        raise CheckpointError(f"{path}: training state {kind}; delete the run folder's state to start over") from None
    if not isinstance(st, dict) or "epoch" not in st:
        raise CheckpointError(f"{path}: not a ferlab training state")
    return st



# -- a run folder's epochs, each one atomic unit -------------------------------------------------

def fault_point(name: str) -> None:
    """Fault injection for the kill-anywhere resume test: FERLAB_FAULT_AT=NAME[:EPOCH] ends the
    process at once (as kill -9 would) when the save reaches point NAME (of that epoch)."""
    spec = os.environ.get("FERLAB_FAULT_AT")
    if not spec:
        return
    want, _, epoch = spec.partition(":")
    here, _, here_epoch = name.partition(":")
    if want == here and (not epoch or epoch == here_epoch):
        os._exit(137)


class RunCheckpoints:
    """The resumable state of a run folder, one atomic unit per epoch.

    Epoch N's unit is the folder OUT/checkpoints/epoch-NNNN: the model (last.safetensors + .json; one
    weights file whatever the model's weight_shards, which apply when it is exported), the training
    state (state.pt), the history, and best.* when that epoch is the best so far. It is
    written as epoch-NNNN.tmp and renamed when every file is on disk: the rename is the commit, so
    a kill at any instant leaves either the whole unit or none of it. Then the run's user-facing
    files (OUT/best.*, OUT/last.*, OUT/history.json, OUT/log.jsonl) are refreshed from the committed
    units; resuming redoes that step, so a kill in the middle of it loses nothing. Units older than
    the latest are removed, except the one holding the best model; stale .tmp folders and
    temporary files from killed writes are removed when a run starts or resumes."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = self.out / "checkpoints"

    def _unit(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:04d}"

    def committed(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(p.name[6:]) for p in self.dir.iterdir()
                      if p.is_dir() and p.name.startswith("epoch-") and p.name[6:].isdigit())

    def latest(self) -> int | None:
        done = self.committed()
        return done[-1] if done else None

    def clean_stale(self) -> list[str]:
        """Remove half-written units and temporary files left by a killed write."""
        import shutil
        removed = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name.endswith(".tmp"):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p.name)
        if self.out.is_dir():
            for p in self.out.iterdir():  # atomic_write_bytes' temporaries: .NAME.XXXX
                if p.is_file() and p.name.startswith(".") and any(p.name.startswith(f".{n}.") for n in
                                                                  ("best.safetensors", "best.json", "last.safetensors",
                                                                   "last.json", "history.json", "log.jsonl",
                                                                   "last_state.pt")):
                    p.unlink()
                    removed.append(p.name)
        return removed

    def save(self, epoch: int, model, meta: dict, state: dict, history: list, best_meta: dict | None) -> None:
        """Write epoch `epoch`'s unit and commit it; `best_meta` when this epoch is the new best."""
        import shutil
        final = self._unit(epoch)
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if best_meta is not None:
            save_model(tmp / "best", model, best_meta, shards={})  # a run's models stay one file each
            fault_point(f"after_best:{epoch}")
        save_model(tmp / "last", model, {**meta, "epoch": epoch}, shards={})
        fault_point(f"after_last:{epoch}")
        save_train_state(tmp / "state.pt", state)
        atomic_write_bytes(tmp / "history.json", json.dumps(history, indent=1).encode())
        fault_point(f"before_commit:{epoch}")
        if final.exists():  # a unit of this epoch from an earlier, abandoned attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        fault_point(f"after_commit:{epoch}")
        self.publish()
        fault_point(f"after_publish:{epoch}")
        self.prune()

    def load(self) -> tuple[int, dict, dict[str, torch.Tensor], list]:
        """(epoch, training state, last weights, history) of the latest committed unit."""
        epoch = self.latest()
        if epoch is None:
            raise CheckpointError(f"{self.out}: no committed epoch to resume from")
        unit = self._unit(epoch)
        state = load_train_state(unit / "state.pt")
        weights = read_safetensors(unit / "last.safetensors")
        try:
            history = json.loads((unit / "history.json").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{unit / 'history.json'}: cannot read ({e})") from None
        return epoch, state, weights, history

    def best_unit(self) -> Path | None:
        """The newest committed unit that holds best.* (the best model so far)."""
        for epoch in reversed(self.committed()):
            if (self._unit(epoch) / "best.safetensors").is_file():
                return self._unit(epoch)
        return None

    def publish(self) -> None:
        """Refresh OUT/best.*, OUT/last.*, OUT/history.json and OUT/log.jsonl from the committed units
        (idempotent: every file is rewritten atomically from the units)."""
        latest = self.latest()
        if latest is None:
            return
        unit = self._unit(latest)
        best = self.best_unit()
        for src, name in ([(best / "best.safetensors", "best.safetensors"), (best / "best.json", "best.json")]
                          if best is not None else []) + [(unit / "last.safetensors", "last.safetensors"),
                                                          (unit / "last.json", "last.json"),
                                                          (unit / "history.json", "history.json")]:
            data = src.read_bytes()
            dst = self.out / name
            if not dst.is_file() or dst.stat().st_size != len(data) or dst.read_bytes() != data:
                atomic_write_bytes(dst, data)
                fault_point(f"mid_publish:{latest}")
        history = json.loads((unit / "history.json").read_text())
        atomic_write_bytes(self.out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())

    def prune(self) -> None:
        import shutil
        keep = {self.latest()}
        best = self.best_unit()
        if best is not None:
            keep.add(int(best.name[6:]))
        for epoch in self.committed():
            if epoch not in keep:
                shutil.rmtree(self._unit(epoch), ignore_errors=True)


def file_fingerprint(path, names=()) -> str:
    """A short digest of a model's weights (every file of a sharded one) and a list of names (e.g. the
    images something was computed on): the key of a cache made from a model file."""
    import hashlib
    h = hashlib.sha256()
    for f in weight_files(path) if Path(path).suffix in (".safetensors", "") else [Path(path)]:
        h.update(Path(f).read_bytes())
    for n in names:
        h.update(str(n).encode())
    return h.hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
