"""Frames and warps: the canonical face frame, the aligned crop, the unaligned original image, landmarks.

The face is drawn in a canonical frame (x right, y down, the head an ellipse centred near the origin,
about 1.4 units wide and 1.8 tall). The aligned crop shows ``[-ALIGNED_HALF_EXTENT, ALIGNED_HALF_EXTENT]^2`` of it; the
original image places the same face with a random rotation, scale and offset (``original_geometry``),
and its five landmarks are the canonical ones mapped by that similarity transform.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

ALIGNED_HALF_EXTENT = 1.1     # the aligned crop shows canonical x, y in [-1.1, 1.1]


def aligned_grid(size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Canonical x, y ([1, size, size]) of the aligned crop's pixel centres, and one pixel's width."""
    coords = ((np.arange(size) + 0.5) / size * 2 - 1) * ALIGNED_HALF_EXTENT
    y, x = np.meshgrid(coords, coords, indexing="ij")
    return x[None], y[None], 2 * ALIGNED_HALF_EXTENT / size


def landmarks_canonical(f: dict[str, np.ndarray]) -> np.ndarray:
    """Five landmarks in the canonical face frame, [n, 5, 2]: eyes, nose tip, mouth corners.

    "Left" / "right" are image left / right (smaller x first), as in the MTCNN convention.
    """
    hw = f["mouth_w0"] * f["mouth_width"]
    corner_y = f["mouth_y"] - 0.06 * f["lip_corner"]
    pts = [(-f["eye_dx"], f["eye_y"]), (f["eye_dx"], f["eye_y"]), (0 * hw, f["nose_y"]),
           (-hw, corner_y), (hw, corner_y)]
    return np.stack([np.stack(p, axis=-1) for p in pts], axis=1)


def original_geometry(n: int, rng: np.random.Generator, params: dict) -> dict[str, np.ndarray]:
    """Per original image: side ``size`` (px), ``scale`` (px per canonical unit), ``angle`` (rad), centre."""
    lo, hi = params["original_size"]
    size = rng.integers(lo, hi + 1, size=n)
    scale = rng.uniform(0.27, 0.36, size=n) * size              # pixels per canonical unit
    angle = np.deg2rad(rng.uniform(-params["rotation_deg"], params["rotation_deg"], size=n))
    cx = size / 2 + rng.uniform(-0.09, 0.09, size=n) * size
    cy = size / 2 + rng.uniform(-0.09, 0.09, size=n) * size
    return dict(size=size, scale=scale, angle=angle, cx=cx, cy=cy)


def canonical_to_pixel(pts: np.ndarray, g: dict, idx) -> np.ndarray:
    """Canonical points [n, K, 2] -> original-image pixel coordinates (pixel centres at +0.5)."""
    ca, sa = np.cos(g["angle"][idx])[:, None], np.sin(g["angle"][idx])[:, None]
    s = g["scale"][idx][:, None]
    px = g["cx"][idx][:, None] + s * (ca * pts[..., 0] - sa * pts[..., 1])
    py = g["cy"][idx][:, None] + s * (sa * pts[..., 0] + ca * pts[..., 1])
    return np.stack([px, py], axis=-1)


def original_axes(g: dict, idx: np.ndarray, canvas: int):
    """Axis-aligned original-image pixel coordinates in face units: u [B,1,W], v [B,H,1]."""
    px = (np.arange(canvas) + 0.5).astype(np.float32)
    s = g["scale"][idx].astype(np.float32)[:, None, None]
    u = (px[None, None, :] - g["cx"][idx].astype(np.float32)[:, None, None]) / s
    v = (px[None, :, None] - g["cy"][idx].astype(np.float32)[:, None, None]) / s
    return u, v


def warp_layer(face: np.ndarray, alpha: np.ndarray, g: dict, idx: np.ndarray, canvas: int, size: int) -> np.ndarray:
    """Warp canonical premultiplied face layers ([B,A,A,3] + [B,A,A]) into original-image pixels.

    Returns [B, canvas, canvas, 4] (premultiplied colour, coverage); bilinear, zero outside the layer.
    """
    out = np.empty((len(idx), canvas, canvas, 4), dtype=np.float32)
    k = size / (2 * ALIGNED_HALF_EXTENT)        # layer pixels per canonical unit
    for j, i in enumerate(idx):
        ca, sa, s = np.cos(g["angle"][i]), np.sin(g["angle"][i]), g["scale"][i]
        cx, cy = g["cx"][i], g["cy"][i]
        a, b = k / s * ca, k / s * sa
        coeffs = (a, b, size / 2 - a * cx - b * cy, -b, a, size / 2 + b * cx - a * cy)
        for ch in range(4):
            band = face[j, :, :, ch] if ch < 3 else alpha[j]
            im = Image.fromarray(np.ascontiguousarray(band))  # mode "F"
            out[j, :, :, ch] = np.asarray(im.transform((canvas, canvas), Image.Transform.AFFINE, coeffs,
                                                       resample=Image.Resampling.BILINEAR))
    return out
