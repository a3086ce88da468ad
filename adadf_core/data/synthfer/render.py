"""Painting faces: implicit shapes on a pixel grid, one painter per facial part, background and finish.

Rendering is vectorised with numpy over whole batches: every part of the face is an implicit shape
(signed-distance-like function, negative inside) evaluated on a pixel grid in the canonical face frame,
and composited with anti-aliased alpha. Per-face parameters come from ``faces.face_params`` as float32
columns (``columns``) that broadcast against the grid [B, H, W]. The order of the painters and of the
float32 operations is part of the deterministic recipe: SynthFER's bytes depend on it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from adadf_core.data.synthfer.frames import ALIGNED_HALF_EXTENT

Coverage = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# implicit shapes and compositing (all arrays broadcast as [B, H, W])

def _ellipse(x, y, cx, cy, rx, ry):
    k = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (k - 1.0) * np.minimum(rx, ry), k


def _capsule(x, y, ax, ay, bx, by, r):
    px, py, dx, dy = x - ax, y - ay, bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.sqrt((px - h * dx) ** 2 + (py - h * dy) ** 2) - r


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.array([r, g, b], dtype=np.float32)


def _composite(view: np.ndarray, colour, a: np.ndarray) -> None:
    """In-place alpha compositing of ``colour`` with coverage ``a`` on ``view`` (a view of the layer)."""
    view += a[..., None] * (colour - view)


def _window(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float):
    """Index of the axis-aligned part of a shared grid (x, y: [1, H, W]) inside [x0, x1] x [y0, y1]."""
    cols = np.nonzero((x[0, 0] >= x0) & (x[0, 0] <= x1))[0]
    rows = np.nonzero((y[0, :, 0] >= y0) & (y[0, :, 0] <= y1))[0]
    if len(cols) == 0 or len(rows) == 0:
        return None
    return (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))


def columns(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-face parameters as float32 arrays that broadcast against [B, H, W] (colours: [B, 1, 1, 3])."""
    return {k: (v.reshape(-1, 1, 1) if v.ndim == 1 else v.reshape(v.shape[0], 1, 1, -1)).astype(np.float32)
            for k, v in f.items()}


# --------------------------------------------------------------------------------------------
# one painter per facial part. Each paints in place on ``img`` [B, h, w, 3] (colour) and, where the
# part is opaque over the background, ``alpha`` [B, h, w] (coverage); x, y are the matching grid part.

def _head_and_hair(c, x, y, img, alpha, cov: Coverage) -> None:
    """Hair behind the head, the head with edge shading, the fringe above a wavy hair line."""
    skin = c["skin"]
    head_sd, head_k = _ellipse(x, y, 0.0, c["face_cy"], c["face_rx"], c["face_ry"])
    back_sd, _ = _ellipse(x, y, 0.0, c["face_cy"] - 0.08, c["face_rx"] * 1.14, c["face_ry"] * 1.06)
    a = cov(np.maximum(back_sd, y - c["hair_long"])) * c["hair_back"]
    _composite(img, c["hair"], a)
    alpha += a
    shade = 1.0 - 0.28 * np.clip((head_k - 0.72) / 0.28, 0.0, 1.0)
    a = cov(head_sd)
    _composite(img, skin * shade[..., None], a)
    alpha += a * (1.0 - alpha)
    hairline = c["face_cy"] - c["face_ry"] + c["hair_depth"] + c["hair_wave"] * np.sin(7 * x + c["hair_phase"])
    _composite(img, c["hair"], cov(np.maximum(head_sd, y - hairline)))


def _brows(c, x, y, img, alpha, cov: Coverage) -> None:
    """Eyebrows: capsules whose inner end rises with brow_angle."""
    for s in (-1.0, 1.0):
        base = c["eye_y"] - 0.19 - c["brow_height"]
        ax, bx = s * (c["eye_dx"] - 0.13), s * (c["eye_dx"] + 0.15)
        sd = _capsule(x, y, ax, base - 0.09 * c["brow_angle"], bx, base + 0.035 * c["brow_angle"], c["brow_thick"])
        _composite(img, c["hair"] * 0.8, cov(sd))


def _eyes(c, x, y, img, alpha, cov: Coverage) -> None:
    """Eyes (sclera, iris, pupil, lash line), then glasses on the faces that wear them."""
    for s in (-1.0, 1.0):
        ex = s * c["eye_dx"]
        ry = np.maximum(0.065 * c["eye_size"] * c["eye_open"], 0.006)
        eye_sd, _ = _ellipse(x, y, ex, c["eye_y"], 0.13 * c["eye_size"], ry)
        inside = cov(eye_sd)
        _composite(img, _rgb(238, 236, 230), inside)
        r_iris = 0.05 * c["eye_size"]
        iris_sd, _ = _ellipse(x, y, ex + c["gaze"], c["eye_y"], r_iris, r_iris)
        _composite(img, c["iris"], cov(iris_sd) * inside)
        _composite(img, _rgb(12, 10, 10), cov(iris_sd + 0.56 * r_iris) * inside)
        _composite(img, _rgb(30, 22, 20), cov(np.abs(eye_sd) - 0.007))
    if c["glasses"].any():
        frame = _rgb(25, 25, 30)
        sds = [np.abs(_ellipse(x, y, s * c["eye_dx"], c["eye_y"], 0.19, 0.14)[0]) - 0.012 for s in (-1.0, 1.0)]
        sds.append(_capsule(x, y, -c["eye_dx"] + 0.19, c["eye_y"], c["eye_dx"] - 0.19, c["eye_y"], 0.012))
        for sd in sds:
            a = c["glasses"] * cov(sd)
            _composite(img, frame, a)
            alpha += a * (1.0 - alpha)


def _nose(c, x, y, img, alpha, cov: Coverage) -> None:
    """Nose: shaded bridge, nostrils, and wrinkles across the bridge (nose_wrinkle)."""
    skin, dark = c["skin"], c["skin"] * 0.62
    _composite(img, skin * 0.85, 0.6 * cov(_capsule(x, y, 0.03, c["eye_y"] + 0.08, 0.05, c["nose_y"] - 0.03, 0.012)))
    for s in (-1.0, 1.0):
        _composite(img, dark, cov(_ellipse(x, y, s * 0.055, c["nose_y"] + 0.01, 0.032, 0.016)[0]))
    wr = np.clip(c["nose_wrinkle"], 0.0, 1.0)
    for i in range(3):
        yy = c["eye_y"] + 0.08 + 0.045 * i
        _composite(img, dark, wr * cov(_capsule(x, y, -0.07, yy, 0.07, yy - 0.01 * (i - 1), 0.009)))


def _mouth(c, x, y, img, alpha, cov: Coverage) -> None:
    """Nasolabial folds and the mouth: lips, opening, teeth, crease (curve, openness, width, corners)."""
    skin, dark = c["skin"], c["skin"] * 0.62
    wr = np.clip(c["nose_wrinkle"], 0.0, 1.0)
    hw = c["mouth_w0"] * c["mouth_width"]
    corner_y = c["mouth_y"] - 0.06 * c["lip_corner"]
    for s in (-1.0, 1.0):
        sd = _capsule(x, y, s * 0.08, c["nose_y"] + 0.03, s * (hw + 0.03), corner_y - 0.01, 0.009)
        _composite(img, dark, (0.3 + 0.6 * wr) * cov(sd))
    t2 = np.clip((x / hw) ** 2, 0.0, 1.0)
    mid = c["mouth_y"] + 0.13 * c["mouth_curve"] * (1 - t2) - 0.06 * c["lip_corner"] * t2 ** 2
    bulge = np.sqrt(1 - t2)
    half = 0.13 * c["mouth_open"] * bulge
    xlim = np.abs(x) - hw
    dy = np.abs(y - mid)
    lip_col = skin * _rgb(0.78, 0.5, 0.5) + _rgb(40, 0, 0)
    _composite(img, lip_col, cov(np.maximum(dy - (half + 0.038 * bulge), xlim)))
    inner_sd = np.maximum(dy - half, xlim)
    _composite(img, _rgb(45, 12, 16), cov(inner_sd))
    teeth_sd = np.maximum(inner_sd, y - (mid - 0.3 * half))
    _composite(img, _rgb(235, 232, 222), cov(teeth_sd) * np.clip(c["mouth_open"] * 3 - 0.3, 0, 1))
    _composite(img, _rgb(70, 25, 28), cov(np.maximum(dy - 0.006, xlim)))


def _occluder(c, x, y, img, alpha, cov: Coverage) -> None:
    """An occluder (a round blob or a box) on the faces that have one."""
    if not c["occ"].any():
        return
    occ_round, _ = _ellipse(x, y, c["occ_x"], c["occ_y"], c["occ_r"], c["occ_r"] * 0.8)
    occ_box = np.maximum(np.abs(x - c["occ_x"]) - c["occ_r"], np.abs(y - c["occ_y"]) - 0.6 * c["occ_r"])
    a = c["occ"] * cov(np.where(c["occ_round"] > 0.5, occ_round, occ_box))
    _composite(img, c["occ_col"], a)
    alpha += a * (1.0 - alpha)


# Painters in drawing order, each with the canonical window (x0, x1, y0, y1) that bounds its part for
# every parameter value (faces._EXPR_RANGE keeps the expression inside); None: the whole grid.
PARTS = (
    (_head_and_hair, None),
    (_brows, (-0.65, 0.65, -0.85, 0.15)),
    (_eyes, (-0.65, 0.65, -0.42, 0.12)),
    (_nose, (-0.15, 0.15, -0.14, 0.32)),
    (_mouth, (-0.55, 0.55, 0.0, 1.08)),
    (_occluder, None),
)


def face_layer(c: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, edge: np.ndarray):
    """The face (hair, head, features, glasses, occluder) on a shared canonical grid x, y ([1, H, W]).

    ``edge`` ([B,1,1]) is the anti-aliasing / blur width in canonical units. Returns the lit colour
    premultiplied by coverage [B, H, W, 3] and the coverage [B, H, W] (float32). Each facial part is
    evaluated only inside its window in ``PARTS``.
    """
    def cov(sd):  # anti-aliased coverage of the region sd < 0
        return np.clip(0.5 - sd / edge, 0.0, 1.0)

    b = edge.shape[0]
    img = np.zeros((b,) + x.shape[1:] + (3,), dtype=np.float32)
    alpha = np.zeros((b,) + x.shape[1:], dtype=np.float32)
    for paint, box in PARTS:
        if box is None:
            paint(c, x, y, img, alpha, cov)
            continue
        w = _window(x, y, *box)
        if w is not None:
            paint(c, x[w], y[w], img[w], alpha[w], cov)
    img *= _light(c, x, y)[..., None]
    return img, alpha


# --------------------------------------------------------------------------------------------
# light, background, finish

def _light(c, x, y, turn=0.0):
    """Lighting gain, linear in the face frame; ``turn`` rotates the light direction (radians)."""
    angle = c["light_angle"] + turn
    return 1.0 + c["light_gain"] * (x * np.cos(angle) + y * np.sin(angle)) / 1.2


def background(c, u, v, turn=0.0):
    """Two colours mixed by a smooth separable texture, under the lighting gradient: [B, H, W, 3].

    ``u`` ([B or 1, 1, W]) and ``v`` ([B or 1, H, 1]) are axis-aligned image coordinates in face units.
    """
    t = 0.5 + 0.5 * np.sin(c["bg_f1"] * u + c["bg_p1"]) * np.sin(c["bg_f2"] * v + c["bg_p2"])
    bg = c["bg0"] + (c["bg1"] - c["bg0"]) * t[..., None]
    bg *= _light(c, u, v, turn)[..., None]
    return bg


def edge_width(c, pixel: float) -> np.ndarray:
    """Anti-aliasing width per face in canonical units: at least 0.8 pixel, wider with the face's blur."""
    return np.maximum(np.float32(0.8 * pixel), c["blur"] * np.float32(2 * ALIGNED_HALF_EXTENT / 100.0))


def finish(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise and quantisation to uint8 (in place on ``img``).

    The noise of a batch is drawn once, slightly larger than the images, and each image takes a
    randomly offset window of it, scaled by its own noise level (cheap and deterministic)."""
    b, h, w = img.shape[:3]
    bank = rng.standard_normal(size=(h + 32, w + 32, 3), dtype=np.float32)
    offsets = rng.integers(0, 33, size=(b, 2))
    for j in range(b):
        oy, ox = offsets[j]
        img[j] += bank[oy:oy + h, ox:ox + w] * c["noise"][j, 0, 0]
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)
