"""Many photos through the analyzer: results written as they come (one JSONL line and one CSV row
per face), bad or faceless inputs reported and skipped, faces of several photos classified in one
model batch, annotated copies only when asked for."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from ..data.imageio import BadImageError, as_rgb
from . import face_table


class ResultWriter:
    """predictions.jsonl (one line per face) and predictions.csv (one row per face in the layout of
    `face_table`), flushed after every photo."""

    def __init__(self, out_dir: Path, labels: list[str]):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        self.jsonl = open(out_dir / "predictions.jsonl", "w")
        self.csv_fh = open(out_dir / "predictions.csv", "w", newline="")
        self.csv = csv.writer(self.csv_fh)
        self.csv.writerow(face_table.header(labels))

    def write(self, name: str, faces: list[dict]) -> None:
        for i, f in enumerate(faces):
            self.jsonl.write(json.dumps({"file": name, "face": i, **{k: v for k, v in f.items() if k != "landmarks"}})
                             + "\n")
            self.csv.writerow(face_table.row(name, f, self.labels, index=i))
        self.jsonl.flush()
        self.csv_fh.flush()

    def close(self) -> None:
        self.jsonl.close()
        self.csv_fh.close()


def default_workers() -> int:
    """Front-end workers for a folder: one per core the process may use (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _load_and_prepare(analyzer, src):
    """One photo through decoding and the front end -> (rgb, prepare_faces' triple); raises
    BadImageError for what is not a readable image."""
    if isinstance(src, tuple):
        raise BadImageError(f"{src[1]}: not an image file (unknown suffix)")
    rgb = as_rgb(src)
    return rgb, analyzer.prepare_faces(rgb)


_PARENT = None  # the analyzer a forked front-end process copies (set just before the fork)
_CHILD = None


def _child_init():
    global _CHILD
    _CHILD = _PARENT.worker_copy()


def _child_task(src):
    """In a front-end process: one photo -> prepare_faces' triple (the photo itself stays there), or
    the BadImageError it raised."""
    try:
        return _load_and_prepare(_CHILD, src)[1]
    except BadImageError as e:
        return e


def _child_init_classifier():
    """A front-end process that classifies too: its own ONNX Runtime session (one thread), not the
    parent's copied by the fork."""
    global _CHILD
    from ..engine.onnx_runtime import OnnxClassifier
    _child_init()
    _CHILD.onnx = OnnxClassifier(_PARENT.onnx.path, threads=1)


def _child_chunk(srcs):
    """In a front-end process that classifies: a run of photos -> per photo its finished face records
    (the faces of the run through the model in one batch, as the one-process path batches them), or
    the BadImageError it raised."""
    out = [_child_task(src) for src in srcs]
    faces = iter(_CHILD.classify_prepared([r for r in out if not isinstance(r, BadImageError)]))
    return [r if isinstance(r, BadImageError) else next(faces) for r in out]


def _forks() -> bool:
    import multiprocessing as mp
    return "fork" in mp.get_all_start_methods()


def _forked_imap(analyzer, workers: int, init, task, jobs, chunksize: int = 1):
    """`task` over `jobs` in `workers` forked processes, results in order; each process starts with
    `init`, which copies `analyzer` (its landmarker loaded once, before the fork)."""
    import multiprocessing as mp
    global _PARENT
    analyzer.landmarker
    _PARENT = analyzer
    try:
        with mp.get_context("fork").Pool(workers, init) as pool:
            yield from pool.imap(task, jobs, chunksize=chunksize)
    finally:
        _PARENT = None


def classified_in_order(analyzer, items, workers: int, keep_rgb: bool, per_batch: int):
    """(name, rgb, faces) or (name, BadImageError) per item, in input order; the faces of the good
    photos among each run of `per_batch` items go through the model in one batch. With workers > 1,
    no photos needed back (rgb is then None) and a model on ONNX Runtime, each worker process runs its
    runs of photos from decoding to face records, so that the parent only writes (the parent's model
    calls took a third of a core from the workers); else the workers run the front end
    (`prepared_in_order`) and the model runs here."""
    if workers > 1 and not keep_rgb and analyzer.onnx is not None and _forks():
        runs = [items[i:i + per_batch] for i in range(0, len(items), per_batch)]
        done = _forked_imap(analyzer, workers, _child_init_classifier, _child_chunk, [[src for _, src in r] for r in runs])
        for run, res in zip(runs, done):
            for (name, _), r in zip(run, res):
                yield (name, r) if isinstance(r, BadImageError) else (name, None, r)
        return
    run = []  # (name, rgb, prepared) or (name, error) of the current run of items

    def finish():
        good = [g for g in run if not isinstance(g[1], BadImageError)]
        faces = iter(analyzer.classify_prepared([g[2] for g in good]) if good else ())
        for g in run:
            yield g if isinstance(g[1], BadImageError) else (g[0], g[1], next(faces))
    for got in prepared_in_order(analyzer, items, workers, keep_rgb):
        run.append(got)
        if len(run) == per_batch:
            yield from finish()
            run = []
    yield from finish()


def prepared_in_order(analyzer, items, workers: int, keep_rgb: bool = True):
    """(name, rgb, prepared) or (name, BadImageError) per item, in input order. With workers > 1 the
    photos are decoded and run through the front end `workers` at a time: in that many processes
    (forked, each with its own detector and landmarker) when the photos themselves are not needed
    back (`keep_rgb` False; rgb is then None), else on that many threads (decoding, LiteRT, OpenCV
    and dlib work outside Python's lock, the rest does not), a bounded number ahead."""
    if workers <= 1:
        for name, src in items:
            try:
                yield (name, *_load_and_prepare(analyzer, src))
            except BadImageError as e:
                yield name, e
        return
    if not keep_rgb and _forks():
        done = _forked_imap(analyzer, workers, _child_init, _child_task, [src for _, src in items], chunksize=2)
        for (name, _), r in zip(items, done):
            yield (name, r) if isinstance(r, BadImageError) else (name, None, r)
        return
    analyzer.landmarker  # loaded once, before the worker threads share it
    import threading
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    local = threading.local()

    def task(src):
        if not hasattr(local, "fa"):
            local.fa = analyzer.worker_copy()
        try:
            return _load_and_prepare(local.fa, src)
        except BadImageError as e:
            return e
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ferlab-frontend") as pool:
        ahead = deque()
        it = iter(items)
        for name, src in it:  # keep a few photos per worker in flight
            ahead.append((name, pool.submit(task, src)))
            if len(ahead) >= 4 * workers:
                break
        while ahead:
            name, fut = ahead.popleft()
            nxt = next(it, None)
            if nxt is not None:
                ahead.append((nxt[0], pool.submit(task, nxt[1])))
            r = fut.result()
            yield (name, r) if isinstance(r, BadImageError) else (name, *r)


def run_batch(analyzer, items, out_dir: Path, annotate: bool, progress: bool, on_faces=None,
              images_per_batch: int = 8, workers: int = 1):
    """items: (display name, source: path, array, or ('not-image', path)). Returns (results,
    skipped); results hold the faces per photo (and the annotated file when asked for). The faces of
    `images_per_batch` photos go through the model together; `workers` processes (threads when
    annotated copies are asked for) run the front end (decoding, detection, landmarks, alignment)
    ahead of the model, and the model too when it runs on ONNX Runtime (`classified_in_order`).
    Rows are written in input order, and are the same for any number of workers."""
    from tqdm import tqdm

    from .draw import draw_faces
    writer = ResultWriter(out_dir, list(analyzer.labels))
    results, skipped = [], []
    bar = tqdm(total=len(items), desc="photos", unit="photo", disable=not progress)
    try:
        for got in classified_in_order(analyzer, items, workers, annotate, images_per_batch):
            bar.update(1)
            if isinstance(got[1], BadImageError):
                skipped.append({"input": got[0], "reason": str(got[1])})
                continue
            name, rgb, faces = got
            if not faces:
                skipped.append({"input": name, "reason": "no face found"})
                continue
            writer.write(name, faces)
            rec = {"input": name, "faces": faces}
            if annotate:
                annotated = out_dir / f"{len(results):04d}_{Path(name).stem}_annotated.png"
                if len(items) == 1:
                    annotated = out_dir / f"{Path(name).stem}_annotated.png"
                write_image(annotated, draw_faces(rgb, faces))
                rec["annotated"] = str(annotated)
            results.append(rec)
            if on_faces:
                on_faces(rec)
    finally:
        bar.close()
        writer.close()
    return results, skipped


def write_image(path: Path, rgb: np.ndarray) -> None:
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write the image")
