"""The five-point similarity geometry (paper section 4.2): the template and the warp onto it.

Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner, where
"left" means the left side *of the image* (smaller x), as MTCNN reports them.
"""
from __future__ import annotations

import numpy as np
from skimage.transform import SimilarityTransform, warp

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# The standard five-point template of the 112x112 face crops used by ArcFace/InsightFace
# (x, y in pixels, landmark order as above). The older 96x112 template (SphereFace/CosFace) is the same
# points shifted 8 px to the left. `reference_template` scales either to the output size.
TEMPLATE_112x112 = np.array([
    [38.2946, 51.6963],   # left eye
    [73.5318, 51.5014],   # right eye
    [56.0252, 71.7366],   # nose tip
    [41.5493, 92.3655],   # left mouth corner
    [70.7299, 92.2041],   # right mouth corner
])
TEMPLATE_96x112 = TEMPLATE_112x112 - np.array([8.0, 0.0])
_TEMPLATES = {"112x112": (TEMPLATE_112x112, (112, 112)), "96x112": (TEMPLATE_96x112, (96, 112))}


def size_wh(size: int | tuple[int, int]) -> tuple[int, int]:
    """An output size given as an int (square) or (width, height) -> (width, height)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    width, height = size
    return int(width), int(height)


def reference_template(size: int | tuple[int, int] = 100, base: str = "112x112") -> np.ndarray:
    """The five template points [5, 2] for an output of ``size`` (int or (width, height)).

    ``base="112x112"`` (default) scales the ArcFace 112x112 template, ``x * width/112, y * height/112``;
    for 100x100 that puts the eyes at (34.2, 46.2) and (65.7, 46.0), the nose tip at (50.0, 64.1) and the
    mouth corners at (37.1, 82.5) and (63.2, 82.3). ``base="96x112"`` scales the 96x112 template by
    ``width/96, height/112``.
    """
    if base not in _TEMPLATES:
        raise ValueError(f"template base must be one of {list(_TEMPLATES)}, not {base!r}")
    points, (base_w, base_h) = _TEMPLATES[base]
    width, height = size_wh(size)
    return points * np.array([width / base_w, height / base_h])


def similarity_to_template(landmarks: np.ndarray, template: np.ndarray):
    """The least-squares similarity transform (skimage) taking ``landmarks`` [5, 2] onto ``template``.

    Raises ValueError for degenerate landmarks (all points on top of each other, NaN)."""
    src = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(template, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"landmarks {src.shape} and template {dst.shape} differ in shape")
    if not np.isfinite(src).all():
        raise ValueError("landmarks contain NaN or infinite values")
    if hasattr(SimilarityTransform, "from_estimate"):     # scikit-image >= 0.26
        tform = SimilarityTransform.from_estimate(src, dst)
        ok = bool(tform)
    else:
        tform = SimilarityTransform()
        ok = tform.estimate(src, dst)
    if not ok or not np.isfinite(np.asarray(tform.params)).all() or abs(np.linalg.det(tform.params[:2, :2])) < 1e-12:
        raise ValueError(f"cannot fit a similarity transform to these landmarks: {src.round(1).tolist()}")
    return tform


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int | tuple[int, int] = 100,
               template: np.ndarray | None = None, border: str = "constant") -> np.ndarray:
    """Warp ``image`` so its five ``landmarks`` land on the template; returns uint8 [H, W, 3] (or [H, W]
    for a 2-D input). Bilinear interpolation; outside the photo is black (``border="constant"``) or the
    nearest edge pixel (``"edge"``)."""
    width, height = size_wh(size)
    if template is None:
        template = reference_template((width, height))
    tform = similarity_to_template(landmarks, template)
    image = np.asarray(image)
    warped = warp(image, tform.inverse, output_shape=(height, width), order=1, mode=border, cval=0,
                  preserve_range=True)
    return np.clip(np.rint(warped), 0, 255).astype(np.uint8)
