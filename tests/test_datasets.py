"""Each reader on a small fixture that copies its dataset's real on-disk layout."""
import numpy as np
import pytest
from conftest import pattern_image, save_img

from ferlab.data.arrays import load_splits
from ferlab.data.labels import BASIC7, CANONICAL
from ferlab.data.readers import DATASET_READERS, DatasetError
from ferlab.data.splits import monte_carlo_splits, subject_kfold


def img(path, k=0):
    return save_img(path, pattern_image(k % 8, k))


def test_fer2013_csv(tmp_path):
    rows = ["emotion,pixels,Usage"]
    for i, (code, usage) in enumerate([(0, "Training"), (3, "Training"), (6, "PublicTest"), (5, "PrivateTest"),
                                       (9, "Training")]):
        rows.append(f"{code},{' '.join(['7'] * 48 * 48)},{usage}")
    rows.append(f"3,{' '.join(['7'] * 10)},Training")  # not a square image
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")
    s = DATASET_READERS["fer2013"](tmp_path, CANONICAL)
    assert [CANONICAL[i] for i in s["train"].labels] == ["anger", "happiness"]
    assert CANONICAL[s["valid"].labels[0]] == "neutral" and CANONICAL[s["test"].labels[0]] == "surprise"
    reasons = [why for _, why in s["train"].skipped]
    assert any("unknown emotion code" in r for r in reasons) and any("not a square" in r for r in reasons)


def test_fer2013_folders_and_unknown_class(tmp_path):
    for split in ("train", "test"):
        for k, cls in enumerate(["angry", "happy", "neutral", "weird"]):
            img(tmp_path / split / cls / f"{k}.png", k)
    s = DATASET_READERS["fer2013_folders"](tmp_path, BASIC7)
    assert sorted(s) == ["test", "train"] and len(s["train"]) == 3
    assert any("unknown emotion label" in why for _, why in s["train"].skipped)


def test_rafdb(tmp_path):
    lines = ["train_00001.jpg 5", "train_00002.jpg 4", "test_0001.jpg 1", "test_0002.jpg 9", "train_00003.jpg 7"]
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for k, name in enumerate(["train_00001", "train_00002", "test_0001", "test_0002"]):
        img(tmp_path / "Image" / "aligned" / f"{name}_aligned.jpg", k)
    s = DATASET_READERS["rafdb"](tmp_path, BASIC7)
    assert [BASIC7[i] for i in s["train"].labels] == ["sadness", "happiness"]  # train_00003 missing on disk
    assert [BASIC7[i] for i in s["test"].labels] == ["surprise"]
    assert any("missing file" in w for _, w in s["train"].skipped)
    assert any("unknown RAF-DB code" in w for _, w in s["train"].skipped)


def test_affectnet_csv_release(tmp_path):
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    tr = [head, "1/a.jpg,0,0,48,48,,1,0.5,0.1", "1/b.jpg,0,0,48,48,,7,0,0", "1/c.jpg,0,0,48,48,,9,0,0"]
    va = [head, "2/d.jpg,0,0,48,48,,0,0,0"]
    (lists / "training.csv").write_text("\n".join(tr) + "\n")
    (lists / "validation.csv").write_text("\n".join(va) + "\n")
    for k, rel in enumerate(["1/a.jpg", "1/b.jpg", "1/c.jpg", "2/d.jpg"]):
        img(tmp_path / "Manually_Annotated_Images" / rel, k)
    s8 = DATASET_READERS["affectnet"](tmp_path, CANONICAL)
    assert [CANONICAL[i] for i in s8["train"].labels] == ["happiness", "contempt"]
    assert [CANONICAL[i] for i in s8["test"].labels] == ["neutral"]
    s7 = DATASET_READERS["affectnet"](tmp_path, BASIC7)
    assert [BASIC7[i] for i in s7["train"].labels] == ["happiness"]


def test_affectnet_npy_release(tmp_path):
    for folder, codes in (("train_set", [1, 2, 8]), ("val_set", [6])):
        for k, c in enumerate(codes):
            img(tmp_path / folder / "images" / f"{k}.jpg", k)
            (tmp_path / folder / "annotations").mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / folder / "annotations" / f"{k}_exp.npy", np.array(str(c)))
    s = DATASET_READERS["affectnet"](tmp_path, CANONICAL)
    assert [CANONICAL[i] for i in s["train"].labels] == ["happiness", "sadness"]
    assert [CANONICAL[i] for i in s["test"].labels] == ["anger"]


def test_ckplus_original(tmp_path):
    for subj, seq, code in (("S005", "001", 3), ("S010", "002", 5), ("S011", "001", 7)):
        for f in range(1, 6):
            img(tmp_path / "cohn-kanade-images" / subj / seq / f"{subj}_{seq}_{f:08d}.png", f)
        emo = tmp_path / "Emotion" / subj / seq / f"{subj}_{seq}_00000005_emotion.txt"
        emo.parent.mkdir(parents=True)
        emo.write_text(f"   {code:.7e}\n")
    s = DATASET_READERS["ckplus"](tmp_path, CANONICAL, peak_frames=3, first_frame_neutral=True)["train"]
    assert len(s) == 3 * 4
    assert s.groups.count("S005") == 4
    names = [CANONICAL[i] for i in s.labels]
    assert names.count("neutral") == 3 and names.count("disgust") == 3 and names.count("surprise") == 3


def test_ckplus48_and_subject_folds(tmp_path):
    for cls in ("anger", "happy", "surprise"):
        for subj in range(6):
            img(tmp_path / cls / f"S{subj:03d}_001_0000001{subj}.png", subj)
    s = DATASET_READERS["ckplus48"](tmp_path, CANONICAL)["train"]
    assert len(s) == 18 and set(s.groups) == {f"S{i:03d}" for i in range(6)}
    folds = list(subject_kfold(s, k=3))
    assert len(folds) == 3
    for tr, te in folds:
        assert not set(tr.groups) & set(te.groups)  # no subject on both sides
    assert sorted(p for _, te in folds for p in map(str, te.paths)) == sorted(map(str, s.paths))


def test_jaffe(tmp_path):
    for k, name in enumerate(["KA.AN1.39.tiff", "KA.HA2.30.tiff", "KL.SU1.1.tiff", "README.tiff"]):
        img(tmp_path / name, k)
    s = DATASET_READERS["jaffe"](tmp_path, CANONICAL)["train"]
    assert [CANONICAL[i] for i in s.labels] == ["anger", "happiness", "surprise"]
    assert s.groups == ["KA", "KA", "KL"] and len(s.skipped) == 1


@pytest.mark.parametrize("name,split_dirs,expect", [
    ("sfew", ("Train", "Val"), {"train", "test"}),
    ("caer_s", ("train", "test"), {"train", "test"}),
    ("folder", ("train", "val", "test"), {"train", "valid", "test"}),
])
def test_class_folder_datasets(tmp_path, name, split_dirs, expect):
    for split in split_dirs:
        for k, cls in enumerate(("Angry", "Happy", "Neutral")):
            img(tmp_path / split / cls / f"{k}.png", k)
    s = DATASET_READERS[name](tmp_path, CANONICAL)
    assert set(s) == expect and all(len(v) == 3 for v in s.values())


def test_generic_csv(tmp_path):
    img(tmp_path / "a.png", 0)
    img(tmp_path / "b.png", 1)
    (tmp_path / "labels.csv").write_text("path,label,split\na.png,happy,train\nb.png,sad,test\nc.png,happy,train\n")
    s = DATASET_READERS["csv"](tmp_path, CANONICAL)
    assert len(s["train"]) == 1 and len(s["test"]) == 1 and s["train"].skipped


def test_load_splits_holdout_protocols_and_errors(tmp_path):
    for cls in ("anger", "happy", "surprise"):
        for subj in range(10):
            img(tmp_path / cls / f"S{subj:03d}_001_00000001.png", subj)
    s = load_splits({"dataset": "ckplus48", "root": str(tmp_path), "labels": "basic7", "protocol": "subject_kfold",
                     "folds": 5, "fold": 1, "valid_fraction": 0.2})
    assert set(s) == {"train", "valid", "test"}
    assert not set(s["train"].groups) & set(s["test"].groups)
    assert sum(len(v) for v in s.values()) == 30
    mc = list(monte_carlo_splits(s["train"], repeats=3, test_fraction=0.25))
    assert len(mc) == 3 and len({tuple(map(str, te.paths)) for _, te in mc}) == 3
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits({"dataset": "folder", "root": str(tmp_path / "nope")})
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_splits({"dataset": "imagenet", "root": str(tmp_path)})
