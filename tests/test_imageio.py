import numpy as np
import pytest
from PIL import Image

from ferlab.data.imageio import BadImageError, as_rgb, read_image


def _astro():
    from skimage import data
    return data.astronaut()


def test_good_modes(tmp_path):
    a = _astro()
    Image.fromarray(a).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(a).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(a).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(a).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(a[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    for name in ("cmyk.jpg", "rgba.png", "pal.png", "la.png", "g16.png"):
        img = read_image(tmp_path / name)
        assert img.dtype == np.uint8 and img.shape == (512, 512, 3), name
    g16 = read_image(tmp_path / "g16.png", "L")
    assert g16.max() == 255 and g16.min() == 0  # 16-bit range rescaled, not clipped


@pytest.mark.parametrize("maker,msg", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("not an image"), "not an image"),
])
def test_bad_files(tmp_path, maker, msg):
    p = tmp_path / "x.png"
    maker(p)
    with pytest.raises(BadImageError, match=msg):
        read_image(p)


def test_truncated(tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(_astro()).save(full)
    data = full.read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(BadImageError, match="truncated or corrupt"):
        read_image(tmp_path / "t.png")


def test_decompression_bomb(tmp_path, monkeypatch):
    import ferlab.data.imageio as io
    Image.fromarray(np.zeros((200, 300), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setenv("FERLAB_MAX_PIXELS", "10000")
    with pytest.raises(BadImageError, match="over the limit|more pixels than the limit"):
        io.read_image(tmp_path / "big.png")
    monkeypatch.setenv("FERLAB_MAX_PIXELS", "abc")
    with pytest.raises(io.SettingError, match="not a whole number"):
        io.read_image(tmp_path / "big.png")
    monkeypatch.setenv("FERLAB_MAX_PIXELS", "-5")
    with pytest.raises(io.SettingError, match="positive"):
        io.read_image(tmp_path / "big.png")


def test_max_pixels_governs_pil_limit_too(tmp_path, monkeypatch):
    """A raised limit raises PIL's own bomb limit as well (PIL refuses at twice its limit)."""
    import ferlab.data.imageio as io
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(tmp_path / "p.png")  # 120,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)                   # PIL alone would refuse
    monkeypatch.setenv("FERLAB_MAX_PIXELS", "200000")
    assert io.read_image(tmp_path / "p.png").shape == (300, 400, 3)
    assert Image.MAX_IMAGE_PIXELS == 50_000  # PIL's own setting is left as the program had it


def test_as_rgb_arrays():
    assert as_rgb(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert as_rgb(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    assert as_rgb(np.ones((5, 6, 3), np.float32)).max() == 255
    with pytest.raises(BadImageError):
        as_rgb(np.zeros((5, 6, 7)))
