"""One CSV layout for per-face results, whichever command writes them (predict, evaluate --photos,
video): a row per face, in these columns, then a command's own columns after them.

    source   the image file, or the video
    frame    the frame's index in a video (empty for photos)
    time_s   the frame's time in seconds (empty for photos)
    face     the face's index in its photo, or its track id in a video (empty: no face found)
    x0 y0 x1 y1  its box in the image's pixels
    score    the detector's score
    label    the top emotion ("no face" when none was found)
    confidence   the top emotion's probability
    p_<name> the probability of each of the model's labels
"""
from __future__ import annotations

FACE_COLUMNS = ("source", "frame", "time_s", "face", "x0", "y0", "x1", "y1", "score", "label", "confidence")
NO_FACE = "no face"


def header(labels, extra=()) -> list[str]:
    return [*FACE_COLUMNS, *[f"p_{n}" for n in labels], *extra]


def row(source, face: dict | None, labels, index="", frame="", time_s="", extra=()) -> list:
    """One face's row (`face` None: a 'no face' row for the source)."""
    if face is None:
        return [str(source), frame, time_s, "", "", "", "", "", "", NO_FACE, "", *[""] * len(labels), *extra]
    return [str(source), frame, time_s, index, *[round(float(v), 1) for v in face["box"]], round(float(face["score"]), 4),
            face["label"], f"{face['confidence']:.5f}", *[f"{face['probs'][n]:.5f}" for n in labels], *extra]
