import pytest

from ferlab.data.labels import BASIC7, CANONICAL, UnknownLabelError, canonical_name, from_code, resolve_label_set


def test_canonical_order_is_ferplus():
    assert CANONICAL == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    assert BASIC7 == CANONICAL[:7]


@pytest.mark.parametrize("dataset,code,name", [
    ("fer2013", 0, "anger"), ("fer2013", 3, "happiness"), ("fer2013", 6, "neutral"),
    ("rafdb", 1, "surprise"), ("rafdb", 4, "happiness"), ("rafdb", 7, "neutral"),
    ("affectnet", 0, "neutral"), ("affectnet", 1, "happiness"), ("affectnet", 7, "contempt"),
    ("ckplus", 2, "contempt"), ("ckplus", 5, "happiness"), ("jaffe", "SU", "surprise"),
])
def test_dataset_codes(dataset, code, name):
    assert from_code(dataset, code) == name


def test_codes_out_of_range_are_errors():
    with pytest.raises(UnknownLabelError):
        from_code("affectnet", 8)
    with pytest.raises(UnknownLabelError):
        from_code("rafdb", 0)


@pytest.mark.parametrize("raw", ["Happy", "happiness", " HAPPY ", "ha"])
def test_synonyms(raw):
    assert canonical_name(raw) == "happiness"


def test_unknown_label():
    with pytest.raises(UnknownLabelError, match="unknown emotion label"):
        canonical_name("confused")


def test_label_sets():
    assert resolve_label_set("basic7") == BASIC7
    assert resolve_label_set(None) == CANONICAL
    assert resolve_label_set(["Happy", "sad"]) == ("happiness", "sadness")
    with pytest.raises(ValueError):
        resolve_label_set(["happy", "happiness"])
