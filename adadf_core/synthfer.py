"""SynthFER: an embedded facial-expression data set with known, controllable label ambiguity.

Every face has a latent expression mixture ``p`` over the seven RAF-DB classes: one dominant class
(drawn with RAF-DB's training-set imbalance) plus a Dirichlet admixture whose weight grows with
``ambiguity``. The rendered expression geometry (eyebrow angle and height, eye openness, mouth
curvature / openness / width, nose wrinkle, lip corners) is the ``p``-weighted blend of per-class
prototypes, scaled by a per-face intensity and perturbed per identity. K simulated annotators vote
labels drawn from ``p`` (with annotator noise); the hard label is the majority vote and the vote
proportions are the ground-truth label distribution.

Rendering is vectorised with numpy over whole batches: every part of the face is an implicit shape
(signed-distance-like function) evaluated on a pixel grid in a canonical face frame, and composited
with anti-aliased alpha. Each face is drawn twice from the same parameters: an aligned 100x100 crop
and an unaligned photo-sized image (random rotation, scale and offset) with its five landmarks.

The files follow the RAF-DB layout (see docs/ARCHITECTURE.md, "SynthFER on disk"), so the RAF-DB
loader reads a SynthFER root unchanged. Same parameters and seed => byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

CLASS_NAMES = ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]
RAF_TRAIN_COUNTS = (1290, 281, 717, 4772, 1982, 705, 2524)
GENERATOR_VERSION = 2
JPEG_QUALITY = 92
ALIGNED_HALF_EXTENT = 1.1     # the aligned crop shows canonical x, y in [-1.1, 1.1]
_BATCH = 64                   # rendering batch (fixed: part of the deterministic recipe)

# Expression geometry, one row per class in RAF order. Columns:
EXPR_DIMS = ("brow_angle", "brow_height", "eye_open", "mouth_curve", "mouth_open", "mouth_width",
             "nose_wrinkle", "lip_corner")
PROTOTYPES = np.array([
    # angle  height  eyes  curve  open  width  wrinkle  corner
    [0.00,   0.10,  1.45,  0.00, 1.00,  0.72,  0.00,   0.00],   # Surprise
    [0.60,   0.06,  1.35, -0.20, 0.45,  1.20,  0.00,  -0.40],   # Fear
    [-0.35, -0.04,  0.55, -0.35, 0.20,  0.95,  1.00,  -0.60],   # Disgust
    [0.00,   0.00,  0.70,  0.95, 0.45,  1.30,  0.15,   0.90],   # Happiness
    [0.75,  -0.03,  0.65, -0.65, 0.00,  0.90,  0.00,  -0.80],   # Sadness
    [-0.85, -0.09,  0.85, -0.15, 0.10,  0.85,  0.50,  -0.20],   # Anger
    [0.00,   0.00,  1.00,  0.00, 0.00,  1.00,  0.00,   0.00],   # Neutral
], dtype=np.float64)
# per-identity idiosyncrasy of each expression dimension (std at expr_jitter=1)
_EXPR_JITTER = np.array([0.20, 0.03, 0.15, 0.18, 0.12, 0.10, 0.15, 0.20])

DEFAULTS: dict[str, Any] = dict(
    n_train=2000, n_test=800, seed=0, ambiguity=0.8, annotators=(10, 40), annotator_noise=0.1,
    image_size=100, original_size=(160, 220), intensity=(0.65, 1.3), expr_jitter=0.85,
    dirichlet_alpha=0.4, class_counts=RAF_TRAIN_COUNTS, occluder_prob=0.25, glasses_prob=0.12,
    noise_std=(2.0, 12.0), blur=(0.0, 1.6), rotation_deg=30.0,
)


class SynthFERError(ValueError):
    """A SynthFER root or parameter problem (message names the path or value)."""


# --------------------------------------------------------------------------------------------
# latent mixtures, annotators, per-face parameters

def _normalise_params(params: dict) -> dict:
    p = dict(DEFAULTS)
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise SynthFERError(f"unknown SynthFER parameter(s) {unknown}; expected some of {sorted(DEFAULTS)}")
    p.update(params)
    for key in ("annotators", "original_size", "intensity", "noise_std", "blur", "class_counts"):
        p[key] = [float(v) if key in ("intensity", "noise_std", "blur") else int(v) for v in p[key]]
    for key in ("n_train", "n_test", "seed", "image_size"):
        p[key] = int(p[key])
    for key in ("ambiguity", "annotator_noise", "expr_jitter", "dirichlet_alpha", "occluder_prob",
                "glasses_prob", "rotation_deg"):
        p[key] = float(p[key])
    checks = [
        ("n_train", p["n_train"] >= 1), ("n_test", p["n_test"] >= 1),
        ("ambiguity", 0.0 <= p["ambiguity"] <= 1.0),
        ("annotators", len(p["annotators"]) == 2 and 1 <= p["annotators"][0] <= p["annotators"][1]),
        ("annotator_noise", 0.0 <= p["annotator_noise"] <= 1.0),
        ("image_size", p["image_size"] >= 16),
        ("original_size", len(p["original_size"]) == 2 and 64 <= p["original_size"][0] <= p["original_size"][1]),
        ("class_counts", len(p["class_counts"]) == 7 and min(p["class_counts"]) >= 0 and sum(p["class_counts"]) > 0),
        ("intensity", len(p["intensity"]) == 2 and 0 <= p["intensity"][0] <= p["intensity"][1]),
        ("dirichlet_alpha", p["dirichlet_alpha"] > 0),
    ]
    for name, ok in checks:
        if not ok:
            raise SynthFERError(f"SynthFER parameter {name}={p[name]!r} is out of range")
    return p


def sample_labels(n: int, rng: np.random.Generator, params: dict) -> dict[str, np.ndarray]:
    """Latent mixtures, annotator votes and majority labels for ``n`` faces (vectorised)."""
    c = len(CLASS_NAMES)
    freq = np.asarray(params["class_counts"], dtype=np.float64)
    dominant = rng.choice(c, size=n, p=freq / freq.sum())
    weight = params["ambiguity"] * rng.beta(2.0, 1.5, size=n)
    admix = rng.dirichlet([params["dirichlet_alpha"]] * c, size=n)
    latent = (1.0 - weight)[:, None] * np.eye(c)[dominant] + weight[:, None] * admix
    lo, hi = params["annotators"]
    k = rng.integers(lo, hi + 1, size=n)
    eta = params["annotator_noise"]
    votes = rng.multinomial(k, (1.0 - eta) * latent + eta / c)
    # majority vote; ties go to the class with the larger latent weight
    label = np.argmax(votes + 1e-3 * latent, axis=1)
    return dict(latent=latent, votes=votes, k=k, label=label, dominant=latent.argmax(1))


def _face_params(n: int, rng: np.random.Generator, latent: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    """Expression geometry + identity + nuisance parameters, each an array of length n."""
    u = lambda lo, hi: rng.uniform(lo, hi, size=n)  # noqa: E731 (local helper, never pickled)
    neutral = PROTOTYPES[6]
    intensity = u(*params["intensity"])
    expr = neutral + intensity[:, None] * (latent @ (PROTOTYPES - neutral))
    expr = expr + rng.normal(size=expr.shape) * _EXPR_JITTER * params["expr_jitter"]
    f = {name: expr[:, i] for i, name in enumerate(EXPR_DIMS)}
    # clipped so that every facial part stays inside its rendering window (face_layer)
    f["brow_angle"] = np.clip(f["brow_angle"], -1.5, 1.5)
    f["brow_height"] = np.clip(f["brow_height"], -0.2, 0.2)
    f["mouth_curve"] = np.clip(f["mouth_curve"], -1.3, 1.3)
    f["lip_corner"] = np.clip(f["lip_corner"], -1.3, 1.3)
    f["eye_open"] = np.clip(f["eye_open"], 0.12, 1.8)
    f["mouth_open"] = np.clip(f["mouth_open"], 0.0, 1.3)
    f["mouth_width"] = np.clip(f["mouth_width"], 0.55, 1.5)
    f["nose_wrinkle"] = np.clip(f["nose_wrinkle"], 0.0, 1.2)
    f.update(
        face_rx=u(0.62, 0.78), face_ry=u(0.82, 0.95), face_cy=u(0.0, 0.08),
        eye_dx=u(0.27, 0.34), eye_y=u(-0.17, -0.09), eye_size=u(0.85, 1.15), gaze=u(-0.03, 0.03),
        brow_thick=u(0.028, 0.048), mouth_y=u(0.43, 0.52), mouth_w0=u(0.22, 0.28), nose_y=u(0.13, 0.22),
        hair_depth=u(0.12, 0.36), hair_wave=u(0.0, 0.06), hair_phase=u(0, 2 * np.pi),
        hair_long=u(-0.2, 0.9), hair_back=(rng.random(n) < 0.8).astype(np.float64),
        light_angle=u(0, 2 * np.pi), light_gain=u(0.0, 0.45), blur=u(*params["blur"]),
        noise=u(*params["noise_std"]), bg_f1=u(1.0, 6.0), bg_f2=u(1.0, 6.0), bg_p1=u(0, 6.3), bg_p2=u(0, 6.3),
        occ=(rng.random(n) < params["occluder_prob"]).astype(np.float64),
        occ_x=u(-0.75, 0.75), occ_y=u(-0.6, 0.85), occ_r=u(0.10, 0.26), occ_round=(rng.random(n) < 0.5) * 1.0,
        glasses=(rng.random(n) < params["glasses_prob"]).astype(np.float64),
    )
    tone = u(0.0, 1.0)[:, None]
    light_skin, dark_skin = np.array([236, 204, 180]), np.array([98, 66, 48])
    f["skin"] = (1 - tone) * light_skin + tone * dark_skin + rng.normal(0, 8, size=(n, 3))
    f["hair"] = rng.uniform(10, 90, size=(n, 1)) * np.array([1.0, 0.8, 0.6]) + rng.uniform(0, 1, (n, 1)) * \
        (rng.random((n, 1)) < 0.2) * np.array([150, 110, 50])
    f["iris"] = rng.uniform(20, 110, size=(n, 3))
    f["bg0"] = rng.uniform(20, 235, size=(n, 3))
    f["bg1"] = rng.uniform(20, 235, size=(n, 3))
    f["occ_col"] = rng.uniform(10, 245, size=(n, 3))
    return f


def landmarks_canonical(f: dict[str, np.ndarray]) -> np.ndarray:
    """Five landmarks in the canonical face frame, [n, 5, 2]: eyes, nose tip, mouth corners.

    "Left" / "right" are image left / right (smaller x first), as in the MTCNN convention.
    """
    hw = f["mouth_w0"] * f["mouth_width"]
    corner_y = f["mouth_y"] - 0.06 * f["lip_corner"]
    pts = [(-f["eye_dx"], f["eye_y"]), (f["eye_dx"], f["eye_y"]), (0 * hw, f["nose_y"]),
           (-hw, corner_y), (hw, corner_y)]
    return np.stack([np.stack(p, axis=-1) for p in pts], axis=1)


# --------------------------------------------------------------------------------------------
# implicit shapes on a pixel grid (all arrays broadcast as [B, H, W])

def _ellipse(x, y, cx, cy, rx, ry):
    k = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (k - 1.0) * np.minimum(rx, ry), k


def _capsule(x, y, ax, ay, bx, by, r):
    px, py, dx, dy = x - ax, y - ay, bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.sqrt((px - h * dx) ** 2 + (py - h * dy) ** 2) - r


def _over(img, colour, alpha):
    """Alpha-composite ``colour`` ([B,1,1,3] or [B,H,W,3]) over ``img`` with coverage ``alpha``."""
    a = alpha[..., None]
    return img * (1.0 - a) + colour * a


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.array([r, g, b], dtype=np.float32)


def _columns(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-face parameters as float32 arrays that broadcast against [B, H, W] (colours: [B, 1, 1, 3])."""
    return {k: (v.reshape(-1, 1, 1) if v.ndim == 1 else v.reshape(v.shape[0], 1, 1, -1)).astype(np.float32)
            for k, v in f.items()}


def _light(c, x, y, turn=0.0):
    """Lighting gain, linear in the face frame; ``turn`` rotates the light direction (radians)."""
    angle = c["light_angle"] + turn
    return 1.0 + c["light_gain"] * (x * np.cos(angle) + y * np.sin(angle)) / 1.2


def _background(c, u, v, turn=0.0):
    """Two colours mixed by a smooth separable texture, under the lighting gradient: [B, H, W, 3].

    ``u`` ([B or 1, 1, W]) and ``v`` ([B or 1, H, 1]) are axis-aligned image coordinates in face units.
    """
    t = 0.5 + 0.5 * np.sin(c["bg_f1"] * u + c["bg_p1"]) * np.sin(c["bg_f2"] * v + c["bg_p2"])
    bg = c["bg0"] + (c["bg1"] - c["bg0"]) * t[..., None]
    bg *= _light(c, u, v, turn)[..., None]
    return bg


def _window(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float):
    """Index of the axis-aligned part of a shared grid (x, y: [1, H, W]) inside [x0, x1] x [y0, y1]."""
    cols = np.nonzero((x[0, 0] >= x0) & (x[0, 0] <= x1))[0]
    rows = np.nonzero((y[0, :, 0] >= y0) & (y[0, :, 0] <= y1))[0]
    if len(cols) == 0 or len(rows) == 0:
        return None
    return (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))


def face_layer(c: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, edge: np.ndarray):
    """The face (hair, head, features, glasses, occluder) on a shared canonical grid x, y ([1, H, W]).

    ``edge`` ([B,1,1]) is the anti-aliasing / blur width in canonical units. Returns the lit colour
    premultiplied by coverage [B, H, W, 3] and the coverage [B, H, W] (float32). Each facial part is
    evaluated only inside a window that bounds it for every parameter value (see ``_face_params``).
    """
    def cov(sd):  # anti-aliased coverage of the region sd < 0
        return np.clip(0.5 - sd / edge, 0.0, 1.0)

    def over(view, colour, a):  # in-place alpha compositing on a view of the layer
        view += a[..., None] * (colour - view)

    b = edge.shape[0]
    img = np.zeros((b,) + x.shape[1:] + (3,), dtype=np.float32)
    alpha = np.zeros((b,) + x.shape[1:], dtype=np.float32)
    skin = c["skin"]
    # hair behind the head, head with edge shading, fringe above a wavy hair line (full grid)
    head_sd, head_k = _ellipse(x, y, 0.0, c["face_cy"], c["face_rx"], c["face_ry"])
    back_sd, _ = _ellipse(x, y, 0.0, c["face_cy"] - 0.08, c["face_rx"] * 1.14, c["face_ry"] * 1.06)
    a = cov(np.maximum(back_sd, y - c["hair_long"])) * c["hair_back"]
    over(img, c["hair"], a)
    alpha += a
    shade = 1.0 - 0.28 * np.clip((head_k - 0.72) / 0.28, 0.0, 1.0)
    a = cov(head_sd)
    over(img, skin * shade[..., None], a)
    alpha += a * (1.0 - alpha)
    hairline = c["face_cy"] - c["face_ry"] + c["hair_depth"] + c["hair_wave"] * np.sin(7 * x + c["hair_phase"])
    over(img, c["hair"], cov(np.maximum(head_sd, y - hairline)))
    # eyebrows (the inner end rises with brow_angle)
    w = _window(x, y, -0.65, 0.65, -0.85, 0.15)
    if w is not None:
        xs, ys, v = x[w], y[w], img[w]
        for s in (-1.0, 1.0):
            base = c["eye_y"] - 0.19 - c["brow_height"]
            ax, bx = s * (c["eye_dx"] - 0.13), s * (c["eye_dx"] + 0.15)
            sd = _capsule(xs, ys, ax, base - 0.09 * c["brow_angle"], bx, base + 0.035 * c["brow_angle"],
                          c["brow_thick"])
            over(v, c["hair"] * 0.8, cov(sd))
    # eyes: sclera, iris, pupil, lash line; glasses
    w = _window(x, y, -0.65, 0.65, -0.42, 0.12)
    if w is not None:
        xs, ys, v, av = x[w], y[w], img[w], alpha[w]
        for s in (-1.0, 1.0):
            ex = s * c["eye_dx"]
            ry = np.maximum(0.065 * c["eye_size"] * c["eye_open"], 0.006)
            eye_sd, _ = _ellipse(xs, ys, ex, c["eye_y"], 0.13 * c["eye_size"], ry)
            inside = cov(eye_sd)
            over(v, _rgb(238, 236, 230), inside)
            r_iris = 0.05 * c["eye_size"]
            iris_sd, _ = _ellipse(xs, ys, ex + c["gaze"], c["eye_y"], r_iris, r_iris)
            over(v, c["iris"], cov(iris_sd) * inside)
            over(v, _rgb(12, 10, 10), cov(iris_sd + 0.56 * r_iris) * inside)
            over(v, _rgb(30, 22, 20), cov(np.abs(eye_sd) - 0.007))
        if c["glasses"].any():
            frame = _rgb(25, 25, 30)
            sds = [np.abs(_ellipse(xs, ys, s * c["eye_dx"], c["eye_y"], 0.19, 0.14)[0]) - 0.012 for s in (-1.0, 1.0)]
            sds.append(_capsule(xs, ys, -c["eye_dx"] + 0.19, c["eye_y"], c["eye_dx"] - 0.19, c["eye_y"], 0.012))
            for sd in sds:
                a = c["glasses"] * cov(sd)
                over(v, frame, a)
                av += a * (1.0 - av)
    # nose: shaded bridge, nostrils, wrinkles
    dark = skin * 0.62
    w = _window(x, y, -0.15, 0.15, -0.14, 0.32)
    if w is not None:
        xs, ys, v = x[w], y[w], img[w]
        over(v, skin * 0.85, 0.6 * cov(_capsule(xs, ys, 0.03, c["eye_y"] + 0.08, 0.05, c["nose_y"] - 0.03, 0.012)))
        for s in (-1.0, 1.0):
            over(v, dark, cov(_ellipse(xs, ys, s * 0.055, c["nose_y"] + 0.01, 0.032, 0.016)[0]))
        wr = np.clip(c["nose_wrinkle"], 0.0, 1.0)
        for i in range(3):
            yy = c["eye_y"] + 0.08 + 0.045 * i
            over(v, dark, wr * cov(_capsule(xs, ys, -0.07, yy, 0.07, yy - 0.01 * (i - 1), 0.009)))
    # nasolabial folds and mouth: lips, opening, teeth, crease
    w = _window(x, y, -0.55, 0.55, 0.0, 1.08)
    if w is not None:
        xs, ys, v = x[w], y[w], img[w]
        wr = np.clip(c["nose_wrinkle"], 0.0, 1.0)
        hw = c["mouth_w0"] * c["mouth_width"]
        corner_y = c["mouth_y"] - 0.06 * c["lip_corner"]
        for s in (-1.0, 1.0):
            sd = _capsule(xs, ys, s * 0.08, c["nose_y"] + 0.03, s * (hw + 0.03), corner_y - 0.01, 0.009)
            over(v, dark, (0.3 + 0.6 * wr) * cov(sd))
        t2 = np.clip((xs / hw) ** 2, 0.0, 1.0)
        mid = c["mouth_y"] + 0.13 * c["mouth_curve"] * (1 - t2) - 0.06 * c["lip_corner"] * t2 ** 2
        bulge = np.sqrt(1 - t2)
        half = 0.13 * c["mouth_open"] * bulge
        xlim = np.abs(xs) - hw
        dy = np.abs(ys - mid)
        lip_col = skin * _rgb(0.78, 0.5, 0.5) + _rgb(40, 0, 0)
        over(v, lip_col, cov(np.maximum(dy - (half + 0.038 * bulge), xlim)))
        inner_sd = np.maximum(dy - half, xlim)
        over(v, _rgb(45, 12, 16), cov(inner_sd))
        teeth_sd = np.maximum(inner_sd, ys - (mid - 0.3 * half))
        over(v, _rgb(235, 232, 222), cov(teeth_sd) * np.clip(c["mouth_open"] * 3 - 0.3, 0, 1))
        over(v, _rgb(70, 25, 28), cov(np.maximum(dy - 0.006, xlim)))
    # occluder (a round blob or a box)
    if c["occ"].any():
        occ_round, _ = _ellipse(x, y, c["occ_x"], c["occ_y"], c["occ_r"], c["occ_r"] * 0.8)
        occ_box = np.maximum(np.abs(x - c["occ_x"]) - c["occ_r"], np.abs(y - c["occ_y"]) - 0.6 * c["occ_r"])
        a = c["occ"] * cov(np.where(c["occ_round"] > 0.5, occ_round, occ_box))
        over(img, c["occ_col"], a)
        alpha += a * (1.0 - alpha)
    img *= _light(c, x, y)[..., None]
    return img, alpha


def _finish(img: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
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


def _edge(c, pixel: float) -> np.ndarray:
    return np.maximum(np.float32(0.8 * pixel), c["blur"] * np.float32(2 * ALIGNED_HALF_EXTENT / 100.0))


def _aligned_grid(size: int) -> tuple[np.ndarray, np.ndarray, float]:
    coords = ((np.arange(size) + 0.5) / size * 2 - 1) * ALIGNED_HALF_EXTENT
    y, x = np.meshgrid(coords, coords, indexing="ij")
    return x[None], y[None], 2 * ALIGNED_HALF_EXTENT / size


def _original_geometry(n: int, rng: np.random.Generator, params: dict) -> dict[str, np.ndarray]:
    lo, hi = params["original_size"]
    size = rng.integers(lo, hi + 1, size=n)
    scale = rng.uniform(0.27, 0.36, size=n) * size              # pixels per canonical unit
    angle = np.deg2rad(rng.uniform(-params["rotation_deg"], params["rotation_deg"], size=n))
    cx = size / 2 + rng.uniform(-0.09, 0.09, size=n) * size
    cy = size / 2 + rng.uniform(-0.09, 0.09, size=n) * size
    return dict(size=size, scale=scale, angle=angle, cx=cx, cy=cy)


def _canonical_to_pixel(pts: np.ndarray, g: dict, idx) -> np.ndarray:
    """Canonical points [n, K, 2] -> original-image pixel coordinates (pixel centres at +0.5)."""
    ca, sa = np.cos(g["angle"][idx])[:, None], np.sin(g["angle"][idx])[:, None]
    s = g["scale"][idx][:, None]
    px = g["cx"][idx][:, None] + s * (ca * pts[..., 0] - sa * pts[..., 1])
    py = g["cy"][idx][:, None] + s * (sa * pts[..., 0] + ca * pts[..., 1])
    return np.stack([px, py], axis=-1)


def _original_axes(g: dict, idx: np.ndarray, canvas: int):
    """Axis-aligned original-image pixel coordinates in face units: u [B,1,W], v [B,H,1]."""
    px = (np.arange(canvas) + 0.5).astype(np.float32)
    s = g["scale"][idx].astype(np.float32)[:, None, None]
    u = (px[None, None, :] - g["cx"][idx].astype(np.float32)[:, None, None]) / s
    v = (px[None, :, None] - g["cy"][idx].astype(np.float32)[:, None, None]) / s
    return u, v


def _warp_layer(face: np.ndarray, alpha: np.ndarray, g: dict, idx: np.ndarray, canvas: int, size: int) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# writing the data set

def default_root() -> Path:
    """``$ADADF_DATA/synthfer`` when ADADF_DATA is set, else ``<repo>/data/synthfer``."""
    env = os.environ.get("ADADF_DATA")
    base = Path(env) if env else Path(__file__).resolve().parent.parent / "data"
    return base / "synthfer"


def _split_names(split: str, n: int) -> list[str]:
    width = max(5 if split == "train" else 4, len(str(n)))
    return [f"{split}_{i + 1:0{width}d}" for i in range(n)]


def _generate_split(split: str, n: int, params: dict, out: Path, progress: bool) -> dict:
    from tqdm.auto import tqdm

    code = 0 if split == "train" else 1
    rng = np.random.default_rng(np.random.SeedSequence([params["seed"], code, 0]))
    lab = sample_labels(n, rng, params)
    f = _face_params(n, rng, lab["latent"], params)
    geo = _original_geometry(n, rng, params)
    names = _split_names(split, n)
    landmarks = _canonical_to_pixel(landmarks_canonical(f), geo, np.arange(n))
    size = params["image_size"]
    ax, ay, apix = _aligned_grid(size)
    ax, ay = ax.astype(np.float32), ay.astype(np.float32)
    for b0 in tqdm(range(0, n, _BATCH), desc=f"SynthFER {split}", disable=not progress, leave=False):
        idx = np.arange(b0, min(n, b0 + _BATCH))
        c = _columns({k: v[idx] for k, v in f.items()})
        rng_b = np.random.default_rng(np.random.SeedSequence([params["seed"], code, 1 + b0 // _BATCH]))
        face, alpha = face_layer(c, ax, ay, _edge(c, apix))
        bg = _background(c, ax[:, :1, :], ay[:, :, :1])
        aligned = _finish(bg * (1 - alpha[..., None]) + face, c, rng_b)
        canvas = int(geo["size"][idx].max())
        ou, ov = _original_axes(geo, idx, canvas)
        # the light turns with the face: in image axes its direction is light_angle + rotation
        bg = _background(c, ou, ov, geo["angle"][idx].astype(np.float32)[:, None, None])
        warped = _warp_layer(face, alpha, geo, idx, canvas, size)
        original = _finish(bg * (1 - warped[..., 3:]) + warped[..., :3], c, rng_b)
        for j, i in enumerate(idx):
            Image.fromarray(aligned[j]).save(out / "Image" / "aligned" / f"{names[i]}_aligned.jpg",
                                             quality=JPEG_QUALITY)
            s = int(geo["size"][i])
            Image.fromarray(original[j, :s, :s]).save(out / "Image" / "original" / f"{names[i]}.jpg",
                                                      quality=JPEG_QUALITY)
    return dict(names=names, lab=lab, landmarks=landmarks, sizes=geo["size"])


def _fmt(v: float) -> str:
    return f"{v:.6f}"


def _write_tables(out: Path, splits: list[tuple[str, dict]]) -> None:
    emo = out / "EmoLabel"
    lines, dist, marks = [], [], []
    dist.append(",".join(["name", "votes"] + [f"p_{c}" for c in CLASS_NAMES] + [f"latent_{c}" for c in CLASS_NAMES]))
    marks.append("name,width,height,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,"
                 "mouth_left_x,mouth_left_y,mouth_right_x,mouth_right_y")
    for _, r in splits:
        lab = r["lab"]
        for i, stem in enumerate(r["names"]):
            name = f"{stem}.jpg"
            lines.append(f"{name} {int(lab['label'][i]) + 1}")
            votes = lab["votes"][i]
            props = votes / votes.sum()
            dist.append(",".join([name, str(int(votes.sum()))] + [_fmt(v) for v in props]
                                 + [_fmt(v) for v in lab["latent"][i]]))
            s = int(r["sizes"][i])
            marks.append(",".join([name, str(s), str(s)] + [f"{v:.2f}" for v in r["landmarks"][i].ravel()]))
    (emo / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    (emo / "distribution.csv").write_text("\n".join(dist) + "\n")
    (emo / "landmarks.csv").write_text("\n".join(marks) + "\n")


def _public_params(p: dict) -> dict:
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in p.items()}


def generate(root: str | Path, n_train: int = 2000, n_test: int = 800, seed: int = 0,
             ambiguity: float = DEFAULTS["ambiguity"], annotators: Sequence[int] = (10, 40),
             image_size: int = 100, progress: bool = True, **params) -> dict:
    """Write SynthFER to ``root`` and return the contents of its ``synthfer.json``.

    Idempotent: when ``root/synthfer.json`` records the same parameters, nothing is written.
    A non-empty ``root`` holding anything else raises :class:`SynthFERError` (nothing is overwritten).
    Extra keyword parameters: see ``DEFAULTS`` (annotator_noise, intensity, noise_std, blur, ...).
    """
    root = Path(root)
    p = _normalise_params(dict(params, n_train=n_train, n_test=n_test, seed=seed, ambiguity=ambiguity,
                               annotators=annotators, image_size=image_size))
    p = _public_params(p)
    meta_path = root / "synthfer.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SynthFERError(f"{meta_path} is not a readable SynthFER record ({e}); delete {root} to regenerate")
        if meta.get("params") == p and meta.get("version") == GENERATOR_VERSION:
            return dict(meta, seconds=0.0)
        recorded = dict(meta.get("params") or {}, version=meta.get("version"))
        asked = dict(p, version=GENERATOR_VERSION)
        diff = {k: (recorded.get(k), asked[k]) for k in asked if recorded.get(k) != asked[k]}
        raise SynthFERError(f"{root} already holds a SynthFER with different parameters or generator version "
                            f"(recorded vs asked: {diff}); choose another root or delete that folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SynthFERError(f"{root} exists and is not an empty folder or a SynthFER root (no synthfer.json); "
                            "refusing to overwrite it: choose another root or delete it")
    start = time.time()
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in ("EmoLabel", "Image/aligned", "Image/original"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        splits = [(s, _generate_split(s, p[f"n_{s}"], p, tmp, progress)) for s in ("train", "test")]
        _write_tables(tmp, splits)
        meta = dict(version=GENERATOR_VERSION, params=p, class_names=CLASS_NAMES, jpeg_quality=JPEG_QUALITY,
                    aligned_half_extent=ALIGNED_HALF_EXTENT)
        total_dis, total = 0, 0
        for s, r in splits:
            lab = r["lab"]
            dis = int((lab["label"] != lab["dominant"]).sum())
            total_dis += dis
            total += len(r["names"])
            meta[s] = dict(count=len(r["names"]),
                           class_counts={c: int((lab["label"] == i).sum()) for i, c in enumerate(CLASS_NAMES)},
                           disagreement_share=dis / len(r["names"]),
                           mean_votes=float(lab["k"].mean()))
        meta["disagreement_share"] = total_dis / total
        meta["disagreement_definition"] = ("share of images whose majority-vote label differs from the argmax "
                                           "of their latent expression mixture")
        # written last: a root without it is incomplete. No timings in it: same seed => same bytes.
        (tmp / "synthfer.json").write_text(json.dumps(meta, indent=2) + "\n")
        if root.exists():
            root.rmdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dict(meta, seconds=round(time.time() - start, 2))


def ensure(root: Optional[str | Path] = None, **params) -> Path:
    """Generate SynthFER at ``root`` (default :func:`default_root`) unless it is already there; return root."""
    root = Path(root) if root is not None else default_root()
    generate(root, **params)
    return root


def sample_grid_figure(root: str | Path, per_class: int = 8, split: str = "train"):
    """A matplotlib Figure: one row per class, ``per_class`` aligned samples with their vote share."""
    import matplotlib.pyplot as plt

    root = Path(root)
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    if not label_file.exists():
        raise SynthFERError(f"{label_file} not found: {root} is not a SynthFER/RAF-DB root")
    shares: dict[str, float] = {}
    dist_file = root / "EmoLabel" / "distribution.csv"
    if dist_file.exists():
        rows = dist_file.read_text().splitlines()
        for row in rows[1:]:
            parts = row.split(",")
            shares[parts[0]] = max(float(v) for v in parts[2:2 + len(CLASS_NAMES)])
    by_class: dict[int, list[str]] = {i: [] for i in range(len(CLASS_NAMES))}
    for line in label_file.read_text().splitlines():
        if line.startswith(split + "_"):
            name, lab = line.split()
            if len(by_class[int(lab) - 1]) < per_class:
                by_class[int(lab) - 1].append(name)
    fig, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(1.3 * per_class, 1.45 * len(CLASS_NAMES)),
                             squeeze=False)
    for ci, cname in enumerate(CLASS_NAMES):
        for j in range(per_class):
            ax = axes[ci][j]
            ax.axis("off")
            if j < len(by_class[ci]):
                name = by_class[ci][j]
                img = Image.open(root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg").convert("RGB")
                ax.imshow(np.asarray(img))
                share = f" {shares[name]:.0%}" if name in shares else ""
                ax.set_title(f"{cname}{share}", fontsize=7)
    fig.suptitle(f"SynthFER {split} samples by majority label (title: label, vote share)", fontsize=9)
    fig.tight_layout()
    return fig


def cli_main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="adadf generate-synthfer", description="write the SynthFER data set")
    ap.add_argument("--out", default=None, help="output root (default: %s)" % default_root())
    ap.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    ap.add_argument("--n-test", type=int, default=DEFAULTS["n_test"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ambiguity", type=float, default=DEFAULTS["ambiguity"])
    ap.add_argument("--annotators", type=int, nargs=2, default=list(DEFAULTS["annotators"]), metavar=("MIN", "MAX"))
    ap.add_argument("--annotator-noise", type=float, default=DEFAULTS["annotator_noise"])
    ap.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    root = Path(a.out) if a.out else default_root()
    try:
        meta = generate(root, n_train=a.n_train, n_test=a.n_test, seed=a.seed, ambiguity=a.ambiguity,
                        annotators=a.annotators, image_size=a.image_size, annotator_noise=a.annotator_noise,
                        progress=not a.no_progress)
    except SynthFERError as e:
        print(f"adadf generate-synthfer: {e}", file=sys.stderr)
        return 2
    print(f"SynthFER at {root} (seed {meta['params']['seed']}, generated in {meta['seconds']} s)")
    for split in ("train", "test"):
        m = meta[split]
        counts = ", ".join(f"{c} {n}" for c, n in m["class_counts"].items())
        print(f"  {split}: {m['count']} images; {counts}; "
              f"majority vote != dominant latent class: {m['disagreement_share']:.1%}")
    print(f"  disagreement share overall: {meta['disagreement_share']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
