"""Face detectors with five landmarks, and the choice of the face an image is aligned on.

- `Face`: one detection (box, confidence, five landmarks in image pixels, `LANDMARK_NAMES` order).
- `Detector` protocol: ``detect(images, names=None) -> list[list[Face]]``. Two implementations:
  `MTCNNDetector` (the `mtcnn` package, run in its own process, `_mtcnn_worker`, so TensorFlow never
  shares a process with torch) and `LandmarkFileDetector` (recorded landmarks from a CSV such as
  SynthFER's ``EmoLabel/landmarks.csv``; no TensorFlow needed). `make_detector` builds one from a string.
- `choose_face` (rule ``largest`` / ``most_confident``) and `align_detected` (in-memory images and their
  detections -> aligned crops, for notebooks).
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable, Sequence

import numpy as np
import pandas as pd

from adadf_core.data.align.geometry import LANDMARK_NAMES, align_face
from adadf_core.data.align.pixels import as_rgb_uint8
from adadf_core.data.labelfiles import read_affectnet_csv
from adadf_core.utils.fileio import sha256_file

MULTI_FACE_RULES = ("largest", "most_confident")
# The child process MTCNNDetector starts: ``python -m adadf_core.data.align._mtcnn_worker --serve <options>``.
WORKER_MODULE = "adadf_core.data.align._mtcnn_worker"


# --------------------------------------------------------------------------------------------- faces
@dataclass
class Face:
    """One detected face. ``box`` = (x1, y1, x2, y2), ``landmarks`` = float array [5, 2] (x, y)."""
    box: tuple[float, float, float, float]
    confidence: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@runtime_checkable
class Detector(Protocol):
    """Anything that finds faces with five landmarks. ``names`` identifies the images (relative paths);
    detectors that look at pixels ignore it, `LandmarkFileDetector` needs it."""
    name: str

    def detect(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[list[Face]]:
        ...


def mtcnn_available() -> bool:
    """True when the `align` extra (mtcnn + tensorflow) is installed. Imports nothing."""
    return all(importlib.util.find_spec(m) is not None for m in ("mtcnn", "tensorflow"))


class MTCNNDetector:
    """MTCNN (the `mtcnn` package and its bundled weights) in a child process (`_mtcnn_worker`).

    The child starts on the first `detect` call (TensorFlow import: a few seconds) and lives until
    `close()` (or the end of a ``with`` block). Send many images per call: each call is one round trip.
    The child's TensorFlow log goes to a temporary file whose tail is shown if the child fails.
    """
    name = "mtcnn"

    def __init__(self, device: str = "CPU:0", min_face_size: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)):
        if not mtcnn_available():
            raise ImportError("MTCNN detection needs the `align` extra: pip install -e '.[align]' "
                              "(mtcnn + tensorflow). Without it use recorded landmarks "
                              "(detector='landmarks:<csv>').")
        self._options = {"device": device, "min_face_size": int(min_face_size),
                         "thresholds": [float(t) for t in thresholds]}
        self._proc = None
        self._log = None
        self.versions: dict = {}

    def describe(self) -> dict:
        """What the alignment record keeps: the detector, its versions (once started) and every option."""
        return {"detector": "mtcnn (the `mtcnn` package, bundled weights)", "versions": dict(self.versions),
                "options": dict(self._options)}

    def _start(self) -> None:

        self._log = tempfile.TemporaryFile(mode="w+b")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, "--serve", json.dumps(self._options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.versions = self._receive("starting")

    def _receive(self, doing: str):

        try:
            kind, payload = pickle.load(self._proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError) as exc:
            log = self._log_tail()
            self.close()
            raise RuntimeError(f"the MTCNN worker process died while {doing}; its log ends with:\n{log}") from exc
        if kind == "error":
            if doing == "starting":
                self.close()
            raise RuntimeError(f"MTCNN worker failed while {doing}:\n{payload}")
        return payload

    def _log_tail(self, chars: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-chars:]

    def detect(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[list[Face]]:

        if len(images) == 0:
            return []
        images = [as_rgb_uint8(np.asarray(im)) for im in images]
        if self._proc is None:
            self._start()
        try:
            pickle.dump(("detect", images), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            log = self._log_tail()
            self.close()
            raise RuntimeError(f"the MTCNN worker process is gone; its log ends with:\n{log}") from exc
        rows_per_image = self._receive(f"detecting faces in {len(images)} images")
        return [[Face(box=tuple(map(float, r[0:4])), confidence=float(r[4]),
                      landmarks=np.asarray(r[5:15], dtype=np.float64).reshape(5, 2)) for r in rows]
                for rows in rows_per_image]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:

            try:
                if proc.poll() is None:
                    pickle.dump(("quit", None), proc.stdin)
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class LandmarkFileDetector:
    """Recorded landmarks from a CSV: ``name, width, height`` then x, y of the five points (in
    `LANDMARK_NAMES` order), in the pixels of the original image -- the layout of SynthFER's
    ``EmoLabel/landmarks.csv``. Columns are read by position, so their exact names do not matter.

    Images are looked up by their relative path, then by file name. If an image's size differs from the
    recorded width/height the landmarks are scaled to it. A file whose rows list the subject's left eye
    first (mirrored convention) is swapped into image-left order. The box is the landmarks' bounding box
    grown to a face-sized square; confidence is 1.
    """

    def __init__(self, csv_path: str | os.PathLike):
        self.path = Path(csv_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"landmark file not found: {self.path}")
        table = pd.read_csv(self.path)
        if table.shape[1] < 13:
            raise ValueError(f"{self.path}: expected columns name, width, height and 10 landmark "
                             f"coordinates (x, y of {', '.join(LANDMARK_NAMES)}); found {list(table.columns)}")
        try:
            values = table.iloc[:, 1:13].to_numpy(dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{self.path}: width, height and landmark columns must be numbers ({exc})") from exc
        self.name = f"landmarks:{self.path}"
        self._records: dict[str, tuple[float, float, np.ndarray]] = {}
        for key, row in zip(table.iloc[:, 0].astype(str), values):
            points = _image_left_order(row[2:].reshape(5, 2))
            self._records[key] = (row[0], row[1], points)
        self._by_basename = {Path(k).name: v for k, v in self._records.items()}

    @classmethod
    def from_affectnet_csv(cls, csv_path: str | os.PathLike) -> "LandmarkFileDetector":
        """The 68 landmarks AffectNet's 2017 release gives per image (``facial_landmarks`` of
        training.csv / validation.csv: ``x1;y1;...;x68;y68``) reduced to the five points: the centres of
        points 37-42 and 43-48 (the eyes), point 31 (nose tip), 49 and 55 (mouth corners), 1-based iBUG
        numbering. Images are looked up by ``subDirectory_filePath``; no size is recorded, so no scaling.
        ``csv_path`` may be the folder holding training.csv and validation.csv: both are read."""
        self = cls.__new__(cls)
        self.path, self.name = Path(csv_path), f"affectnet:{csv_path}"
        files = [self.path / n for n in ("training.csv", "validation.csv")] if self.path.is_dir() else [self.path]
        self._records = {}
        for csv_file, (lineno, row) in ((f, r) for f in files for r in read_affectnet_csv(f)):
            try:
                points = np.asarray([float(v) for v in row[5].split(";")], dtype=np.float64).reshape(68, 2)
            except ValueError:
                raise ValueError(f"{csv_file}:{lineno}: facial_landmarks is not 136 numbers separated by ';'") from None
            five = np.stack([points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]])
            self._records[row[0].strip().replace("\\", "/")] = (0.0, 0.0, _image_left_order(five))
        self._by_basename = {Path(k).name: v for k, v in self._records.items()}
        return self

    def __len__(self) -> int:
        return len(self._records)

    def describe(self) -> dict:
        files = sorted(self.path.glob("*.csv")) if self.path.is_dir() else [self.path]
        return {"detector": "recorded landmarks", "file": str(self.path),
                "file_sha256": {f.name: sha256_file(f)[1] for f in files} if self.path.is_dir() else sha256_file(self.path)[1]}

    def names(self) -> list[str]:
        return list(self._records)

    def landmarks_for(self, name: str) -> np.ndarray | None:
        """Recorded [5, 2] landmarks (original image pixels) or None."""
        record = self._records.get(name) or self._by_basename.get(Path(name).name)
        return None if record is None else record[2].copy()

    def detect(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[list[Face]]:
        if names is None or len(names) != len(images):
            raise ValueError("LandmarkFileDetector.detect needs one name per image to look up its landmarks")
        out: list[list[Face]] = []
        for image, name in zip(images, names):
            record = self._records.get(name) or self._by_basename.get(Path(name).name)
            if record is None:
                out.append([])
                continue
            width, height, points = record
            h, w = np.asarray(image).shape[:2]
            if width > 0 and height > 0 and (w, h) != (int(width), int(height)):
                points = points * np.array([w / width, h / height])
            out.append([Face(box=_box_around(points), confidence=1.0, landmarks=points.copy())])
        return out


def make_detector(spec: str | Detector, src: str | os.PathLike | None = None) -> Detector:
    """``"mtcnn"``, ``"landmarks:<csv>"``, ``"affectnet:<training.csv>"`` (AffectNet's own 68 landmarks,
    `LandmarkFileDetector.from_affectnet_csv`), or ``"landmarks"`` (finds ``EmoLabel/landmarks.csv`` in
    ``src`` or up to two folders above it, the SynthFER layout). A `Detector` instance is returned as is."""
    if not isinstance(spec, str):
        if not isinstance(spec, Detector):
            raise TypeError(f"detector must be 'mtcnn', 'landmarks:<csv>' or a Detector, not {spec!r}")
        return spec
    if spec == "mtcnn":
        return MTCNNDetector()
    if spec.startswith("landmarks:"):
        return LandmarkFileDetector(spec.split(":", 1)[1])
    if spec.startswith("affectnet:"):
        return LandmarkFileDetector.from_affectnet_csv(spec.split(":", 1)[1])
    if spec == "landmarks":
        if src is None:
            raise ValueError("detector='landmarks' needs a source folder to find EmoLabel/landmarks.csv in")
        start = Path(src).resolve()
        for folder in [start, *list(start.parents)[:2]]:
            candidate = folder / "EmoLabel" / "landmarks.csv"
            if candidate.is_file():
                return LandmarkFileDetector(candidate)
        raise FileNotFoundError(f"no EmoLabel/landmarks.csv in {start} or the two folders above it; "
                                "pass detector='landmarks:<csv>'")
    raise ValueError(f"unknown detector {spec!r}: expected 'mtcnn', 'landmarks', 'landmarks:<csv>' or "
                     "'affectnet:<training.csv>'")


def choose_face(faces: Sequence[Face], rule: str = "largest") -> Face | None:
    """The face an image is aligned on when it holds several: ``largest`` box area (the default: in
    expression data sets the subject is the closest face) or ``most_confident`` detector score."""
    if rule not in MULTI_FACE_RULES:
        raise ValueError(f"multi_face must be one of {MULTI_FACE_RULES}, not {rule!r}")
    if not faces:
        return None
    key = (lambda f: f.area) if rule == "largest" else (lambda f: f.confidence)
    return max(faces, key=key)


def align_detected(images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], size: int | tuple[int, int] = 100,
                   multi_face: str = "largest", template: np.ndarray | None = None
                   ) -> list[tuple[Face | None, np.ndarray | None]]:
    """For in-memory images and their detections: the chosen face and its aligned crop (None, None when
    no face was found)."""
    out = []
    for image, found in zip(images, faces):
        face = choose_face(found, multi_face)
        crop = None if face is None else align_face(as_rgb_uint8(np.asarray(image)), face.landmarks, size, template)
        out.append((face, crop))
    return out


def _box_around(points: np.ndarray) -> tuple[float, float, float, float]:
    """A face-sized box around five landmarks (they span roughly the middle half of a face)."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0, 1.0)
    return (float(cx - half), float(cy - half * 1.1), float(cx + half), float(cy + half * 0.9))


def _image_left_order(points: np.ndarray) -> np.ndarray:
    """Swap eye and mouth pairs when both are listed right-to-left (subject's-left-first files)."""
    points = np.array(points, dtype=np.float64)
    if points[0, 0] > points[1, 0] and points[3, 0] > points[4, 0]:
        points[[0, 1]] = points[[1, 0]]
        points[[3, 4]] = points[[4, 3]]
    return points
