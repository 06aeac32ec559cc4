"""Emotion label sets and the mappings from every supported dataset's own names and codes.

ferlab's canonical order is FER+'s: neutral, happiness, surprise, sadness, anger, disgust, fear,
contempt. A model may be trained on a subset (e.g. the 7 basic classes without contempt); its
outputs always carry their label names, so probabilities are never read by position alone.
"""
from __future__ import annotations

from typing import Iterable, Sequence

CANONICAL: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
BASIC7: tuple[str, ...] = CANONICAL[:7]

# Every spelling seen in the supported datasets, folder names included -> canonical name.
SYNONYMS: dict[str, str] = {
    "neutral": "neutral", "ne": "neutral", "neu": "neutral",
    "happiness": "happiness", "happy": "happiness", "ha": "happiness", "joy": "happiness",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise", "sur": "surprise",
    "sadness": "sadness", "sad": "sadness", "sa": "sadness",
    "anger": "anger", "angry": "anger", "an": "anger",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "fe": "fear", "afraid": "fear",
    "contempt": "contempt", "co": "contempt",
}

# Integer codes of each dataset (as they appear in its files) -> canonical name.
FER2013_CODES = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise",
                 6: "neutral"}
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger",
               7: "neutral"}
# AffectNet: 8 none, 9 uncertain, 10 no-face are not expressions and are dropped by the reader.
AFFECTNET_CODES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust",
                   6: "anger", 7: "contempt"}
CKPLUS_CODES = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness",
                6: "sadness", 7: "surprise"}
JAFFE_CODES = {"NE": "neutral", "HA": "happiness", "SU": "surprise", "SA": "sadness", "AN": "anger",
               "DI": "disgust", "FE": "fear"}

DATASET_CODES = {"fer2013": FER2013_CODES, "rafdb": RAFDB_CODES, "affectnet": AFFECTNET_CODES,
                 "ckplus": CKPLUS_CODES, "jaffe": JAFFE_CODES}


class UnknownLabelError(ValueError):
    """A label that no mapping knows."""


def canonical_name(label: str) -> str:
    """Map any known spelling ('Happy', 'angry', 'SU', 'Surprised') to its canonical name."""
    key = str(label).strip().lower()
    if key not in SYNONYMS:
        raise UnknownLabelError(f"unknown emotion label {label!r}; known: {', '.join(CANONICAL)}")
    return SYNONYMS[key]


def from_code(dataset: str, code) -> str:
    """Map a dataset's integer (or letter) code to its canonical name."""
    table = DATASET_CODES[dataset]
    key = code if isinstance(code, str) and not code.strip().lstrip("-").isdigit() else int(code)
    if key not in table:
        raise UnknownLabelError(f"unknown {dataset} label code {code!r}")
    return table[key]


def resolve_label_set(labels: str | Sequence[str] | None) -> tuple[str, ...]:
    """A label set from a config value: 'fer8'/'canonical', 'basic7', or a list of names."""
    if labels is None or labels in ("fer8", "canonical", "8"):
        return CANONICAL
    if labels in ("basic7", "7"):
        return BASIC7
    if isinstance(labels, str):
        labels = [s for s in labels.split(",") if s.strip()]
    names = tuple(canonical_name(s) for s in labels)
    if len(set(names)) != len(names):
        raise ValueError(f"label set has duplicates: {names}")
    return names


def index_map(label_set: Iterable[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(label_set)}
