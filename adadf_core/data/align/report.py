"""How far a detector's landmarks fall from recorded ones (SynthFER's ``EmoLabel/landmarks.csv``):
detection rate, pixel error per landmark and NME (error / inter-ocular distance)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from adadf_core.data.align.detectors import Detector, Face, LandmarkFileDetector, make_detector
from adadf_core.data.align.geometry import LANDMARK_NAMES
from adadf_core.data.align.pixels import load_rgb
from adadf_core.utils.progress import bar as tqdm


@dataclass
class LandmarkErrorReport:
    """``per_image``: one row per image (detected, error per landmark in px, mean error, NME);
    ``summary``: one-row table (detection rate, mean / median pixel error, mean NME, per-landmark means).
    NME = mean landmark error divided by the recorded inter-ocular distance."""
    per_image: pd.DataFrame
    summary: pd.DataFrame


def landmark_error_report(root: str | os.PathLike | None = None, *, images_dir=None, landmarks_csv=None,
                          detector: str | Detector = "mtcnn", limit: int | None = None,
                          batch_size: int = 16, progress: bool = True) -> LandmarkErrorReport:
    """Compare a detector's landmarks with recorded ones (SynthFER: ``root/Image/original`` and
    ``root/EmoLabel/landmarks.csv``; or give ``images_dir`` and ``landmarks_csv``).

    An image counts as detected when some detected face's box holds the recorded nose tip; of those
    faces the one whose landmarks are closest to the recorded ones is scored. ``limit`` takes the first
    N recorded images (sorted by name)."""
    if root is not None:
        images_dir = images_dir or Path(root) / "Image" / "original"
        landmarks_csv = landmarks_csv or Path(root) / "EmoLabel" / "landmarks.csv"
    if images_dir is None or landmarks_csv is None:
        raise ValueError("give root, or both images_dir and landmarks_csv")
    images_dir = Path(images_dir)
    recorded = LandmarkFileDetector(landmarks_csv)
    names = sorted(recorded.names())
    if limit is not None:
        names = names[:int(limit)]
    if not names:
        raise ValueError(f"{landmarks_csv} lists no images")
    owns = isinstance(detector, str)
    det = make_detector(detector, images_dir)

    rows = []
    try:
        for start in tqdm(range(0, len(names), batch_size), desc="landmark error", disable=not progress):
            chunk = names[start:start + batch_size]
            images, kept = [], []
            for name in chunk:
                try:
                    images.append(load_rgb(images_dir / name)[0])
                    kept.append(name)
                except ValueError as exc:
                    rows.append({"name": name, "detected": False, "message": str(exc)})
            for name, image, faces in zip(kept, images, det.detect(images, names=kept) if images else []):
                truth = recorded.detect([image], names=[name])[0][0].landmarks
                rows.append(_score_detection(name, truth, faces))
    finally:
        if owns and hasattr(det, "close"):
            det.close()
    per_image = pd.DataFrame(rows)
    return LandmarkErrorReport(per_image=per_image, summary=_summarise_errors(per_image, det.name))


def _score_detection(name: str, truth: np.ndarray, faces: Sequence[Face]) -> dict:
    nose_x, nose_y = truth[2]
    holding = [f for f in faces if f.box[0] <= nose_x <= f.box[2] and f.box[1] <= nose_y <= f.box[3]]
    row = {"name": name, "detected": bool(holding), "n_faces": len(faces)}
    if not holding:
        row["message"] = "no detected face holds the recorded nose tip" if faces else "no face detected"
        return row
    errors = [np.linalg.norm(f.landmarks - truth, axis=1) for f in holding]
    best = int(np.argmin([e.mean() for e in errors]))
    err = errors[best]
    interocular = float(np.linalg.norm(truth[1] - truth[0]))
    row.update({f"err_{n}": float(e) for n, e in zip(LANDMARK_NAMES, err)})
    row.update(confidence=holding[best].confidence, err_mean=float(err.mean()), interocular=interocular,
               nme=float(err.mean() / interocular) if interocular > 0 else np.nan)
    return row


def _summarise_errors(per_image: pd.DataFrame, detector_name: str) -> pd.DataFrame:
    n = len(per_image)
    hit = per_image[per_image["detected"]] if n else per_image
    summary = {"detector": detector_name, "n_images": n, "n_detected": len(hit),
               "detection_rate": round(len(hit) / n, 4) if n else np.nan}
    if len(hit):
        summary.update(mean_error_px=round(float(hit["err_mean"].mean()), 3),
                       median_error_px=round(float(hit["err_mean"].median()), 3),
                       mean_nme=round(float(hit["nme"].mean()), 4),
                       mean_interocular_px=round(float(hit["interocular"].mean()), 2))
        summary.update({f"mean_err_{n}_px": round(float(hit[f"err_{n}"].mean()), 3) for n in LANDMARK_NAMES})
    return pd.DataFrame([summary])
