"""BlazeFace (Bazarevsky et al. 2019, Google MediaPipe's face detector) run with LiteRT.

The networks are Google's Apache-2.0 .tflite files, shipped inside ferlab
(`faces/blazeface_models/`, with their licence and notice), and run on `ai-edge-litert`. What runs around the network is written here: the SSD anchors, the box and
keypoint decoding, and MediaPipe's weighted non-maximum suppression.

Variants (`variant=`):
- ``short``: 128x128 input, 896 anchors (strides 8, 16); faces that fill a good part of the frame.
- ``full``: 192x192 input, 2,304 anchors (stride 4); faces up to a few metres away.
- ``back``: 256x256 input, 896 anchors (strides 16, 32).

A network sees the whole frame letterboxed to its input. Faces far smaller than the frame are
found by levels (`tiles=True`, the default), one per doubling of face size from the smallest face
asked for (`min_face`, pixels), while the whole-frame view cannot find that size. With the default
`schedule="scaled"` a level is one pass over the whole frame resized so that its smallest face
covers a quarter of the network's input side: the networks are fully convolutional, so they run on
the larger input with a larger grid of the same anchors (a 640x480 frame at min_face=40: one 512x384
pass and one 256x192; a 256x256 photo: one 208x208). `schedule="tiles"` cuts each level into
overlapping square tiles of the network's input instead, neighbours overlapping by the largest face
the level must find whole (a 640x480 frame: 35 tiles of 160 px and 6 of 320 px; a 256x256 photo 4
of 160 px): the earlier schedule, about twice the time for the same recall
(`benchmarks/results/detection.json`), and the only one for the ``full`` network, whose graph
cannot run at another input size.

A detection's `box` is BlazeFace's own (brow to chin, ear to ear); `landmark_box` is that box
moved and scaled to the framing of dlib's HOG boxes, which dlib's shape predictor was trained on
(the median relation between the two on photos where both find one face:
`python benchmarks/blazeface_framing.py`).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from .detection import Detection, iou_matrix

VARIANTS = {  # file, input side, SSD strides, anchors per cell per layer (2 with the interpolated ratio)
    "short": ("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2),
    "full": ("face_detection_full_range.tflite", 192, (4,), 1),
    "back": ("face_detection_back.tflite", 256, (16, 32, 32, 32), 2),
}
# the networks that run on a larger input than their own (the full-range network's graph cannot be
# reshaped: LiteRT refuses it, so it always looks for small faces in tiles)
RESIZABLE = {"short", "back"}
SCHEDULES = ("scaled", "tiles")  # how faces smaller than the whole-frame views find are looked for
RAW_SCORE_LIMIT = 80.0  # logits are clipped before the sigmoid, as MediaPipe does
NESTED = 0.7  # weighted_nms: a box this much inside a better one (over the smaller area) is a duplicate
# BlazeFace box -> dlib-HOG-like box: (centre x, centre y) offsets in box sides, side scale
# (medians over twperformers photos and FER+ crops where both detectors find one face;
# benchmarks/results/blazeface_framing.json)
HOG_FRAMING = {"dx": -0.0065, "dy": -0.0435, "scale": 0.9984}


class BlazeFaceUnavailable(ValueError):
    """BlazeFace's packages or model files are missing; the message says what to install."""


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr():
    """Silence what native code writes to file descriptor 2 (not Python's sys.stderr) for a moment.
    File descriptors belong to the process, so one thread at a time: two threads interleaving
    would save each other's /dev/null and leave the process without its stderr."""
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def model_dir() -> Path:
    """The folder of BlazeFace's .tflite files: FERLAB_BLAZEFACE_DIR when set, else the copies that
    ship inside ferlab."""
    env = os.environ.get("FERLAB_BLAZEFACE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "blazeface_models"


def ssd_anchors(input_size, strides, per_layer: int, offset: float = 0.5) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1] of the input's width and height, in the order the network's
    outputs come: feature maps of consecutive layers with one stride share a grid; each cell holds
    per_layer anchors per layer. `input_size`: the side of a square input, or (height, width) (the
    networks are fully convolutional: a larger input gives a larger grid of the same anchors)."""
    height, width = (input_size, input_size) if np.isscalar(input_size) else input_size
    out, i = [], 0
    strides = list(strides)
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        gy, gx = height // strides[i], width // strides[i]
        yy, xx = np.meshgrid((np.arange(gy, dtype=np.float32) + offset) / gy,
                             (np.arange(gx, dtype=np.float32) + offset) / gx, indexing="ij")
        centres = np.stack([xx.ravel(), yy.ravel()], 1)
        out.append(np.repeat(centres, per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network outputs -> (boxes (K, 4) x0 y0 x1 y1, keypoints (K, 6, 2), scores (K,)) in [0, 1] of
    the network's input (`input_size`: a square input's side, or (height, width)), for the anchors
    scoring at least min_score. BlazeFace regresses the box centre and size and six keypoints
    relative to a unit-size anchor, in input pixels."""
    height, width = (input_size, input_size) if np.isscalar(input_size) else input_size
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
    keep = np.flatnonzero(scores >= min_score)
    r = raw_boxes.reshape(len(anchors), -1)[keep] / np.tile(np.array([width, height], np.float32), 8)
    a = anchors[keep]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
    ok = (w > 0) & (h > 0)
    return boxes[ok], kps[ok], scores[keep][ok]


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou: float = 0.3, flags=None):
    """MediaPipe's blending suppression: the best remaining candidate and every candidate that
    overlaps it by more than `iou` become one detection, whose box and keypoints are the
    score-weighted mean of the group and whose score is the best one's; a weaker box nested in a kept
    one (or holding it) is dropped. With `flags` (one bool
    per candidate) also returns, per detection, whether any candidate of its group had the flag."""
    order = np.argsort(-scores, kind="stable")
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    flags = np.zeros(len(scores), bool) if flags is None else np.asarray(flags, bool)[order]
    alive = np.ones(len(scores), bool)
    out_b, out_k, out_s, out_f = [], [], [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = np.flatnonzero(alive & (iou_matrix(boxes[i], boxes)[0] > iou))
        group = np.union1d(group, [i])
        wts = scores[group][:, None]
        out_b.append((boxes[group] * wts).sum(0) / wts.sum())
        out_k.append((kps[group] * wts[:, :, None]).sum(0) / wts.sum())
        out_s.append(scores[i])
        out_f.append(bool(flags[group].any()))
        alive[group] = False
        # a weaker box nested in this one or holding it (the same face seen at another scale, IoU
        # under `iou` only because the sizes differ) is dropped, not blended
        alive &= ~(iou_matrix(boxes[i], boxes, over_smaller=True)[0] > NESTED)
    if not out_s:
        return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, bool)
    return np.array(out_b, np.float32), np.array(out_k, np.float32), np.array(out_s, np.float32), np.array(out_f)


def chunk_starts(length: int, chunk: int, overlap: float) -> list[int]:
    """Starts of as few chunks of `chunk` pixels as cover `length` pixels with neighbours overlapping
    by at least `overlap` pixels (one chunk, at 0, when it fits)."""
    if length <= chunk:
        return [0]
    n = math.ceil((length - chunk) / (chunk - overlap) - 1e-9) + 1
    return np.linspace(0, length - chunk, n).round().astype(int).tolist()


def tile_grid(h: int, w: int, tile: int, overlap: float = 0.5) -> list[tuple[int, int, int]]:
    """Square tiles (x0, y0, side) covering an h x w frame, neighbours overlapping by at least
    `overlap` (a share of the tile's side): as few tiles as that allows, so that every square of
    up to `overlap` tile sides lies whole inside one tile."""
    tile = int(min(tile, h, w))
    out = []
    for size, axis in ((w, 0), (h, 1)):
        n = max(1, math.ceil((size - tile) / (tile * (1 - overlap)) - 1e-9) + 1) if size > tile else 1
        starts = np.linspace(0, size - tile, n).round().astype(int).tolist() if n > 1 else [max(0, (size - tile) // 2)]
        out.append(starts)
    return [(x, y, tile) for y in out[1] for x in out[0]]


class BlazeFaceDetector:
    """Every face of an RGB frame, with BlazeFace's six keypoints (eyes, nose tip, mouth centre,
    ear tragions), best first. One detector serves one thread at a time (its interpreters keep
    state)."""

    # a face must cover about this share of the network input's side to be found reliably
    # (tiles sized for a sixth of the input missed many 40-79 px faces in the detection benchmark)
    MIN_FACE_FRACTION = 1 / 4

    def __init__(self, variant: str = "short", min_score: float = 0.5, nms_iou: float = 0.3,
                 tiles: bool = True, min_face: int = 40, threads: int = 1, schedule: str = "scaled"):
        if variant not in VARIANTS:
            raise ValueError(f"unknown BlazeFace variant {variant!r} (known: {', '.join(VARIANTS)})")
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError as e:
            raise BlazeFaceUnavailable(f"BlazeFace needs ai-edge-litert ({e})") from None
        fname, self.input_size, strides, per_layer = VARIANTS[variant]
        path = model_dir() / fname
        if not path.is_file():
            raise BlazeFaceUnavailable(f"{path}: BlazeFace model file missing (it ships inside ferlab: "
                                       "reinstall ferlab, or point FERLAB_BLAZEFACE_DIR at the .tflite files)")
        self.name = f"blazeface-{variant}"
        self.variant = variant
        self._strides, self._per_layer, self._path, self._threads = tuple(strides), per_layer, path, int(threads)
        self._own = self._load_net(None)  # the network at its own input size, kept for good
        self.anchors = self._own[4]
        self._nets = {}  # (height, width) of a larger input -> _load_net's tuple, least recently used first
        self.min_score, self.nms_iou = float(min_score), float(nms_iou)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown detection schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
        self.tiles, self.min_face = bool(tiles), int(min_face)
        self.schedule = schedule if variant in RESIZABLE else "tiles"
        # on tiled frames, candidates scoring under `confident` are kept only if a second,
        # centred look scores at least `verify_min`; those between `confident` and `sure` need only
        # be seen at all in the second look (a small "face" on the astronaut's mission patch, in the
        # 24 MP test of tests/test_predict_batch.py, scores high in a tile and nothing in its second look). The operating point was chosen on the detection
        # benchmark's generated frames (seed 0) and checked on a second draw (seed 1).
        self.confident, self.verify_min, self.sure = 0.7, 0.68, 0.9

    def _second_look(self, rgb: np.ndarray, box) -> float:
        """The network's score for a candidate seen again in a view centred on it, two box sides
        wide (the face then at the scale the network likes best); 0 if it finds no face of about
        that size and place there."""
        found = self._look(rgb, box)
        return 0.0 if found is None else found[2]

    def _look(self, rgb: np.ndarray, box, view_sides: float = 2.0, reach: float = 0.5):
        """(box, keypoints, score) in the frame's pixels of the best face of about `box`'s size
        whose centre is within `reach` box sides of `box`'s, in a view centred on it, `view_sides`
        box sides wide; None when there is none."""
        x0, y0, x1, y1 = (float(v) for v in box)
        face = max(x1 - x0, y1 - y0)
        view = int(round(view_sides * face))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left, top = int(round(cx - view / 2)), int(round(cy - view / 2))
        h, w = rgb.shape[:2]
        pad = max(0, -left, -top, left + view - w, top + view - h)
        img = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else rgb
        sub = img[top + pad:top + pad + view, left + pad:left + pad + view]
        b, k, s = self._run(sub)
        if not len(s):
            return None
        centre = (b[:, :2] + b[:, 2:]) / 2
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        same = np.flatnonzero((np.abs(centre - view / 2).max(1) < face * reach) & (side > face / 2) & (side < face * 2))
        if not len(same):
            return None
        i = same[np.argmax(s[same])]
        off = np.array([left, top], np.float32)
        return b[i] + np.tile(off, 2), k[i] + off, float(s[i])

    # following a face in a video: a view three box sides wide, the face's centre within one side
    # of where it was expected (a face moving a third of its size per frame is still found)
    LOOK_VIEW_SIDES, LOOK_REACH = 3.0, 1.0

    def look(self, rgb: np.ndarray, box) -> Detection | None:
        """The face near `box` (of about its size, its centre within one side of `box`'s), found by
        one network pass over a view centred on it: how a video follows a face between
        whole-frame detections."""
        rgb = np.ascontiguousarray(rgb[..., :3])
        found = self._look(rgb, box, self.LOOK_VIEW_SIDES, self.LOOK_REACH)
        if found is None or found[2] < self.min_score:
            return None
        b, k, s = found
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = max(0.0, float(b[0])), max(0.0, float(b[1])), min(float(w), float(b[2])), min(float(h), float(b[3]))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return Detection((x0, y0, x1, y1), s, self.name, keypoints=k.astype(np.float32), landmark_box=hog_like_box(b, w, h))

    # a larger input's sides are rounded up to a multiple of the network's coarsest stride; each
    # shape gets an interpreter of its own, prepared once (re-allocating one costs more than a pass).
    # An interpreter holds about 70 MB per 640x640 input: the least recently used are let go once the
    # kept ones' inputs exceed MAX_NET_PIXELS (every shape of one photo size fits: a 1280x960 photo
    # needs 640x640 chunks, 512x384 and 256x192)
    NET_MULTIPLE, MAX_NET_PIXELS = 16, 1_000_000

    def _load_net(self, shape):
        """(interpreter, input index, score output, box output, anchors) of the network prepared for
        an input of `shape` (height, width), or of its own input size (None)."""
        from ai_edge_litert.interpreter import Interpreter
        with _quiet_stderr():  # LiteRT announces its XNNPACK delegate on fd 2
            it = Interpreter(model_path=str(self._path), num_threads=self._threads)
            inp = it.get_input_details()[0]["index"]
            if shape is not None:
                it.resize_tensor_input(inp, [1, *shape, 3])
            it.allocate_tensors()
        outs = sorted(it.get_output_details(), key=lambda d: d["shape"][-1])  # scores (1), boxes (16)
        anchors = ssd_anchors(shape or self.input_size, self._strides, self._per_layer)
        return it, inp, outs[0]["index"], outs[1]["index"], anchors

    def _interpreter(self, h: int, w: int):
        """`_load_net`'s tuple for an h x w input, prepared once per shape."""
        if (h, w) == (self.input_size, self.input_size):
            return self._own
        net = self._nets.pop((h, w), None)
        if net is None:
            while self._nets and sum(a * b for a, b in self._nets) + h * w > self.MAX_NET_PIXELS:
                self._nets.pop(next(iter(self._nets)))
            net = self._load_net((h, w))
        self._nets[(h, w)] = net  # most recently used last
        return net

    def _net(self, canvas: np.ndarray, min_score: float | None = None):
        """One network pass over an RGB uint8 canvas (the network's own square input, or any sides
        that are multiples of NET_MULTIPLE) -> boxes, keypoints in the canvas's pixels, scores (those
        of at least `min_score`, by default the detector's)."""
        h, w = canvas.shape[:2]
        it, inp, score_out, box_out, anchors = self._interpreter(h, w)
        # the input scaled to [-1, 1] straight into the interpreter's own buffer, no float copy handed
        # over (benchmarks/trip_probe.py times both); the view is let go before invoke
        x = it.tensor(inp)()
        np.multiply(canvas, np.float32(1 / 127.5), out=x[0], casting="unsafe")
        x -= np.float32(1.0)
        del x
        it.invoke()
        boxes, kps, scores = decode(it.get_tensor(box_out)[0], it.get_tensor(score_out)[0], anchors, (h, w),
                                    self.min_score if min_score is None else min_score)
        size = np.array([w, h], np.float32)
        return boxes * np.tile(size, 2), kps * size, scores

    def _run(self, rgb: np.ndarray, pad: float = 0.0, min_score: float | None = None):
        """One network pass over a whole image, letterboxed (with a replicated border of `pad`
        image sides around it) -> boxes, keypoints in the image's pixels, scores (of at least
        `min_score`, by default the detector's)."""
        h, w = rgb.shape[:2]
        s = self.input_size
        m = int(round(pad * max(h, w)))
        scale = s / (max(h, w) + 2 * m)
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        small = resize_for_net(rgb, nw, nh)
        px, py = (s - nw) // 2, (s - nh) // 2
        canvas = cv2.copyMakeBorder(small, py, s - nh - py, px, s - nw - px,
                                    cv2.BORDER_REPLICATE if pad else cv2.BORDER_CONSTANT, value=0)
        boxes, kps, scores = self._net(canvas, min_score)
        boxes = (boxes - np.array([px, py, px, py], np.float32)) / scale
        kps = (kps - np.array([px, py], np.float32)) / scale
        return boxes, kps, scores

    # a level's resized frame wider or taller than this (network pixels) is cut into overlapping
    # chunks, so that no pass needs an input (and memory) the size of a 24 MP photo
    MAX_VIEW = 640
    # a level keeps faces up to this share of its tile side (network input side / scale)
    LEVEL_LARGEST = 0.7

    def levels(self, h: int, w: int) -> list[tuple[float, float]]:
        """(scale, largest face side kept, in frame pixels) of each finer level of the "scaled"
        schedule: one level per doubling of face size from `min_face` up to the sizes the
        whole-frame views find, the frame resized so that the level's smallest face covers
        MIN_FACE_FRACTION of the network's input side (the scale of the tile levels, without
        their overlap: a 256 px photo is one 208 px pass, not four 160 px tiles)."""
        if not self.tiles:
            return []
        out, side = [], max(h, w)
        tile = int(round(self.min_face / self.MIN_FACE_FRACTION))
        while tile < side:
            out.append((self.input_size / tile, tile * self.LEVEL_LARGEST))
            tile *= 2
        return out

    def _run_level(self, rgb: np.ndarray, scale: float, largest: float):
        """The faces of one level: the frame resized by `scale` and seen whole (in chunks of at
        most MAX_VIEW when larger, a face cut by a chunk's inner edge left to its neighbour) ->
        boxes, keypoints in the frame's pixels, scores."""
        h, w = rgb.shape[:2]
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        img = resize_for_net(rgb, nw, nh)
        # neighbouring chunks overlap by more than the largest face of the level (in network pixels)
        overlap = min(self.MAX_VIEW / 2, 1.25 * largest * scale)
        chunks = [(x, y, min(self.MAX_VIEW, nw), min(self.MAX_VIEW, nh))
                  for y in chunk_starts(nh, self.MAX_VIEW, overlap) for x in chunk_starts(nw, self.MAX_VIEW, overlap)]
        q = self.NET_MULTIPLE
        out_b, out_k, out_s = [], [], []
        for x, y, cw, ch in chunks:
            sub = img[y:y + ch, x:x + cw]
            canvas = cv2.copyMakeBorder(sub, 0, -ch % q, 0, -cw % q, cv2.BORDER_CONSTANT, value=0)
            b, k, s = self._net(canvas)
            if len(s) and len(chunks) > 1:
                keep = np.ones(len(s), bool)
                if x > 0:
                    keep &= b[:, 0] > 1
                if y > 0:
                    keep &= b[:, 1] > 1
                if x + cw < nw:
                    keep &= b[:, 2] < cw - 1
                if y + ch < nh:
                    keep &= b[:, 3] < ch - 1
                b, k, s = b[keep], k[keep], s[keep]
            off = np.array([x, y], np.float32)
            out_b.append((b + np.tile(off, 2)) / scale)
            out_k.append((k + off) / scale)
            out_s.append(s)
        return np.concatenate(out_b), np.concatenate(out_k), np.concatenate(out_s)

    # the whole frame is seen as it is and with replicated borders of these shares of its side, so
    # that a face filling the frame (a face crop, a selfie) also appears at the scale the network
    # wants (FER+ test crops found with these four: benchmarks/results/detection.json)
    # The plain view comes first: what it finds decides whether the bordered ones run (__call__).
    WHOLE_FRAME_PADS = (0.0, 0.5, 0.35, 0.2)

    def windows(self, h: int, w: int) -> list[tuple[int, int, int, float, float]]:
        """(x0, y0, side, pad, largest face side kept) of every pass of the tile schedule over a
        frame: the whole frame with and without borders, and, for frames much larger than the
        smallest face, a pyramid of tile levels with 50 % overlap (the scaled schedule's levels:
        `levels`). A level of tile side T finds faces of T/4 to T/2 (a larger
        face may be cut by a tile edge and is left to the next level)."""
        side = max(h, w)
        out = [(0, 0, side, pad, np.inf) for pad in self.WHOLE_FRAME_PADS]
        if self.tiles:
            tile = int(round(self.min_face / self.MIN_FACE_FRACTION))
            while tile < side:
                # neighbouring tiles overlap by the largest face this level must find whole: half a
                # tile, or, at the last level, the smallest face the whole frame finds (a quarter of
                # its side) when that is less (a 256 px photo: 2 x 2 tiles of 160 px, not 3 x 3)
                needed = min(tile / 2, self.MIN_FACE_FRACTION * side) if 2 * tile >= side else tile / 2
                out += [(x, y, t, 0.0, t / 2) for x, y, t in tile_grid(h, w, tile, overlap=needed / tile)]
                tile *= 2
        return out

    # the unpadded whole-frame view finds faces up to about 0.7 of the frame's side (twperformers'
    # portraits: faces of 0.48-0.71 of the side, every one found by that view alone); the padded views
    # are there for faces larger than that. Once the unpadded view holds a confident face of at least
    # LARGE_FACE of the side, no face needing a padded view fits beside it (0.45 + 0.7 > 1): the padded
    # views are skipped (`skip_padded=False` runs every view)
    LARGE_FACE, LARGE_FACE_SCORE = 0.45, 0.7
    # A finer level whose smallest face the plain whole-frame view still sees at PROPOSAL_SIDE network
    # pixels or more (a 256 px photo's one level at min_face 40: 20 px) runs only where that view saw
    # something: a candidate scoring PROPOSAL_SCORE or more outside the faces it found with confidence
    # (`confident`), or a face it found of the level's sizes (whose box the level's would refine).
    # Faces of the level's sizes that the level finds score that much in the whole-frame view (every
    # one of 40-64 px on 256 px frames) and most portraits show nothing else, so their level pass is skipped
    # (`python benchmarks/level_proposals_probe.py`; `skip_levels=False` runs every level)
    PROPOSAL_SIDE, PROPOSAL_SCORE = 20.0, 0.05
    # a found face up to this share of the level's largest face counts as of the level's sizes (the
    # level's box of it, a little smaller, can pass the level's size limit and blend in): at 1.0 the
    # boxes of 16 ExpW and 3 SFEW photos moved by 1-3 px against every level run, at 1.15 of 1 and 1
    LEVEL_SIZED = 1.15

    def proposes(self, h: int, w: int, scale: float) -> bool:
        """Whether the plain whole-frame view decides if the level of `scale` runs (PROPOSAL_SIDE)."""
        smallest = self.input_size / scale * self.MIN_FACE_FRACTION  # the level's smallest face, frame pixels
        return smallest * self.input_size / max(h, w) >= self.PROPOSAL_SIDE

    @staticmethod
    def outside_faces(weak: np.ndarray, found: np.ndarray) -> int:
        """How many `weak` boxes lie outside every `found` box: their centre not inside one, and not
        mostly (over the smaller area) within one."""
        if not len(weak) or not len(found):
            return len(weak)
        c = (weak[:, :2] + weak[:, 2:]) / 2
        inside = ((c[:, None, 0] >= found[None, :, 0]) & (c[:, None, 0] <= found[None, :, 2])
                  & (c[:, None, 1] >= found[None, :, 1]) & (c[:, None, 1] <= found[None, :, 3])).any(1)
        nested = (iou_matrix(weak, found, over_smaller=True) > 0.5).any(1)
        return int(np.sum(~inside & ~nested))

    def __call__(self, rgb: np.ndarray, skip_padded: bool = True, skip_levels: bool = True) -> list[Detection]:
        rgb = np.ascontiguousarray(rgb[..., :3]) if rgb.ndim == 3 else np.repeat(rgb[:, :, None], 3, 2)
        h, w = rgb.shape[:2]
        all_b, all_k, all_s, all_whole = [], [], [], []
        smallest = min(self.min_face * 0.6, max(h, w) * 0.25)  # small frames: faces of a quarter of the frame

        def keep(b, k, s, largest, whole):
            if len(s):
                bs = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
                ok = (bs >= smallest) & (bs <= largest)
                b, k, s = b[ok], k[ok], s[ok]
            all_b.append(b)
            all_k.append(k)
            all_s.append(s)
            all_whole.append(np.full(len(s), whole))

        if self.schedule == "tiles":
            windows = self.windows(h, w)
            levels = []
        else:
            windows = [(0, 0, max(h, w), pad, np.inf) for pad in self.WHOLE_FRAME_PADS]
            levels = self.levels(h, w)
        multi = len(windows) > len(self.WHOLE_FRAME_PADS) or bool(levels)
        proposing = [skip_levels and self.proposes(h, w, scale) for scale, _ in levels]
        skip, proposals = False, 0
        for x0, y0, side, pad, largest in windows:
            whole = side >= max(h, w)
            if whole and pad > 0 and skip:
                continue
            sub = rgb if whole else rgb[y0:y0 + side, x0:x0 + side]
            if whole and pad == 0 and any(proposing):
                b, k, s = self._run(sub, pad, min_score=min(self.min_score, self.PROPOSAL_SCORE))
                # a face found less surely, or of the level's sizes (its boxes blend with the level's),
                # may gain from the level: it proposes too
                sides = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
                level_sized = sides <= self.LEVEL_SIZED * max(lg for (_, lg), p in zip(levels, proposing) if p)
                sure = s >= self.confident
                proposals = self.outside_faces(b[~sure], b[sure]) + int(np.sum(sure & level_sized))
                found = s >= self.min_score
                b, k, s = b[found], k[found], s[found]
            else:
                b, k, s = self._run(sub, pad)
            if not whole and len(s):  # a face cut by a tile edge is left to another window
                cut = (b[:, 0] > 1) & (b[:, 1] > 1) & (b[:, 2] < side - 1) & (b[:, 3] < side - 1)
                b, k, s = b[cut], k[cut], s[cut]
            if whole and pad == 0 and skip_padded and len(s):
                sides = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
                ok = (sides >= smallest) & (sides >= self.LARGE_FACE * max(h, w)) & (s >= self.LARGE_FACE_SCORE)
                skip = bool(np.any(ok))
            off = np.array([x0, y0], np.float32)
            keep(b + np.tile(off, 2), k + off, s, largest, whole)
        for (scale, largest), proposed in zip(levels, proposing):
            if proposed and not proposals:
                continue
            keep(*self._run_level(rgb, scale, largest), largest, False)
        return self.merge(rgb, np.concatenate(all_b), np.concatenate(all_k), np.concatenate(all_s), tiled=multi,
                          whole=np.concatenate(all_whole))

    def merge(self, rgb: np.ndarray, boxes, kps, scores, tiled: bool, whole=None) -> list[Detection]:
        """Every pass's candidates (in the frame's pixels) -> the frame's detections: weighted
        suppression, then, on a frame with finer levels (`tiled`), a second look at each candidate
        the network is not sure of; boxes clipped to the frame. `whole`: per candidate, whether a
        whole-frame view found it."""
        h, w = rgb.shape[:2]
        boxes, kps, scores, seen_whole = weighted_nms(boxes, kps, scores, self.nms_iou, flags=whole)
        out = []
        for b, k, s, sw in zip(boxes, kps, scores, seen_whole):
            # a frame seen at several scales is looked at many times over: a candidate the network is
            # not sure of must hold up in a second look centred on it, unless the unscaled whole-frame
            # view (the only look a small frame gets) found it with confidence
            if tiled and s < self.sure and not (sw and s >= self.confident):
                look = self._second_look(rgb, b)
                # a candidate smaller than the smallest face asked for is a bonus, not a promise: it
                # must pass the look outright (a 27 px "face" on the astronaut's mission patch, in the
                # 24 MP test of tests/test_predict_batch.py, scores 0.77 in the 0.8x level and passed
                # only the lenient test)
                small = max(b[2] - b[0], b[3] - b[1]) < self.min_face
                if look < self.verify_min and not (s >= self.confident and look > 0 and not small):
                    continue
            x0, y0 = max(0.0, float(b[0])), max(0.0, float(b[1]))
            x1, y1 = min(float(w), float(b[2])), min(float(h), float(b[3]))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            out.append(Detection((x0, y0, x1, y1), float(s), self.name, keypoints=k.astype(np.float32),
                                 landmark_box=hog_like_box(b, w, h)))
        return out


def resize_for_net(img: np.ndarray, nw: int, nh: int) -> np.ndarray:
    """`img` resized to nw x nh for a network pass: pixel-area averaging to shrink it, bilinear to
    enlarge it. (A light blur and bilinear interpolation instead of area averaging between half and
    full size finds the same faces for 2 % less detector time, but moves the boxes enough to change
    dlib's points and, through them, the default's labels of 14 ExpW test faces, 11 for the worse:
    `python benchmarks/detection_resize_probe.py`. Not adopted.)"""
    h, w = img.shape[:2]
    if (nw, nh) == (w, h):
        return img
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if nw < w or nh < h else cv2.INTER_LINEAR)


def hog_like_box(box, w: int, h: int) -> tuple[float, float, float, float]:
    """A BlazeFace box moved and scaled to the framing of dlib's HOG boxes (HOG_FRAMING)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0)
    cx = (x0 + x1) / 2 + HOG_FRAMING["dx"] * side
    cy = (y0 + y1) / 2 + HOG_FRAMING["dy"] * side
    half = side * HOG_FRAMING["scale"] / 2
    return (cx - half, cy - half, cx + half, cy + half)
