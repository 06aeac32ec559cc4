"""Probe (not a recorded benchmark of the shipped detector): can BlazeFace skip passes and keep its
recall? Two schedules, simulated from the exhaustive per-pass outputs of the detection benchmark's
images (multiface seed 0, 450 pasted frames, every fourth twperformers photo, 1,000 FER+ crops, the
astronaut), with the same suppression and second looks as the shipped detector:

- evidence-gated tiles: a tile runs only where a pass already run (the whole frame, then the tile
  level one octave coarser) holds a candidate scoring at least tau that no face found so far
  explains; tau None runs every tile (the shipped schedule);
- fewer whole-frame views: only some of the four padded views.

Per variant: recall by face side, false positives per image, and network passes per image (the
detector's cost: one pass is about 1.4 ms on one core).

    .venv/bin/python benchmarks/detection_schedule_probe.py -> benchmarks/results/detection_schedule_probe.json
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detection as D  # noqa: E402
from ferlab.engine.profiling import git_commit, machine_info, now_utc  # noqa: E402
from ferlab.faces.blazeface import BlazeFaceDetector  # noqa: E402

det = None  # set in main
EV = 0.01  # candidates kept as evidence from this score up

def per_window(rgb):
    rgb = np.ascontiguousarray(rgb[..., :3]) if rgb.ndim == 3 else np.repeat(rgb[:, :, None], 3, 2)
    h, w = rgb.shape[:2]
    smallest = min(det.min_face * 0.6, max(h, w) * 0.25)
    out = []
    ms0 = det.min_score
    for x0, y0, side, pad, largest in det.windows(h, w):
        whole = side >= max(h, w)
        sub = rgb if whole else rgb[y0:y0 + side, x0:x0 + side]
        det.min_score = EV
        b, k, s = det._run(sub, pad)
        det.min_score = ms0
        off = np.array([x0, y0], np.float32)
        evid = (b + np.tile(off, 2), s)
        if len(s):
            bs = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
            keep = (bs >= smallest) & (bs <= largest) & (s >= ms0)
            if not whole:
                keep &= (b[:, 0] > 1) & (b[:, 1] > 1) & (b[:, 2] < side - 1) & (b[:, 3] < side - 1)
            b, k, s = b[keep], k[keep], s[keep]
        out.append(dict(win=(x0, y0, side, pad), whole=whole, b=b + np.tile(off, 2), k=k + off, s=s, evid=evid))
    return rgb, out

def simulate(rgb, wins, tau, margin=0.0, pads=None):
    run = [x for x in wins if x["whole"] and (pads is None or x["win"][3] in pads)]
    tiles = [x for x in wins if not x["whole"]]
    levels = sorted({x["win"][2] for x in tiles}, reverse=True)
    for T in levels:
        ran = []
        for x in tiles:
            if x["win"][2] != T:
                continue
            x0, y0, side, _ = x["win"]
            ok = tau is None
            found = np.concatenate([r["b"] for r in run])
            for r in ([] if ok else run):
                eb, es = r["evid"]
                if not len(es):
                    continue
                c = (eb[:, :2] + eb[:, 2:]) / 2
                if len(found):  # evidence explained by a face already found does not count
                    inside = ((c[:, None, 0] >= found[None, :, 0]) & (c[:, None, 0] <= found[None, :, 2]) &
                              (c[:, None, 1] >= found[None, :, 1]) & (c[:, None, 1] <= found[None, :, 3])).any(1)
                    es = np.where(inside, 0.0, es)
                m = (es >= tau) & (c[:, 0] >= x0 - margin * side) & (c[:, 0] < x0 + side * (1 + margin)) & (c[:, 1] >= y0 - margin * side) & (c[:, 1] < y0 + side * (1 + margin))
                if m.any():
                    ok = True
                    break
            if ok or tau is None:
                ran.append(x)
        run += ran
    looks = {"n": 0}
    real = det._second_look

    def counted(*a):  # the detector's own merge, its second looks counted as passes
        looks["n"] += 1
        return real(*a)
    det._second_look = counted
    try:
        out = det.merge(rgb, np.concatenate([r["b"] for r in run]), np.concatenate([r["k"] for r in run]),
                        np.concatenate([r["s"] for r in run]), tiled=len(wins) > len(det.WHOLE_FRAME_PADS))
    finally:
        det._second_look = real
    return out, len(run) + looks["n"]


def main():
    global det
    det = BlazeFaceDetector()
    res = {}
    TAUS = [None, 0.01, 0.02, 0.05, 0.1]
    crops, pasted, tw, multi = D.make_sets(False, seed=0)
    rng = np.random.RandomState(1)

    def add(name, key, val):
        res.setdefault(name, {}).setdefault(key, []).append(val)
    t0 = time.time()
    for canvas, truth, sources in multi:
        rgb, wins = per_window(canvas)
        for tau in TAUS:
            d, n = simulate(rgb, wins, tau)
            f, fp = D.match(d, truth)
            sides = [b[2] - b[0] for b in truth]
            for ff, sd in zip(f, sides):
                add(f"multi tau={tau}", "24-39" if sd < 40 else "40-79" if sd < 80 else "80+", ff)
            add(f"multi tau={tau}", "fp", fp); add(f"multi tau={tau}", "passes", n)
    print("multi", time.time() - t0, flush=True)
    for canvas, truth, side in [pasted[i] for i in rng.choice(len(pasted), 450, replace=False)]:
        rgb, wins = per_window(canvas)
        for tau in TAUS:
            d, n = simulate(rgb, wins, tau)
            add(f"pasted tau={tau}", str(side), D.match(d, truth)[0][0]); add(f"pasted tau={tau}", "passes", n)
    for img in tw[::4]:
        rgb, wins = per_window(img)
        for tau in TAUS:
            d, n = simulate(rgb, wins, tau)
            add(f"tw tau={tau}", "found", bool(d)); add(f"tw tau={tau}", "passes", n)
    PADS = [None, (0.5, 0.0), (0.35, 0.0), (0.5, 0.2), (0.35, 0.2, 0.0)]
    for c in crops[:1000]:
        rgb, wins = per_window(np.stack([c] * 3, -1))
        for pads in PADS:
            d, n = simulate(rgb, wins, None, pads=pads)
            add(f"crops pads={pads}", "found", bool(d)); add(f"crops pads={pads}", "passes", n)
    for img in tw[::4]:
        rgb, wins = per_window(img)
        for pads in PADS:
            d, n = simulate(rgb, wins, 0.02, pads=pads)
            add(f"tw tau=0.02 pads={pads}", "found", bool(d)); add(f"tw tau=0.02 pads={pads}", "passes", n)
    from skimage import data
    rgb, wins = per_window(data.astronaut())
    for tau in TAUS:
        d, n = simulate(rgb, wins, tau)
        add(f"astro tau={tau}", "faces", len(d)); add(f"astro tau={tau}", "passes", n)
    table = {}
    for name, v in res.items():
        table[name] = {k: round(float(np.mean(x)), 4) for k, x in v.items()}
        table[name]["n"] = {k: len(x) for k, x in v.items() if k not in ("passes", "fp")}
        print(name, table[name])
    out = Path(__file__).resolve().parent / "results" / "detection_schedule_probe.json"
    out.write_text(json.dumps({"probe": "detection_schedule", "rows": table, "seconds": round(time.time() - t0),
                               "command": "python benchmarks/detection_schedule_probe.py", "date": now_utc(),
                               "git_commit": git_commit(), "machine": machine_info()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
