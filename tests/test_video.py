"""`ferlab video`: tracking that never swaps ids, smoothing with a time constant in seconds,
tables that match the per-photo results, outputs written as the video is read, bad sources."""
import csv
import json
import os
import subprocess
import sys
import wave

import cv2
import numpy as np
import pytest

from ferlab.app.video import IoUTracker, Smoother, open_video


def test_crossing_faces_keep_their_ids_and_a_newcomer_gets_a_new_one():
    rng = np.random.RandomState(0)
    tr = IoUTracker()
    seen = {"A": set(), "B": set(), "C": set()}
    for f in range(40):
        boxes = {"A": (10 + 8 * f, 100, 70 + 8 * f, 160), "B": (330 - 8 * f, 110, 390 - 8 * f, 170)}
        if f >= 20:
            boxes["C"] = (500, 300, 560, 360)
        names = list(boxes)
        rng.shuffle(names)  # detection order says nothing
        ids = tr.update([boxes[n] for n in names], f)
        assert len(set(ids)) == len(ids)
        for n, i in zip(names, ids):
            seen[n].add(i)
    assert all(len(v) == 1 for v in seen.values()), seen            # nobody changed id, nobody swapped
    (a,), (b,), (c,) = seen["A"], seen["B"], seen["C"]
    assert len({a, b, c}) == 3 and c == 3                            # the newcomer got a new id


def test_ids_are_not_reused_after_a_face_leaves():
    tr = IoUTracker(max_missed=2)
    assert tr.update([(0, 0, 50, 50)], 0) == [1]
    for f in range(1, 5):
        tr.update([], f)
    assert tr.update([(0, 0, 50, 50)], 5) == [2]


@pytest.mark.parametrize("fps", [10, 30, 60])
def test_smoothing_follows_its_time_constant_in_seconds(fps):
    tau = 0.4
    sm = Smoother(["a", "b"], smooth_seconds=tau, hysteresis=0.05)
    for k in range(fps):                                  # one second of "a"
        sm.update(1, k / fps, [1.0, 0.0])
    values = {}
    for k in range(fps, 3 * fps):                         # then "b"
        s, label = sm.update(1, k / fps, [0.0, 1.0])
        values[round(k / fps - (fps - 1) / fps, 6)] = (s[1], label)
    at_tau = min(values, key=lambda t: abs(t - tau))
    assert values[at_tau][0] == pytest.approx(1 - np.exp(-at_tau / tau), abs=1e-6)   # 63 % after tau
    flip = min(t for t, (p, lab) in values.items() if lab == 1)
    # the label flips once b leads by the hysteresis margin: p_b > 0.525, t = tau * ln(1 / 0.475)
    assert flip == pytest.approx(tau * np.log(1 / 0.475), abs=1.01 / fps)


def test_smoothing_off_is_the_frames_own_probabilities():
    sm = Smoother(["a", "b"], smooth_seconds=0)
    assert sm.update(1, 0.0, [0.9, 0.1])[1] == 0
    s, label = sm.update(1, 0.033, [0.49, 0.51])
    assert s.tolist() == [0.49, 0.51] and label == 1
    with pytest.raises(ValueError):
        Smoother(["a"], smooth_seconds=-1)


def face_frames(n, faces=1, size=(640, 480)):
    """Frames of real faces (the astronaut's) moving across a gray canvas."""
    from skimage import data
    img = data.astronaut()
    head = img[40:210, 130:310]
    out = []
    for f in range(n):
        frame = np.full((size[1], size[0], 3), 110, np.uint8)
        for k in range(faces):  # one face crosses the frame; four move in their own quarter
            side = 120 if faces == 1 else 100
            span = size[0] - side - 40 if faces == 1 else 180
            x = int(20 + (k // 2) * 320 + span * f / max(1, n - 1))
            y = 30 + (k % 2) * 230
            frame[y:y + side, x:x + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
        out.append(frame)
    return out


def write_video(path, frames, fps=30):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()


@pytest.fixture(scope="module")
def analyzer():
    from ferlab.app.analyzer import FaceAnalyzer
    return FaceAnalyzer()


def test_table_matches_per_photo_results_with_smoothing_off(tmp_path, analyzer):
    from ferlab.app.video import VideoAnalyzer, run_video
    path = tmp_path / "one.mp4"
    write_video(path, face_frames(12))
    r = run_video(VideoAnalyzer(analyzer, smooth_seconds=0, detect_every=1), path, tmp_path / "out", write_video=False,
                  progress=False)
    assert r["frames_analysed"] == 12 and "stopped_early" not in r
    rows = list(csv.DictReader(open(tmp_path / "out" / "frames.csv")))
    cap = cv2.VideoCapture(str(path))
    for i in range(12):
        ok, bgr = cap.read()
        faces = analyzer.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        mine = [x for x in rows if int(x["frame"]) == i]
        assert len(mine) == len(faces) == 1
        assert mine[0]["label"] == faces[0]["label"] and mine[0]["face"] == "1"
        for n in analyzer.labels:
            assert float(mine[0][f"p_{n}"]) == pytest.approx(faces[0]["probs"][n], abs=1e-5)
            assert float(mine[0][f"smoothed_{n}"]) == pytest.approx(faces[0]["probs"][n], abs=1e-5)
    assert abs(float(rows[3]["time_s"]) - 3 / 30) < 1e-6


def test_four_face_video_writes_every_output(tmp_path):
    path = tmp_path / "four.mp4"
    write_video(path, face_frames(16, faces=4))
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "video", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = tmp_path / "o"
    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert len({x["face"] for x in rows}) == 4 and len(rows) == 16 * 4
    s = json.loads((out / "summary.json").read_text())
    assert len(s["faces"]) == 4 and all(f["frames"] == 16 for f in s["faces"].values())
    assert all(f["dominant"] == "happiness" for f in s["faces"].values())
    assert len(list(out.glob("timeline_face*.png"))) == 4
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    import av  # H.264, which browsers play (MPEG-4 Part 2 they do not)
    with av.open(str(out / "annotated.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    assert s["annotated_video_codec"] == "h264" and "annotated video" in p.stdout and "(h264)" in p.stdout
    assert len((out / "frames.jsonl").read_text().splitlines()) == 16


def frames_folder(path, frames):
    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(path / f"f{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return path


def test_detecting_every_k_frames_follows_faces_in_between(tmp_path, analyzer, monkeypatch):
    from ferlab.app.video import VideoAnalyzer
    from ferlab.faces.detection import iou_matrix
    folder = frames_folder(tmp_path / "f", face_frames(15))
    every = list(VideoAnalyzer(analyzer, smooth_seconds=0, detect_every=1).frames(folder))
    calls = []
    real = analyzer.detect
    monkeypatch.setattr(analyzer, "detect", lambda rgb: calls.append(1) or real(rgb))
    followed = list(VideoAnalyzer(analyzer, smooth_seconds=0, detect_every=5).frames(folder))
    assert len(calls) == 3  # frames 0, 5 and 10
    assert [r["faces"][0]["detected"] for r in followed] == [i % 5 == 0 for i in range(15)]
    for a, b in zip(every, followed):
        assert len(a["faces"]) == len(b["faces"]) == 1 and b["faces"][0]["face_id"] == 1
        assert iou_matrix([a["faces"][0]["box"]], [b["faces"][0]["box"]])[0, 0] > 0.8
        assert a["faces"][0]["label"] == b["faces"][0]["label"]
        assert b["faces"][0]["score"] > 0.5  # the network's own score of the followed face


def test_a_followed_face_that_leaves_is_dropped_at_once(tmp_path, analyzer):
    from ferlab.app.video import VideoAnalyzer
    frames = face_frames(12)
    for f in frames[7:]:
        f[:] = 110  # the face is gone from frame 7 on
    recs = list(VideoAnalyzer(analyzer, detect_every=10).frames(frames_folder(tmp_path / "f", frames)))
    assert [len(r["faces"]) for r in recs] == [1] * 7 + [0] * 5


def test_follow_refuses_a_box_off_the_frame():
    from ferlab.app.video import follow_by_landmarks as follow
    from ferlab.app.video import offsets
    lm = np.stack(np.meshgrid(np.linspace(600, 700, 17), np.linspace(10, 110, 4)), -1).reshape(-1, 2)[:68]
    framing = (offsets((590, 0, 710, 120), lm), offsets((590, 0, 710, 120), lm), 0.9, "blazeface-short")
    assert follow(framing, lm, (480, 640)) is None          # most of the box is right of a 640 px frame
    assert follow(framing, lm - [300, 0], (480, 640)).box == pytest.approx((290, 0, 410, 120))
    assert follow(None, lm, (480, 640)) is None


def test_folder_of_frames_and_stride(tmp_path, analyzer):
    from ferlab.app.video import VideoAnalyzer
    for i, f in enumerate(face_frames(12)):  # the face moves 1.3 of its box sides between analysed frames
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    recs = list(VideoAnalyzer(analyzer).frames(tmp_path, stride=2, fps=10))
    assert [r["frame"] for r in recs] == [0, 2, 4, 6, 8, 10]
    assert [r["time"] for r in recs] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(len(r["faces"]) == 1 and r["faces"][0]["face_id"] == 1 for r in recs)


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("badvideo")
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("not a video at all\n" * 50)
    write_video(d / "full.mp4", face_frames(30))
    data = (d / "full.mp4").read_bytes()
    (d / "half.mp4").write_bytes(data[: len(data) // 2])  # mp4: the index (moov) is at the end, now gone
    w = cv2.VideoWriter(str(d / "full.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for f in face_frames(30):
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    data = (d / "full.avi").read_bytes()
    (d / "half.avi").write_bytes(data[: len(data) // 2])  # frames decode until the cut
    cv2.imwrite(str(d / "photo.jpg"), cv2.cvtColor(face_frames(1)[0], cv2.COLOR_RGB2BGR))
    (d / "photo_renamed.mp4").write_bytes((d / "photo.jpg").read_bytes())
    with wave.open(str(d / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000) / 5) * 3000).astype(np.int16).tobytes())
    return d


@pytest.mark.parametrize("name,needle", [("missing.mp4", "no such file"), ("empty.mp4", "empty file"),
                                         ("notes.mp4", "cannot open as a video"),
                                         ("audio.wav", "no readable video frames|cannot open as a video"),
                                         ("half.mp4", "cannot open as a video|no readable video frames"),
                                         ("7", "cannot open webcam 7"),
                                         ("photo.jpg", "a still image, not a video .*ferlab predict"),
                                         ("photo_renamed.mp4", "a still image, not a video")])
def test_bad_sources_are_one_line(bad_sources, name, needle, tmp_path):
    import re
    src = name if name.isdigit() else str(bad_sources / name)
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "video", src, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-1500:]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and re.search(needle, lines[0]), lines


def test_a_video_cut_in_half_keeps_its_rows_and_says_where_it_stopped(bad_sources, tmp_path):
    src = open_video(bad_sources / "half.avi")
    frames = list(src.frames)
    assert 0 < len(frames) < 30
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "video", str(bad_sources / "half.avi"), "--out",
                        str(tmp_path / "o"), "--no-video"], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    rows = list(csv.DictReader(open(tmp_path / "o" / "frames.csv")))
    assert len({r["frame"] for r in rows}) == len(frames)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    # the container says 30 frames: the report says where reading stopped, and the exit is an error
    assert summary["frames_in_source"] == 30 and summary["stopped_early"].startswith(
        f"reading stopped at frame {len(frames)} of 30")
    assert p.returncode == 2 and "reading stopped at frame" in p.stderr and "Traceback" not in p.stderr


def test_bad_video_options_are_one_line(tmp_path):
    for args, needle in [(["--fps", "0"], "frame rate"), (["--smooth", "-1"], "time constant"),
                         (["--stride", "0"], "at least 1")]:
        p = subprocess.run([sys.executable, "-m", "ferlab.cli", "video", str(tmp_path), "--out", str(tmp_path / "o"),
                            *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                           timeout=300)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 2 and "Traceback" not in p.stderr and needle in lines[-1], (args, lines)


def test_two_looks_that_find_the_same_face_keep_it_once():
    from ferlab.app.video import distinct
    from ferlab.faces.detection import Detection
    same = Detection((100, 100, 160, 160), 0.9, "blazeface-short")
    near = {"box": np.array([98.0, 100, 158, 160]), "motion": np.zeros(4)}   # expected it here
    far = {"box": np.array([170.0, 100, 230, 160]), "motion": np.zeros(4)}   # its own face left
    other = Detection((300, 100, 360, 160), 0.9, "blazeface-short")
    kept = distinct([(same, far), (same, near), (other, {"box": np.array([300.0, 100, 360, 160]),
                                                        "motion": np.zeros(4)}), (None, near)])
    assert kept == [same, other]


def test_labels_stay_inside_the_frame():
    from ferlab.app.draw import draw_faces
    frame = np.zeros((120, 160, 3), np.uint8)
    face = {"label": "happiness", "confidence": 0.99}
    top_right = draw_faces(frame, [{**face, "box": (120, 0, 160, 40)}])
    green = np.argwhere((top_right[..., 1] > 200) & (top_right[..., 0] < 50))
    assert len(green) and green[:, 1].max() < 160 and green[:, 0].min() >= 0
    # the label's filled band, not only the box outline, is drawn: some of it lies left of the box
    assert green[:, 1].min() < 120
    bottom = draw_faces(frame, [{**face, "box": (0, 110, 30, 119)}])
    assert ((bottom[..., 1] > 200) & (bottom[..., 0] < 50)).sum() > 200  # the whole label, not clipped away
