"""Unaligned SFEW-style frames made from real photographs that ship with scikit-image, for notebook 01's
SFEW walk-through (unaligned frames -> ``adadf align`` -> ``adadf check-data`` -> training).

`sfew_like_frames` takes the face photographs of scikit-image's LFW subset (real faces, 25x25, scaled up)
and some of its non-face patches, puts each on a canvas, turns, scales and shifts it by a known random
similarity transform (as a film frame holds a face at any angle and place), and writes the frames into
SFEW 2.0's tree ``Train/<Emotion>/`` and ``Val/<Emotion>/``. The reference landmarks of a frame are the
detector's landmarks on the upright photograph carried through the known transform, written to
``EmoLabel/landmarks.csv``, so `report.landmark_error_report` can measure how far detection on the
turned frame falls from them. The emotion folders are stand-ins: these faces carry no expression labels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from skimage import data
from skimage.transform import resize, SimilarityTransform, warp

from adadf_core.data.align.detectors import choose_face, Detector
from adadf_core.data.align.geometry import LANDMARK_NAMES
from adadf_core.data.classes import SFEW_CLASSES

SFEW_EMOTIONS = tuple(SFEW_CLASSES)   # the folder names of the SFEW layout


def _lfw_photos(n_faces: int, n_non_faces: int, face_px: int) -> list[tuple[str, np.ndarray]]:

    lfw = data.lfw_subset()                 # 200 images: the first 100 faces, the next 100 not faces
    if n_faces > 100 or n_non_faces > 100:
        raise ValueError("scikit-image's LFW subset holds 100 faces and 100 non-faces")
    picks = [(f"face{i:03d}", lfw[i]) for i in range(n_faces)]
    picks += [(f"nonface{i:03d}", lfw[100 + i]) for i in range(n_non_faces)]
    out = []
    for name, grey in picks:
        big = resize(grey, (face_px, face_px), order=1, anti_aliasing=False)
        out.append((name, np.stack([np.clip(np.rint(big * 255), 0, 255).astype(np.uint8)] * 3, axis=-1)))
    return out


def _on_canvas(photo: np.ndarray, canvas: int) -> np.ndarray:
    board = np.full((canvas, canvas, 3), 128, np.uint8)
    top = (canvas - photo.shape[0]) // 2
    board[top:top + photo.shape[0], top:top + photo.shape[1]] = photo
    return board


def _random_similarity(rng: np.random.Generator, canvas: int, max_angle: float):

    c = canvas / 2
    shift = rng.uniform(-canvas * 0.08, canvas * 0.08, size=2)
    return (SimilarityTransform(translation=(-c, -c))
            + SimilarityTransform(scale=rng.uniform(0.85, 1.15), rotation=np.deg2rad(rng.uniform(-max_angle, max_angle)))
            + SimilarityTransform(translation=(c + shift[0], c + shift[1])))


def sfew_like_frames(dst: str | os.PathLike, detector: Detector, n_faces: int = 49, n_non_faces: int = 7,
                     seed: int = 0, canvas: int = 160, face_px: int = 100, max_angle: float = 25.0) -> pd.DataFrame:
    """Write the frames (see the module docstring) under ``dst`` and return one row per frame: ``name``
    (relative path), ``split``, ``emotion`` (a stand-in), ``kind`` (face / non-face) and ``reference``
    (whether the detector found the upright photo, so the frame has reference landmarks).

    Faces with a reference are dealt to the seven emotion folders in turn, every third round of seven
    to ``Val`` (so both splits hold every class); the other frames go to ``Train``."""
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    photos = _lfw_photos(n_faces, n_non_faces, face_px)
    upright = [_on_canvas(p, canvas) for _, p in photos]
    found = detector.detect(upright, names=[n for n, _ in photos])
    rows, records, dealt, others = [], [], 0, 0
    for (name, _), board, faces in zip(photos, upright, found):
        tform = _random_similarity(rng, canvas, max_angle)
        frame = warp(board, tform.inverse, output_shape=board.shape[:2], order=1, mode="edge", preserve_range=True)
        face = choose_face(faces)
        if face is not None and name.startswith("face"):
            emotion, split = SFEW_EMOTIONS[dealt % 7], "Val" if (dealt // 7) % 3 == 1 else "Train"
            dealt += 1
        else:
            emotion, split = SFEW_EMOTIONS[others % 7], "Train"
            others += 1
        rel = f"{split}/{emotion}/{name}.png"
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8)).save(dst / rel)
        if face is not None:
            points = tform(face.landmarks)
            records.append({"name": rel, "width": canvas, "height": canvas,
                            **{f"{n}_{a}": float(v) for n, pt in zip(LANDMARK_NAMES, points) for a, v in zip("xy", pt)}})
        rows.append(dict(name=rel, split=split, emotion=emotion,
                         kind="face" if name.startswith("face") else "non-face", reference=face is not None))
    (dst / "EmoLabel").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(dst / "EmoLabel" / "landmarks.csv", index=False)
    return pd.DataFrame(rows)
