"""Video, webcams and streams: per-face emotion timelines.

    >>> from ferlab.app.video import VideoAnalyzer
    >>> va = VideoAnalyzer(FaceAnalyzer(), smooth_seconds=0.4)
    >>> for rec in va.frames("clip.mp4"):      # one record per analysed frame
    ...     rec["faces"]                       # [{'face_id', 'box', 'score', 'probs', 'smoothed', 'label', ...}]

Sources (`open_video`): a video file (read with OpenCV's FFmpeg backend: mp4, mov, avi, mkv, webm),
a folder of frames (sorted by name, at `fps`), a webcam index (`0`) or a stream URL (rtsp://,
http://), opened like a file.

Faces are tracked by box association: each frame's detections are matched to the live tracks (their
boxes moved by their last motion) by the Hungarian method on 1 - IoU, or, for pairs that overlap
less than `min_iou` (fast faces, large strides), on the centre distance up to `max_jump` box
sides; an unmatched
detection starts a new track (a new `face_id`); a track unseen for `max_missed` analysed frames
ends. Two faces seen in one frame are never given one id, and an id is never handed to another face.

Smoothing: per track, an exponential moving average of the probabilities with a time constant in
seconds (`smooth_seconds`; 0 = off): after dt seconds the old value keeps exp(-dt / tau) of its
weight, so the smoothed value follows a step change by 63 % after tau seconds whatever the frame
rate. The label changes only when the smoothed probability of the new label exceeds the current
label's by `hysteresis` (0.05).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from ..data.imageio import IMAGE_SUFFIXES, BadImageError, read_image
from ..faces.detection import Detection, iou_matrix
from . import face_table


class VideoError(ValueError):
    """A video source that cannot be read; the message says what is wrong."""


# --- tracking and smoothing (no I/O: tested on synthetic sequences) -----------------------------

@dataclasses.dataclass
class Track:
    face_id: int
    box: np.ndarray
    velocity: np.ndarray
    last_frame: int
    missed: int = 0


class IoUTracker:
    """Box association across frames (see the module docstring). A track's box is predicted one
    step ahead from its last motion, so faces that move or cross keep their ids."""

    def __init__(self, min_iou: float = 0.2, max_missed: int = 10, max_jump: float = 2.0):
        self.min_iou, self.max_missed, self.max_jump = float(min_iou), int(max_missed), float(max_jump)
        self.tracks: list[Track] = []
        self.next_id = 1

    def _cost(self, predicted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Matching cost: 1 - IoU for overlapping pairs (IoU >= min_iou); for pairs that do not
        overlap enough (a fast face, a large stride) 1 + the centre distance in box sides, up to
        max_jump sides; others cannot match (inf)."""
        iou = iou_matrix(predicted, boxes)
        cost = np.full(iou.shape, np.inf)
        if not iou.size:
            return cost
        ca = (predicted[:, None, :2] + predicted[:, None, 2:]) / 2
        cb = (boxes[None, :, :2] + boxes[None, :, 2:]) / 2
        side = (np.maximum(predicted[:, None, 2] - predicted[:, None, 0], 1) +
                np.maximum(boxes[None, :, 2] - boxes[None, :, 0], 1)) / 2
        dist = np.linalg.norm(ca - cb, axis=2) / side
        near = dist <= self.max_jump
        cost[near] = 1 + dist[near]
        cost[iou >= self.min_iou] = 1 - iou[iou >= self.min_iou]
        return cost

    def update(self, boxes, frame: int) -> list[int]:
        """Ids for this frame's boxes (in their order)."""
        from scipy.optimize import linear_sum_assignment
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        predicted = np.array([t.box + t.velocity * (frame - t.last_frame) for t in self.tracks]).reshape(-1, 4)
        cost = self._cost(predicted, boxes)
        ids = [0] * len(boxes)
        matched_tracks = set()
        if cost.size and np.isfinite(cost).any():
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
            for r, c in zip(rows, cols):
                if np.isfinite(cost[r, c]):
                    t = self.tracks[r]
                    steps = max(1, frame - t.last_frame)
                    t.velocity = 0.5 * t.velocity + 0.5 * (boxes[c] - t.box) / steps
                    t.box, t.last_frame, t.missed = boxes[c], frame, 0
                    ids[c] = t.face_id
                    matched_tracks.add(r)
        for i, t in enumerate(self.tracks):
            if i not in matched_tracks:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for c in range(len(boxes)):
            if not ids[c]:
                self.tracks.append(Track(self.next_id, boxes[c], np.zeros(4), frame))
                ids[c] = self.next_id
                self.next_id += 1
        return ids


class Smoother:
    """Per-track exponential smoothing with a time constant in seconds, and a hysteresis label."""

    def __init__(self, labels: list[str], smooth_seconds: float = 0.4, hysteresis: float = 0.05):
        if smooth_seconds < 0 or not math.isfinite(smooth_seconds):
            raise ValueError(f"smoothing time constant must be 0 or more seconds, not {smooth_seconds}")
        self.labels, self.tau, self.hysteresis = list(labels), float(smooth_seconds), float(hysteresis)
        self.state: dict[int, tuple[float, np.ndarray, int]] = {}  # face_id -> (time, smoothed, label index)

    def update(self, face_id: int, t: float, probs: np.ndarray) -> tuple[np.ndarray, int]:
        """(smoothed probabilities, label index) of a face at time t. With the time constant 0 both
        are the frame's own (no smoothing, no hysteresis)."""
        probs = np.asarray(probs, np.float64)
        if face_id not in self.state or self.tau == 0:
            smoothed, label = probs, int(np.argmax(probs))
        else:
            t0, prev, label = self.state[face_id]
            keep = math.exp(-max(0.0, t - t0) / self.tau)
            smoothed = keep * prev + (1 - keep) * probs
            top = int(np.argmax(smoothed))
            if top != label and smoothed[top] > smoothed[label] + self.hysteresis:
                label = top
        self.state[face_id] = (t, smoothed, label)
        return smoothed, label

    def forget(self, live_ids) -> None:
        live = set(live_ids)
        for k in [k for k in self.state if k not in live]:
            del self.state[k]


# --- sources ----------------------------------------------------------------------------------

@dataclasses.dataclass
class VideoSource:
    frames: object          # iterator of (index, seconds, rgb)
    fps: float
    n_frames: int | None    # None when unknown (webcams, streams)
    name: str
    status: dict            # filled while reading: frames_read, stopped_early, reason


def _capture_frames(cap, status, stride, max_frames):
    import cv2
    i = 0
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    try:
        while max_frames is None or i < max_frames:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            status["frames_read"] = i + 1
            if i % stride == 0:  # a frame's time from its index at the source's rate, else the stream's clock
                t = i / fps if fps > 0 else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield i, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def _quiet_video_logs() -> None:
    """FFmpeg and OpenCV print their own warnings about broken files to stderr; ferlab says what is
    wrong in one line of its own instead."""
    import os
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when the FFmpeg backend starts
    import cv2
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass


def _is_still_image(path: Path) -> bool:
    """Whether a file is a picture (by its content, whatever its name says): FFmpeg would open it as
    a one-frame video."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) <= 1 or im.format in ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def open_video(source, stride: int = 1, fps: float = 30.0, max_frames: int | None = None) -> VideoSource:
    """A frame iterator for a video file, a folder of frames, a webcam index or a stream URL."""
    _quiet_video_logs()
    import cv2
    stride = int(stride)
    if stride < 1:
        raise VideoError(f"stride must be at least 1, not {stride}")
    if not fps > 0:
        raise VideoError(f"the frame rate of a folder of frames must be positive, not {fps}")
    status = {"frames_read": 0}
    text = str(source)
    if text.isdigit():  # a webcam
        cap = cv2.VideoCapture(int(text))
        if not cap.isOpened():
            raise VideoError(f"cannot open webcam {text} (no such camera, or it is in use)")
        return VideoSource(_capture_frames(cap, status, stride, max_frames), cap.get(cv2.CAP_PROP_FPS) or fps,
                           None, f"webcam {text}", status)
    if "://" in text:  # a stream URL, opened like a file
        cap = cv2.VideoCapture(text, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise VideoError(f"{text}: cannot open the stream")
        return VideoSource(_capture_frames(cap, status, stride, max_frames), cap.get(cv2.CAP_PROP_FPS) or fps,
                           None, text, status)
    path = Path(text)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VideoError(f"{path}: no image frames in this folder")
        if max_frames is not None:
            files = files[:max_frames]

        def folder_frames():
            for i, f in enumerate(files):
                if i % stride:
                    continue
                try:
                    rgb = read_image(f, "RGB")
                except BadImageError as e:
                    status.setdefault("bad_frames", []).append(str(e))
                    continue
                status["frames_read"] = i + 1
                yield i, i / fps, rgb
        return VideoSource(folder_frames(), fps, len(files), str(path), status)
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    if _is_still_image(path):
        raise VideoError(f"{path}: a still image, not a video (for photos: ferlab predict {path})")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise VideoError(f"{path}: cannot open as a video (not a video file, or a format FFmpeg cannot read)")
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    vfps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise VideoError(f"{path}: holds no readable video frames (audio only, or corrupt)")
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return VideoSource(_capture_frames(cap, status, stride, max_frames), vfps if vfps > 0 else fps,
                       n if n > 0 else None, str(path), status)


# --- the analyzer -------------------------------------------------------------------------------

class VideoAnalyzer:
    """FaceAnalyzer over a video: tracked faces, smoothed probabilities, one record per frame.

    `detect_every` k: the detector runs over the whole frame on every k-th analysed frame (and
    whenever no face is being followed); on the frames between, each face is followed: BlazeFace
    looks for it once, in a view two box sides wide centred where its last motion puts it (one
    network pass, about 2 ms, against tens of ms for the whole frame's windows). When a look does
    not find its face (it left, turned away, or moved further than a face size), that frame is
    detected whole instead, so a face that left is dropped at once and a fast one is found again; a
    face that enters is found at the next whole-frame detection. HOG and Haar cannot look at one place: with them a face is followed by
    its landmarks (the shape predictor run in the box its previous landmarks give) until the next
    detection."""

    def __init__(self, analyzer, smooth_seconds: float = 0.4, hysteresis: float = 0.05, min_iou: float = 0.2,
                 max_missed: int = 10, detect_every: int = 5):
        self.fa = analyzer
        Smoother(analyzer.labels, smooth_seconds, hysteresis)  # a bad time constant fails here, before any reading
        if int(detect_every) < 1:
            raise ValueError(f"detect_every must be at least 1 (every frame), not {detect_every}")
        self.smooth_seconds, self.hysteresis = float(smooth_seconds), float(hysteresis)
        self.min_iou, self.max_missed, self.detect_every = min_iou, max_missed, int(detect_every)

    def frames(self, source, stride: int = 1, fps: float = 30.0, max_frames: int | None = None, video=None):
        """Yield {'frame', 'time', 'faces': [...]} per analysed frame; `video`: an open VideoSource."""
        src = video or open_video(source, stride, fps, max_frames)
        tracker = IoUTracker(self.min_iou, self.max_missed)
        smoother = Smoother(self.fa.labels, self.smooth_seconds, self.hysteresis)
        framing: dict[int, tuple] = {}  # face_id -> offsets of its boxes from its landmarks, score, detector
        followed: list[dict] = []  # the last analysed frame's faces: id, box, motion, landmarks
        since_detect = 0
        for index, t, rgb in src.frames:
            detect = since_detect % self.detect_every == 0 or not followed
            if detect:
                dets, since_detect = self.fa.detect(rgb), 0
            else:
                dets = distinct([(self.follow(rgb, f, framing.get(f["id"])), f) for f in followed])
                if len(dets) < len(followed):  # a face was not where its look expected it: see the whole frame
                    detect, since_detect = True, 0
                    dets = self.fa.detect(rgb)
            since_detect += 1
            faces = self.fa.analyze(rgb, detections=dets)  # every face of the frame through the model in one batch
            ids = tracker.update([f["box"] for f in faces], index)
            last = {f["id"]: f["box"] for f in followed}
            out, followed = [], []
            for fid, f, d in zip(ids, faces, dets):
                lm = np.asarray(f["landmarks"], np.float64)
                box = np.asarray(d.box, np.float64)
                if detect:
                    framing[fid] = (offsets(d.box, lm), offsets(d.box_for_landmarks, lm), d.score, d.detector)
                followed.append({"id": fid, "box": box, "landmarks": lm,
                                 "motion": box - last[fid] if fid in last else np.zeros(4)})
                raw = np.array([f["probs"][n] for n in self.fa.labels])
                smoothed, label = smoother.update(fid, t, raw)
                out.append({"face_id": fid, "box": f["box"], "score": f["score"], "detected": bool(detect),
                            "probs": f["probs"], "smoothed": {n: float(v) for n, v in zip(self.fa.labels, smoothed)},
                            "label": self.fa.labels[label], "confidence": float(smoothed[label])})
            live = [t_.face_id for t_ in tracker.tracks]
            smoother.forget(live)
            framing = {k: v for k, v in framing.items() if k in live}
            yield {"frame": index, "time": round(float(t), 4), "faces": out, "rgb": rgb}

    def follow(self, rgb: np.ndarray, face: dict, framing):
        """Where a face of the last analysed frame is now (a Detection), or None when it is gone."""
        predicted = face["box"] + face["motion"]
        if self.fa.detector.can_look:
            return self.fa.detector.look(rgb, predicted)
        shift = (face["motion"][:2] + face["motion"][2:]) / 2
        return follow_by_landmarks(framing, face["landmarks"] + shift, rgb.shape)


def offsets(box, lm: np.ndarray) -> np.ndarray:
    """A box as offsets from the landmarks' bounding box, in units of its width and height."""
    lo, hi = lm.min(0), lm.max(0)
    wh = np.maximum(hi - lo, 1e-6)
    b = np.asarray(box, np.float64)
    return np.concatenate([(b[:2] - lo) / wh, (b[2:] - hi) / wh])


def from_offsets(off: np.ndarray, lm: np.ndarray) -> tuple:
    lo, hi = lm.min(0), lm.max(0)
    wh = hi - lo
    return tuple(float(v) for v in np.concatenate([lo + off[:2] * wh, hi + off[2:] * wh]))


def distinct(found: list[tuple]) -> list:
    """The followed faces' Detections, each face once: when two looks found the same face (one
    of two neighbours left), it goes to the look that expected it nearest."""
    found = [(d, f) for d, f in found if d is not None]

    def miss(d, f):
        expected = f["box"] + f["motion"]
        return float(np.hypot(*((np.asarray(d.box[:2]) + d.box[2:]) / 2 - (expected[:2] + expected[2:]) / 2)))
    kept = []
    for d, f in sorted(found, key=lambda df: miss(*df)):
        if not kept or iou_matrix([d.box], [k.box for k in kept]).max() < 0.5:
            kept.append(d)
    order = {id(d): i for i, (d, _) in enumerate(found)}
    return sorted(kept, key=lambda d: order[id(d)])


def follow_by_landmarks(framing, lm: np.ndarray, shape) -> Detection | None:
    """The Detection that follows a face from its previous landmarks (for detectors that cannot
    look at one place); None when it cannot be followed (no framing from a detection, a degenerate
    shape, or a box mostly off the frame)."""
    if framing is None:
        return None
    box_off, lbox_off, score, detector = framing
    if np.min(lm.max(0) - lm.min(0)) < 4:
        return None
    lbox = from_offsets(lbox_off, lm)
    h, w = shape[:2]
    inside = max(0.0, min(lbox[2], w) - max(lbox[0], 0)) * max(0.0, min(lbox[3], h) - max(lbox[1], 0))
    if inside < 0.5 * (lbox[2] - lbox[0]) * (lbox[3] - lbox[1]):
        return None
    return Detection(box=from_offsets(box_off, lm), score=score, detector=detector, landmark_box=lbox)


# --- outputs ----------------------------------------------------------------------------------

class AnnotatedVideoWriter:
    """The annotated video: H.264 in MP4 (what browsers play) through PyAV where its FFmpeg has an
    H.264 encoder, else OpenCV's MPEG-4 Part 2 (`codec` says which was written). Frames are RGB; an
    odd width or height is padded by one pixel (H.264's 4:2:0 needs even sides)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self.frames = Path(path), float(fps), 0
        self._av = self._cv = None
        self.codec = None

    def _open(self, h: int, w: int):
        try:
            import av
            encoder = next((c for c in ("libx264", "h264", "libopenh264") if c in av.codecs_available), None)
        except ImportError:
            encoder = None
        if encoder is not None:
            from fractions import Fraction
            self._av = av.open(str(self.path), "w")
            self._stream = self._av.add_stream(encoder, rate=Fraction(self.fps).limit_denominator(1000))
            self._stream.width, self._stream.height, self._stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
            self.codec = "h264"
        else:
            import cv2
            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            self.codec = "mpeg4 (MPEG-4 Part 2; install PyAV for H.264)"

    def write(self, rgb: np.ndarray) -> None:
        if self._av is None and self._cv is None:
            self._open(*rgb.shape[:2])
        if self._av is not None:
            import av
            h, w = rgb.shape[:2]
            if h % 2 or w % 2:
                rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                self._av.mux(packet)
        else:
            import cv2
            self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._av is not None:
            for packet in self._stream.encode():
                self._av.mux(packet)
            self._av.close()
            self._av = None
        if self._cv is not None:
            self._cv.release()
            self._cv = None


def run_video(va: VideoAnalyzer, source, out_dir, stride: int = 1, fps: float = 30.0, write_video: bool = True,
              progress: bool = True, max_frames: int | None = None, log=print) -> dict:
    """Analyse a whole source, writing as it reads: OUT/frames.csv and frames.jsonl (a row per face
    per analysed frame, a 'no face' row for a frame without one), OUT/annotated.mp4 (optional),
    and at the end (also after Ctrl-C or a read error) OUT/summary.json and a timeline PNG per face."""
    import csv
    import json

    import cv2
    from tqdm import tqdm

    from .draw import draw_faces
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = open_video(source, stride, fps, max_frames)
    labels = list(va.fa.labels)
    fh_csv = open(out / "frames.csv", "w", newline="")
    fh_jsonl = open(out / "frames.jsonl", "w")
    w = csv.writer(fh_csv)
    w.writerow(face_table.header(labels, extra=(*[f"smoothed_{n}" for n in labels], "detected")))
    writer = None
    timelines: dict[int, dict] = {}
    analysed, interrupted, error = 0, False, None
    total = None if src.n_frames is None else math.ceil(min(src.n_frames, max_frames or src.n_frames) / stride)
    bar = tqdm(total=total, desc="frames", unit="frame", disable=not progress)
    try:
        for rec in va.frames(None, video=src):
            analysed += 1
            if not rec["faces"]:
                w.writerow(face_table.row(src.name, None, labels, frame=rec["frame"], time_s=rec["time"],
                                          extra=[""] * (len(labels) + 1)))
            for f in rec["faces"]:
                w.writerow(face_table.row(src.name, f, labels, index=f["face_id"], frame=rec["frame"], time_s=rec["time"],
                                          extra=(*[f"{f['smoothed'][n]:.5f}" for n in labels], int(f["detected"]))))
                tl = timelines.setdefault(f["face_id"], {"times": [], "smoothed": [], "labels": []})
                tl["times"].append(rec["time"])
                tl["smoothed"].append([f["smoothed"][n] for n in labels])
                tl["labels"].append(f["label"])
            fh_jsonl.write(json.dumps({k: v for k, v in rec.items() if k != "rgb"}) + "\n")
            fh_csv.flush()
            fh_jsonl.flush()
            if write_video:
                frame = draw_faces(rec["rgb"], [{**f, "label": f"#{f['face_id']} {f['label']}"} for f in rec["faces"]])
                if writer is None:
                    writer = AnnotatedVideoWriter(out / "annotated.mp4", max(1.0, src.fps / stride))
                writer.write(frame)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    except (cv2.error, OSError) as e:
        error = str(e)
    finally:
        bar.close()
        fh_csv.close()
        fh_jsonl.close()
        if writer is not None:
            writer.close()
    read = src.status.get("frames_read", 0)
    report = {"source": src.name, "fps": src.fps, "stride": stride, "frames_in_source": src.n_frames,
              "frames_read": read, "frames_analysed": analysed, "interrupted": interrupted,
              "smooth_seconds": va.smooth_seconds, "faces": summarise(timelines, labels, src.fps / stride)}
    if src.status.get("bad_frames"):
        report["bad_frames"] = src.status["bad_frames"]
    if writer is not None and writer.frames:
        report["annotated_video"] = str(out / "annotated.mp4")
        report["annotated_video_codec"] = writer.codec
    expected = src.n_frames if max_frames is None else min(src.n_frames or 0, max_frames) or None
    if error or (expected and not interrupted and read < expected - 1):
        report["stopped_early"] = f"reading stopped at frame {read} of {expected or '?'}" + (f" ({error})" if error else "")
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_timelines(timelines, labels, out)
    return report


def summarise(timelines: dict, labels: list[str], rate: float) -> dict:
    """Per face: first and last time seen, frames, share of its frames in each emotion (by its
    smoothed label), the dominant emotion."""
    out = {}
    for fid, tl in sorted(timelines.items()):
        n = len(tl["labels"])
        share = {name: tl["labels"].count(name) / n for name in labels}
        out[str(fid)] = {"first_seen_s": tl["times"][0], "last_seen_s": tl["times"][-1], "frames": n,
                         "share_of_time": {k: round(v, 4) for k, v in share.items()},
                         "dominant": max(share, key=share.get)}
    return out


def plot_timelines(timelines: dict, labels: list[str], out: Path) -> list[Path]:
    """One PNG per face: its smoothed probability of each emotion over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for fid, tl in sorted(timelines.items()):
        t = np.array(tl["times"])
        sm = np.array(tl["smoothed"])
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for j, name in enumerate(labels):
            ax.plot(t, sm[:, j], label=name, lw=1.4)
        ax.set_ylim(0, 1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("smoothed probability")
        ax.set_title(f"face {fid}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        fig.tight_layout()
        p = out / f"timeline_face{fid}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths
