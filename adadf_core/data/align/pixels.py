"""Pixels in and out of the alignment code: files read through the project's one decoder
(`adadf_core.data.images`), in-memory arrays normalised to RGB uint8, and the example photos of notebook 01."""
from __future__ import annotations

import os

import numpy as np
from skimage import data
from skimage.transform import rescale, rotate

from adadf_core.data.images import decode_image_with_note


def as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 3] or [H, W, 4] (alpha dropped) -> contiguous RGB uint8 [H, W, 3]."""
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an image [H, W] or [H, W, 3|4], got shape {array.shape}")
    if array.shape[2] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def load_rgb(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read any image PIL understands as RGB uint8 [H, W, 3]; returns (pixels, note).

    Decoding follows `adadf_core.data.images` (EXIF orientation applied; grey-scale, palette, 16-bit and CMYK
    converted; transparency composited on white). ``note`` says what was converted ("" when nothing was).
    Raises ValueError (naming the file) for anything that is not a readable image, a missing file included.
    """
    try:
        image, note = decode_image_with_note(path)
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: not a readable image (FileNotFoundError: no such file)") from exc
    return np.asarray(image), note


def example_photos() -> dict[str, np.ndarray]:
    """Real photographs with faces that ship with scikit-image (no download), as RGB uint8:
    the astronaut portrait, the same portrait rotated 25 degrees (alignment must undo it), the
    cameraman (grey-scale) and a mosaic of six LFW faces (scaled up from 25x25)."""
    astronaut = data.astronaut()
    rotated = (rotate(astronaut, 25, resize=False, mode="edge", preserve_range=True)).astype(np.uint8)
    camera = np.stack([data.camera()] * 3, axis=-1)
    faces = data.lfw_subset()[:6]            # floats in [0, 1], 25x25
    tiles = [np.pad(rescale(f, 6, order=1), 15, constant_values=0.5) for f in faces]
    mosaic = np.concatenate([np.concatenate(tiles[:3], axis=1), np.concatenate(tiles[3:], axis=1)], axis=0)
    mosaic = np.stack([np.clip(mosaic * 255, 0, 255).astype(np.uint8)] * 3, axis=-1)
    return {"astronaut": astronaut, "astronaut rotated 25°": rotated, "cameraman": camera,
            "LFW faces (x6)": mosaic}
