import numpy as np
import pytest
from conftest import FERPLUS, needs_ferplus, pattern_image, save_img

from ferlab.data.readers.ferplus import process_votes, read_ferplus

# columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF


def test_majority_by_hand():
    # single votes are outliers: [6,1,0,3,...] -> [6,0,0,3] ; 6 > 0.5*9 -> neutral
    d = process_votes([6, 1, 0, 3, 0, 0, 0, 0, 0, 0], "majority")
    assert d.argmax() == 0 and d[0] == 1.0
    # 4 vs 4 after clean-up: no majority -> dropped
    assert process_votes([4, 0, 0, 4, 1, 0, 0, 0, 1, 0], "majority") is None
    # unknown wins -> dropped
    assert process_votes([2, 0, 0, 0, 0, 0, 0, 0, 8, 0], "majority") is None
    # unknown and NF count in the total: 5 of 10 is not more than half
    assert process_votes([5, 0, 0, 0, 0, 0, 0, 0, 3, 2], "majority") is None


def test_crossentropy_by_hand():
    # [5, 3, 2]: top-1 covers 50% < 75%, top-2 covers 80% -> {neutral 5/8, happiness 3/8}
    d = process_votes([5, 3, 2, 0, 0, 0, 0, 0, 0, 0], "crossentropy")
    np.testing.assert_allclose(d[:3], [5 / 8, 3 / 8, 0], atol=1e-6)
    # ties are taken together: [4, 4, 2] -> 4,4 cover 80%
    d = process_votes([4, 4, 2, 0, 0, 0, 0, 0, 0, 0], "probability")
    np.testing.assert_allclose(d[:2], [0.5, 0.5], atol=1e-6)
    # NF ties the top emotion: stop there, the emotion alone covers 40% <= 50% -> dropped
    assert process_votes([4, 2, 0, 0, 0, 0, 0, 0, 0, 4], "crossentropy") is None


def _write_fixture(root):
    rows = {"FER2013Train": [("fer0000000.png", [8, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
                             ("fer0000001.png", [0, 9, 1, 0, 0, 0, 0, 0, 0, 0]),
                             ("fer0000002.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10])],
            "FER2013Valid": [("fer0000010.png", [0, 0, 10, 0, 0, 0, 0, 0, 0, 0])],
            "FER2013Test": [("fer0000020.png", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                            ("fer0000021.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]),
                            ("fer0033120.png", [0, 0, 0, 0, 10, 0, 0, 0, 0, 0]),
                            ("fer0000023.png", [0, 0, 0, 10, 0, 0, 0, 0, 0, 0])]}
    for si, (split, items) in enumerate(rows.items()):
        lines = []
        for i, (name, votes) in enumerate(items):
            if name != "fer0000023.png":  # listed but missing on disk
                save_img(root / split / name, pattern_image(i, 100 * si + i))
            lines.append(",".join([name, '"(0, 0, 48, 48)"', *map(str, votes)]))
        (root / split / "label.csv").write_text("\n".join(lines) + "\n")
    # fer0000020 (test) is pixel-identical to fer0000000 (train)
    (root / "FER2013Test" / "fer0000020.png").write_bytes((root / "FER2013Train" / "fer0000000.png").read_bytes())


def test_reader_on_fixture(tmp_path):
    _write_fixture(tmp_path)
    s = read_ferplus(tmp_path, "majority")
    assert len(s["train"]) == 2  # the not-a-face row is dropped by the protocol
    assert [p.name for p in s["test"].paths] == ["fer0000020.png", "fer0000021.png"]
    skipped = dict(s["test"].skipped)
    assert any("not a face" in why for why in skipped.values())  # the known bad file, reported
    assert any("missing file" in why for why in skipped.values())
    assert s["test"].flags["duplicate"].tolist() == [True, False]


def test_unknown_mode(tmp_path):
    from ferlab.data.readers import DatasetError
    _write_fixture(tmp_path)
    with pytest.raises(DatasetError, match="label mode"):
        read_ferplus(tmp_path, "soft")


@needs_ferplus
def test_real_ferplus_counts():
    s = read_ferplus(FERPLUS, "majority")
    # the README's kept counts; the test split loses the known not-a-face file
    assert (len(s["train"]), len(s["valid"]), len(s["test"])) == (25045, 3191, 3136)
    assert int(s["test"].flags["duplicate"].sum()) > 200
    ce = read_ferplus(FERPLUS, "crossentropy", splits=("train",))
    assert len(ce["train"]) > 25045
    np.testing.assert_allclose(ce["train"].targets.sum(1), 1.0, atol=1e-5)
