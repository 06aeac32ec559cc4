"""A small on-disk cache for work done once per dataset: decoded image arrays, pixel hashes,
landmarks. Entries are keyed by a fingerprint of the input files (path, size, mtime), so a changed
dataset is recomputed, and written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def cache_dir() -> Path:
    d = Path(os.environ.get("FERLAB_CACHE", Path.home() / ".cache" / "ferlab"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def fingerprint(key: str, files: Sequence[os.PathLike]) -> str:
    h = hashlib.sha1(key.encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}|missing\n".encode())
    return h.hexdigest()[:20]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cached_json(key: str, files: Sequence[os.PathLike], compute: Callable[[], object]):
    path = cache_dir() / f"{fingerprint(key, files)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    value = compute()
    atomic_write_bytes(path, json.dumps(value).encode())
    return value


def cached_arrays(key: str, files: Sequence[os.PathLike], compute: Callable[[], dict[str, np.ndarray]] | None):
    """Cache a dict of numpy arrays as an .npz (loaded fully into memory). With compute=None only
    look: the entry, or None when there is none."""
    path = cache_dir() / f"{fingerprint(key, files)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass
    if compute is None:
        return None
    return store_arrays(key, files, compute())


def store_arrays(key: str, files: Sequence[os.PathLike], value: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Write the entry of `cached_arrays` (e.g. arrays computed on another machine), atomically."""
    path = cache_dir() / f"{fingerprint(key, files)}.npz"
    # a unique temp name: several processes (DDP ranks) may fill the same entry at once
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **value)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return value
