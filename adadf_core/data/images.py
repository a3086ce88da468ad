"""The project's one image decoder: any file PIL reads -> an RGB ``PIL.Image``.

Both readers of raw image files use it: `datasets.decode_image` (training and evaluation) and
`align.load_rgb` (the alignment tool, its landmark-error report and notebook 01's figures), so a face
gives the same pixels whichever path it takes.

Policy (one for every caller)
-----------------------------
- **EXIF orientation** is applied to every image (``ImageOps.exif_transpose``): a phone photo stored
  sideways with an orientation tag comes out upright. `decoded_size` gives the size after this step
  without decoding the pixels (orientations 5-8 swap width and height).
- **Transparency** (RGBA, LA, PA, RGBa, La, and P with a ``transparency`` entry) is composited on
  **white**: each channel becomes ``round((c * a + 255 * (255 - a)) / 255)`` for colour ``c`` and alpha
  ``a`` (the same values ``Image.alpha_composite`` on a white background gives; there are no ties).
  Reason: `adadf align` already wrote its aligned faces composited on white, so training on aligned
  output and training on the raw RGBA files now see the same pixels. Compared with the decoder
  the data loader used before, only pixels with alpha < 255 change: fully transparent pixels go from black
  to white, partly transparent ones are blended toward white instead of black (alpha 128 over red 200:
  R 100 -> 227, G and B 0 -> 127); opaque pixels (alpha 255) are unchanged.
- **16-bit greyscale** (modes I;16, I;16L, I;16B, I;16N and the 32-bit I that older Pillow returns for
  16-bit PNGs) is scaled to 8 bit by ``value / 257`` rounded to the nearest integer (values are clipped
  to 0..65535 first; 0 -> 0, 32768 -> 128, 65535 -> 255). PIL's own conversion clips instead, so a
  mid-grey 16-bit PNG used to come out white.
- Greyscale (L, 1), CMYK, YCbCr and other modes are converted to RGB by PIL (``Image.convert("RGB")``);
  32-bit float (F) images are converted the same way (values clipped to 0..255).
- An unreadable file raises `ImageDecodeError` (a ValueError) whose message names the path; a missing
  file raises FileNotFoundError naming the path.
- Hidden files and folders are never inputs (`is_hidden`): names starting with '.' (``.DS_Store``, the
  AppleDouble ``._name`` files macOS writes beside every file on a foreign disk) and ``__MACOSX``
  folders (what a zip made on a Mac holds).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# EXIF orientation values that rotate by 90 or 270 degrees (width and height swap).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                  Image.DecompressionBombError)


def is_hidden(name: str) -> bool:
    """True for a file or folder name that is never a data-set input: ``.DS_Store``, ``._face.jpg``
    (AppleDouble), any other name starting with '.', and ``__MACOSX``."""
    return name.startswith(".") or name == "__MACOSX"


class ImageDecodeError(ValueError):
    """A file that exists but is not a readable image. ``str()`` names the path."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: not a readable image ({reason})")


def decode_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path`` as an RGB image, following the module's policy."""
    return decode_image_with_note(path)[0]


def decode_image_with_note(path: str | os.PathLike) -> tuple[Image.Image, str]:
    """`decode_image` plus a note on what was converted: ``""`` for an RGB file, otherwise e.g.
    ``"converted from L to RGB"`` or ``"converted from RGBA (alpha composited on white) to RGB"``."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            # exif_transpose returns a new image, so the result outlives the closed file
            return _to_rgb(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(path, f"{type(exc).__name__}: {exc}") from exc


def decoded_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of ``decode_image(path)``, read from the file header (no pixel decoding)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION_TAG)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def check_complete(path: str | os.PathLike) -> None:
    """Raise `ImageDecodeError` when a JPEG or PNG file lacks its end marker (JPEG ``FF D9`` in its last
    KiB, PNG ``IEND`` in its last 64 bytes): the usual sign of a file cut short by a copy or download.
    Reads the first and last bytes only; other formats pass unchecked."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        fh.seek(max(0, os.path.getsize(path) - 1024))
        tail = fh.read()
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        raise ImageDecodeError(path, "truncated: the JPEG end-of-image marker is missing")
    if head.startswith(b"\x89PNG") and b"IEND" not in tail[-64:]:
        raise ImageDecodeError(path, "truncated: the PNG IEND chunk is missing")


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str]:
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(img), f"converted from {mode} to RGB"
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        return _composite_on_white(img), f"converted from {mode} (alpha composited on white) to RGB"
    if mode == "RGB":
        return img, ""
    return img.convert("RGB"), f"converted from {mode} to RGB"


def _sixteen_bit_to_rgb(img: Image.Image) -> Image.Image:
    values = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
    grey = ((values + 128) // 257).astype(np.uint8)       # round(value / 257); no ties as 257 is odd
    return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = np.asarray(img.convert("RGBA"), dtype=np.int64)
    colour, alpha = rgba[..., :3], rgba[..., 3:]
    blended = (colour * alpha + 255 * (255 - alpha) + 127) // 255   # round(... / 255); no ties
    return Image.fromarray(blended.astype(np.uint8), "RGB")
