"""Image reading that turns every kind of bad file into one clear `BadImageError`.

Handles missing, empty, truncated and non-image files, 16-bit, CMYK, RGBA, LA and palette images,
and decompression bombs (images over a pixel limit). Always returns 8-bit RGB (H, W, 3) or
grayscale (H, W) numpy arrays.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger than any photo a FER user has (a 100 MP camera), small enough to refuse a bomb.
DEFAULT_MAX_PIXELS = 120_000_000


class SettingError(ValueError):
    """An environment variable with a value ferlab cannot use."""


def max_pixels() -> int:
    """The pixel limit: FERLAB_MAX_PIXELS (a positive whole number) or DEFAULT_MAX_PIXELS. While
    ferlab reads an image it is also PIL's own decompression-bomb limit, so a raised limit raises both."""
    raw = os.environ.get("FERLAB_MAX_PIXELS")
    if raw is None or raw.strip() == "":
        value = DEFAULT_MAX_PIXELS
    else:
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise SettingError(f"FERLAB_MAX_PIXELS={raw!r}: not a whole number of pixels") from None
        if value <= 0:
            raise SettingError(f"FERLAB_MAX_PIXELS={raw!r}: must be a positive number of pixels")
    return value
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"}


class BadImageError(ValueError):
    """An input that cannot be used as an image; the message says why, for the user."""


class NotAnImageError(BadImageError):
    """Bytes that are no image format PIL reads."""


class ImageTooLargeError(BadImageError):
    """An image over the pixel limit (a decompression bomb, or a photo larger than allowed)."""


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(((arr - lo) * scale).clip(0, 255).astype(np.uint8), mode="L")
    return img


def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """Read an image file as uint8 RGB (mode='RGB') or grayscale (mode='L')."""
    p = Path(path)
    if not p.exists():
        raise BadImageError(f"{p}: no such file")
    if p.is_dir():
        raise BadImageError(f"{p}: is a folder, not an image")
    if p.stat().st_size == 0:
        raise BadImageError(f"{p}: empty file")
    return _decode(p, str(p), mode)


def decode_image(data: bytes, name: str = "upload", mode: str = "RGB", limit: int | None = None) -> np.ndarray:
    """`read_image` for the bytes of an image file (an upload): the same checks and messages,
    `name` standing for the path in them; `limit` overrides the pixel limit."""
    import io
    if not data:
        raise BadImageError(f"{name}: empty file")
    return _decode(io.BytesIO(data), name, mode, limit)


def _decode(source, name: str, mode: str, limit: int | None = None) -> np.ndarray:
    limit = max_pixels() if limit is None else int(limit)
    saved = Image.MAX_IMAGE_PIXELS  # PIL warns past its limit and refuses past twice it: for this read
    Image.MAX_IMAGE_PIXELS = limit  # ferlab's limit is the one that counts (restored below)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                w, h = img.size
                if w * h > limit:
                    raise ImageTooLargeError(f"{name}: {w}x{h} pixels is over the limit of {limit} "
                                             "(set FERLAB_MAX_PIXELS to raise it)")
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return to_array(img, mode)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"{name}: refused: more pixels than the limit of {limit} (a decompression bomb, "
                                 f"or set FERLAB_MAX_PIXELS to raise the limit; {e})") from None
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name}: not an image file (or a format PIL cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{name}: truncated or corrupt image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def to_array(img: Image.Image, mode: str = "RGB") -> np.ndarray:
    """Convert a PIL image of any mode (16-bit, CMYK, RGBA, LA, P) to uint8 RGB or L."""
    img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    if mode == "L":
        return np.asarray(img.convert("L"))
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def as_rgb(image, bgr: bool = False) -> np.ndarray:
    """One image -> uint8 RGB. Takes a path, the bytes of an image file, a PIL image or a numpy array
    (gray, RGB or RGBA; with `bgr=True` a colour array is in OpenCV's BGR/BGRA order, as
    `cv2.imread` and `cv2.VideoCapture` give it). Anything else is a BadImageError saying what it got."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, "RGB")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), "image bytes", "RGB")
    if isinstance(image, Image.Image):
        return to_array(image, "RGB")
    if isinstance(image, (list, tuple)):
        raise BadImageError(f"got a {type(image).__name__} of {len(image)} items where one image was expected "
                            "(for several images use analyze_many([...]))")
    if not isinstance(image, np.ndarray) and not hasattr(image, "__array__"):
        raise BadImageError(f"got a value of type {type(image).__name__}: give a path, the bytes of an image file, a PIL image "
                            "or a numpy array")
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise BadImageError(f"got an array of {arr.dtype} values: an image array holds numbers (uint8 0-255 "
                            "or floats 0-1)")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[:, :, 2::-1] if bgr else arr[:, :, :3]
        return np.ascontiguousarray(rgb)
    raise BadImageError(f"image array of shape {arr.shape} is not gray, RGB or RGBA (one image: height x width "
                        "[x channels])")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All files under a folder that look like images by suffix, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
