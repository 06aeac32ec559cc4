"""Carry FER+ to a GPU machine that can only receive a small working tree (64 MiB with the repo).

    python benchmarks/device/ferplus_bundle.py pack   BUNDLE          (here: from the FER+ folder)
    SPLITS=FER2013Train,FER2013Valid PARTS=2 python benchmarks/device/ferplus_bundle.py pack BUNDLE
                                                                      (two splits, in two parts)
    python benchmarks/device/ferplus_bundle.py unpack BUNDLE DEST     (there: rebuild the folder)
    python benchmarks/device/ferplus_bundle.py points POINTS          (here: dlib's 68 points of FER+)
    python benchmarks/device/ferplus_bundle.py seed-points POINTS     (there, after unpack: fill the cache)

The 35,710 PNGs hold 91 MB; as one lossless stream they take about 56 MB: each 48x48 gray face is
predicted pixel by pixel with LOCO-I's median edge detector (the JPEG-LS predictor), and the
residuals are xz-compressed. `unpack` rebuilds FER2013Train/Valid/Test with every PNG and
label.csv, and checks the rebuilt faces against the SHA-256 of all pixels recorded at packing: the
copy is exact or unpack fails. `points` carries dlib's landmarks of every face of the majority-protocol
splits (what `ferlab landmarks train` fits; the GPU machine has no dlib): dlib's points are
multiples of 1/8 pixel in the 48x48 crops, so they travel exactly as int16 eighths. Not a ferlab feature: a transport for benchmarks/device/ runs.
"""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import sys
from pathlib import Path

import cv2
import numpy as np

SPLITS = ("FER2013Train", "FER2013Valid", "FER2013Test")
SIDE = 48


def _neighbours(x: np.ndarray):
    a = np.zeros_like(x); a[:, :, 1:] = x[:, :, :-1]  # left
    b = np.zeros_like(x); b[:, 1:, :] = x[:, :-1, :]  # above
    c = np.zeros_like(x); c[:, 1:, 1:] = x[:, :-1, :-1]  # above-left
    return a, b, c


def med_predict(a, b, c):
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def encode(imgs: np.ndarray) -> bytes:
    x = imgs.astype(np.int16)
    r = (x - med_predict(*_neighbours(x))) % 256
    r = np.where(r >= 128, r - 256, r)  # signed residual in [-128, 127], then zig-zag to bytes
    z = np.where(r >= 0, 2 * r, -2 * r - 1).astype(np.uint8)
    return lzma.compress(z.tobytes(), preset=9 | lzma.PRESET_EXTREME)


def decode(blob: bytes, n: int) -> np.ndarray:
    z = np.frombuffer(lzma.decompress(blob), np.uint8).reshape(n, SIDE, SIDE).astype(np.int16)
    r = np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
    out = np.zeros((n, SIDE, SIDE), np.int16)
    zero = np.zeros(n, np.int16)
    for y in range(SIDE):  # raster order, all faces at once
        for x in range(SIDE):
            a = out[:, y, x - 1] if x else zero
            b = out[:, y - 1, x] if y else zero
            c = out[:, y - 1, x - 1] if x and y else zero
            out[:, y, x] = (med_predict(a, b, c) + r[:, y, x]) % 256
    return out.astype(np.uint8)


def pack(root: Path, bundle: Path, splits=SPLITS, parts: int = 1) -> None:
    """One bundle of `splits` (all three by default), or `parts` bundles BUNDLE.partK.npz of about
    equal size (for a working tree too small for one: each part can travel in its own call)."""
    names, imgs, texts = [], [], {}
    for split in splits:
        texts[split] = (root / split / "label.csv").read_text()
        for p in sorted((root / split).glob("*.png")):
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if img is None or img.shape != (SIDE, SIDE):
                raise SystemExit(f"{p}: not a {SIDE}x{SIDE} gray PNG; this bundle format cannot carry it")
            names.append(f"{split}/{p.name}")
            imgs.append(img)
    imgs = np.stack(imgs)
    bounds = np.linspace(0, len(names), parts + 1).astype(int)
    for k in range(parts):
        lo, hi = bounds[k], bounds[k + 1]
        part = imgs[lo:hi]
        meta = json.dumps({"names": names[lo:hi], "labels": texts,
                           "sha256": hashlib.sha256(part.tobytes()).hexdigest()}).encode()
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(lzma.compress(meta, preset=9), np.uint8),
                 pixels=np.frombuffer(encode(part), np.uint8))
        path = bundle if parts == 1 else bundle.with_name(f"{bundle.stem}.part{k}{bundle.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        print(f"{path}: {hi - lo} faces, {path.stat().st_size / 1e6:.1f} MB")


def unpack(bundle: Path, dest: Path) -> None:
    """Rebuild the faces of one bundle (or part) under DEST; parts may be unpacked one by one."""
    z = np.load(bundle)
    meta = json.loads(lzma.decompress(z["meta"].tobytes()))
    names = meta["names"]
    imgs = decode(z["pixels"].tobytes(), len(names))
    if hashlib.sha256(imgs.tobytes()).hexdigest() != meta["sha256"]:
        raise SystemExit("the rebuilt faces do not match the pixels recorded at packing")
    for split, text in meta["labels"].items():
        (dest / split).mkdir(parents=True, exist_ok=True)
        (dest / split / "label.csv").write_text(text)
    for n, i in zip(names, imgs):
        cv2.imwrite(str(dest / n), i)
    print(f"{dest}: {len(names)} faces rebuilt, pixel-exact (SHA-256 of all pixels checked)")


def _name(path) -> str:
    return f"{Path(path).parent.name}/{Path(path).name}"


def points_to_arrays(splits: dict, cached) -> dict:
    """{split: SampleList} and cached(samples) -> the landmark cache's arrays (landmarks, ok,
    sizes), as one table of file names and int16 eighths of a pixel, exactly."""
    names, q, ok, sizes = [], [], [], []
    for split in sorted(splits):
        a = cached(splits[split])
        pts = a["landmarks"]
        e = np.round(pts * 8)
        if not np.array_equal(e / 8, pts) or np.abs(e).max() >= 2 ** 15:
            raise SystemExit(f"{split}: points are not exact eighths of a pixel; this format cannot carry them")
        names += [_name(p) for p in splits[split].paths]
        q.append(e.astype(np.int16)); ok.append(a["ok"]); sizes.append(a["sizes"])
    return {"names": np.array(names), "eighths": np.concatenate(q), "ok": np.concatenate(ok),
            "sizes": np.concatenate(sizes).astype(np.uint16)}


def seed_from_arrays(splits: dict, arrays: dict, seed) -> int:
    """Seed the landmark cache of each split from carried arrays, matched by file name."""
    index = {n: i for i, n in enumerate(arrays["names"].tolist())}
    for split in sorted(splits):
        names = [_name(p) for p in splits[split].paths]
        missing = [n for n in names if n not in index]
        if missing:
            raise SystemExit(f"{split}: {len(missing)} faces have no carried points (first: {missing[0]})")
        rows = np.array([index[n] for n in names], np.int64)
        seed(splits[split], {"landmarks": arrays["eighths"][rows].astype(np.float32) / 8,
                             "ok": arrays["ok"][rows], "sizes": arrays["sizes"][rows].astype(np.float32)})
    return len(splits)


if __name__ == "__main__":
    n_args = {"pack": 3, "unpack": 4, "points": 3, "seed-points": 3}
    if len(sys.argv) != n_args.get(sys.argv[1] if len(sys.argv) > 1 else "", -1):
        sys.exit(__doc__)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    if sys.argv[1] == "pack":
        from ferlab.data.arrays import default_ferplus_root
        pack(default_ferplus_root(), Path(sys.argv[2]), tuple(os.environ.get("SPLITS", ",".join(SPLITS)).split(",")),
             int(os.environ.get("PARTS", "1")))
    elif sys.argv[1] == "unpack":
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        from ferlab.data.arrays import load_splits
        splits = load_splits({"dataset": "ferplus", "label_mode": "majority"})
        if sys.argv[1] == "points":
            from ferlab.faces.landmarks import dlib_crop_entry
            arrays = points_to_arrays(splits, dlib_crop_entry)
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
            Path(sys.argv[2]).write_bytes(buf.getvalue())
            print(f"{sys.argv[2]}: dlib points of {len(arrays['names'])} faces, {len(buf.getvalue()) / 1e6:.1f} MB")
        else:
            from ferlab.faces.landmarks import seed_dataset_landmarks
            with np.load(sys.argv[2]) as z:
                arrays = {k: z[k] for k in z.files}
            n = seed_from_arrays(splits, arrays, seed_dataset_landmarks)
            print(f"landmark cache seeded for {n} splits ({len(arrays['names'])} faces)")
