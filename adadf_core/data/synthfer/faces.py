"""Per-face parameters: expression geometry from the latent mixture, identity, nuisances, colours.

The expression geometry is the latent-mixture-weighted blend of per-class prototypes (``PROTOTYPES``),
scaled by a per-face intensity and perturbed per identity; everything else (face shape, hair, eye
and mouth placement, lighting, background, blur, noise, occluder, glasses, colours) is drawn
independently of the expression. All values are in the canonical face frame (``frames.py``).
"""
from __future__ import annotations

import numpy as np

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
# clipped so that every facial part stays inside its rendering window (render.face_layer)
_EXPR_RANGE = dict(brow_angle=(-1.5, 1.5), brow_height=(-0.2, 0.2), mouth_curve=(-1.3, 1.3),
                   lip_corner=(-1.3, 1.3), eye_open=(0.12, 1.8), mouth_open=(0.0, 1.3),
                   mouth_width=(0.55, 1.5), nose_wrinkle=(0.0, 1.2))


def face_params(n: int, rng: np.random.Generator, latent: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    """Expression geometry + identity + nuisance parameters, each an array of length n.

    The order of the draws from ``rng`` is part of the deterministic recipe: do not reorder them.
    """
    u = lambda lo, hi: rng.uniform(lo, hi, size=n)  # noqa: E731 (local helper, never pickled)
    neutral = PROTOTYPES[6]
    intensity = u(*params["intensity"])
    expr = neutral + intensity[:, None] * (latent @ (PROTOTYPES - neutral))
    expr = expr + rng.normal(size=expr.shape) * _EXPR_JITTER * params["expr_jitter"]
    f = {name: expr[:, i] for i, name in enumerate(EXPR_DIMS)}
    for name, (lo, hi) in _EXPR_RANGE.items():
        f[name] = np.clip(f[name], lo, hi)
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
