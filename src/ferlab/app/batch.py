"""Many photos through the analyzer: results written as they come (one JSONL line and one CSV row
per face), bad or faceless inputs reported and skipped, faces of several photos classified in one
model batch, annotated copies only when asked for."""
from __future__ import annotations

import csv
import json
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


def run_batch(analyzer, items, out_dir: Path, annotate: bool, progress: bool, on_faces=None,
              images_per_batch: int = 8):
    """items: (display name, source: path, array, or ('not-image', path)). Returns (results,
    skipped); results hold the faces per photo (and the annotated file when asked for)."""
    from tqdm import tqdm

    from .draw import draw_faces
    writer = ResultWriter(out_dir, list(analyzer.labels))
    results, skipped = [], []
    bar = tqdm(total=len(items), desc="photos", unit="photo", disable=not progress)
    try:
        for start in range(0, len(items), images_per_batch):
            chunk, rgbs = [], []
            for name, src in items[start:start + images_per_batch]:
                try:
                    if isinstance(src, tuple):
                        raise BadImageError(f"{src[1]}: not an image file (unknown suffix)")
                    rgbs.append(as_rgb(src))
                    chunk.append(name)
                except BadImageError as e:
                    skipped.append({"input": name, "reason": str(e)})
                    bar.update(1)
            for name, rgb, faces in zip(chunk, rgbs, analyzer.analyze_many(rgbs)):
                bar.update(1)
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
