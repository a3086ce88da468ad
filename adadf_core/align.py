"""Face detection and five-point similarity alignment (paper section 4.2; spec section 8 "Alignment").

The paper detects every face with MTCNN, maps its five landmarks (eye centres, nose tip, mouth corners)
onto a fixed five-point template with a similarity transform (rotation, uniform scale, translation) and
warps the face to 100x100. SFEW results collapse when this step is skipped, so `adadf align` does it for a
whole folder tree and records what happened to every input in ``dst/manifest.csv``.

Pieces
------
- `Face`: one detection (box, confidence, five landmarks in image pixels).
- `Detector` protocol: ``detect(images, names=None) -> list[list[Face]]``. Two implementations:
  `MTCNNDetector` (the `mtcnn` package, run in its own process so TensorFlow never shares a process with
  torch) and `LandmarkFileDetector` (recorded landmarks from a CSV such as SynthFER's
  ``EmoLabel/landmarks.csv``; no TensorFlow needed). `make_detector` builds one from a string.
- `reference_template`, `similarity_to_template`, `align_face`: the geometry.
- `align_folder` / `cli_main`: the batch tool; `read_manifest`, `manifest_summary`.
- `landmark_error_report`: how far detected landmarks fall from recorded ones (SynthFER).
- `example_photos`, `plot_detections`, `plot_template`, `plot_before_after`: what notebook 01 shows.

Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner, where
"left" means the left side *of the image* (smaller x), as MTCNN reports them.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd

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

STATUSES = ("aligned", "no_face", "unreadable", "too_small", "skipped_existing", "error")
MULTI_FACE_RULES = ("largest", "most_confident")
MANIFEST_COLUMNS = (
    ["source", "status", "output", "detector", "width", "height", "n_faces", "confidence",
     "box_x1", "box_y1", "box_x2", "box_y2"]
    + [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
    + ["message"]
)
# Output formats kept as they are; any other input is written as <name>.<ext>.png.
_KEEP_EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
                    ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


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

    def _start(self) -> None:
        import json
        import subprocess
        import tempfile

        self._log = tempfile.TemporaryFile(mode="w+b")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "adadf_core._mtcnn_worker", "--serve", json.dumps(self._options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.versions = self._receive("starting")

    def _receive(self, doing: str):
        import pickle

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
        import pickle

        if len(images) == 0:
            return []
        images = [_as_rgb_uint8(np.asarray(im)) for im in images]
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
            import pickle
            import subprocess

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

    def __len__(self) -> int:
        return len(self._records)

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
    """``"mtcnn"``, ``"landmarks:<csv>"``, or ``"landmarks"`` (finds ``EmoLabel/landmarks.csv`` in
    ``src`` or up to two folders above it, the SynthFER layout). A `Detector` instance is returned as is."""
    if not isinstance(spec, str):
        if not isinstance(spec, Detector):
            raise TypeError(f"detector must be 'mtcnn', 'landmarks:<csv>' or a Detector, not {spec!r}")
        return spec
    if spec == "mtcnn":
        return MTCNNDetector()
    if spec.startswith("landmarks:"):
        return LandmarkFileDetector(spec.split(":", 1)[1])
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
    raise ValueError(f"unknown detector {spec!r}: expected 'mtcnn', 'landmarks' or 'landmarks:<csv>'")


def choose_face(faces: Sequence[Face], rule: str = "largest") -> Face | None:
    """The face an image is aligned on when it holds several: ``largest`` box area (the default: in
    expression data sets the subject is the closest face) or ``most_confident`` detector score."""
    if rule not in MULTI_FACE_RULES:
        raise ValueError(f"multi_face must be one of {MULTI_FACE_RULES}, not {rule!r}")
    if not faces:
        return None
    key = (lambda f: f.area) if rule == "largest" else (lambda f: f.confidence)
    return max(faces, key=key)


# ------------------------------------------------------------------------------------------ geometry
def _size_wh(size: int | tuple[int, int]) -> tuple[int, int]:
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
    width, height = _size_wh(size)
    return points * np.array([width / base_w, height / base_h])


def similarity_to_template(landmarks: np.ndarray, template: np.ndarray):
    """The least-squares similarity transform (skimage) taking ``landmarks`` [5, 2] onto ``template``.

    Raises ValueError for degenerate landmarks (all points on top of each other, NaN)."""
    from skimage.transform import SimilarityTransform

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
    from skimage.transform import warp

    width, height = _size_wh(size)
    if template is None:
        template = reference_template((width, height))
    tform = similarity_to_template(landmarks, template)
    image = np.asarray(image)
    warped = warp(image, tform.inverse, output_shape=(height, width), order=1, mode=border, cval=0,
                  preserve_range=True)
    return np.clip(np.rint(warped), 0, 255).astype(np.uint8)


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


# ---------------------------------------------------------------------------------------- image I/O
def _as_rgb_uint8(array: np.ndarray) -> np.ndarray:
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

    The EXIF orientation is applied; grey-scale, palette, 16-bit and CMYK images are converted; RGBA/LA
    images are composited on white. ``note`` says what was converted ("" when nothing was). Raises
    ValueError (naming the file) for anything that is not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                pixels = np.asarray(img, dtype=np.float64)
                top = pixels.max() if pixels.size and pixels.max() > 0 else 1.0
                scale = 255.0 / (65535.0 if top > 255 and mode.startswith("I;16") else max(top, 255.0))
                grey = np.clip(pixels * scale, 0, 255).astype(np.uint8)
                return np.stack([grey] * 3, axis=-1), f"converted from {mode} to RGB"
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(background, rgba).convert("RGB")
                return np.asarray(rgb), f"converted from {mode} (alpha composited on white) to RGB"
            rgb = img.convert("RGB")
            return np.asarray(rgb), ("" if mode == "RGB" else f"converted from {mode} to RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


def _output_name(rel: Path) -> tuple[Path, str]:
    fmt = _KEEP_EXTENSIONS.get(rel.suffix.lower())
    if fmt is not None:
        return rel, fmt
    return rel.with_name(rel.name + ".png"), "PNG"


def _save_image(pixels: np.ndarray, path: Path, fmt: str) -> None:
    """Write atomically (temporary file, then rename) so a crash never leaves half an image."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(pixels).save(tmp, format=fmt, **options)
    os.replace(tmp, path)


def list_inputs(src: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every regular file under ``src`` (sorted, relative paths), skipping hidden files and folders
    (names starting with '.') and anything inside ``exclude`` (the output folder when it sits in src)."""
    src = Path(src)
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    for folder, dirs, files in os.walk(src):
        folder_path = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (excluded is None or (folder_path / d).resolve() != excluded))
        for name in sorted(files):
            if not name.startswith("."):
                found.append((folder_path / name).relative_to(src))
    return sorted(found, key=lambda p: p.as_posix())


# ----------------------------------------------------------------------------------------- manifest
class _ManifestWriter:
    """Appends rows to manifest.csv and flushes each one, so a crash keeps every finished row."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self._file.flush()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest (the file, or the folder holding manifest.csv). Rows appended by an interrupted
    run are kept; when a source appears more than once the last row wins."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    table = pd.read_csv(path, dtype={"source": str, "status": str, "output": str, "message": str,
                                     "detector": str}, keep_default_na=False, na_values={
        c: [""] for c in MANIFEST_COLUMNS if c not in ("source", "status", "output", "message", "detector")})
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not an adadf alignment manifest (missing columns {missing})")
    table = table[MANIFEST_COLUMNS]
    return table.drop_duplicates("source", keep="last").reset_index(drop=True)


def _write_manifest_atomic(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def manifest_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Count and share of inputs per status (every status listed, zeros included)."""
    counts = manifest["status"].value_counts().reindex(STATUSES, fill_value=0)
    extra = manifest["status"].value_counts().drop(list(STATUSES), errors="ignore")
    counts = pd.concat([counts, extra])
    total = max(int(counts.sum()), 1)
    return pd.DataFrame({"status": counts.index, "count": counts.values.astype(int),
                         "share": (counts.values / total).round(4)})


def _row(source: str, status: str, detector_name: str, *, output: str = "", size=None,
         faces: Sequence[Face] = (), face: Face | None = None, message: str = "") -> dict:
    row = {c: None for c in MANIFEST_COLUMNS}
    row.update(source=source, status=status, output=output, detector=detector_name, message=message,
               n_faces=len(faces) if status not in ("unreadable", "too_small", "skipped_existing") else None)
    if size is not None:
        row["height"], row["width"] = int(size[0]), int(size[1])
    if face is not None:
        row["confidence"] = round(float(face.confidence), 6)
        row["box_x1"], row["box_y1"], row["box_x2"], row["box_y2"] = (round(float(v), 2) for v in face.box)
        for (name, (x, y)) in zip(LANDMARK_NAMES, face.landmarks):
            row[f"{name}_x"], row[f"{name}_y"] = round(float(x), 2), round(float(y), 2)
    return row


# ------------------------------------------------------------------------------------- folder tool
def align_folder(src: str | os.PathLike, dst: str | os.PathLike, detector: str | Detector = "mtcnn",
                 size: int | tuple[int, int] = 100, multi_face: str = "largest", redo: bool = False, *,
                 batch_size: int = 16, min_image_size: int = 32, template: np.ndarray | None = None,
                 limit: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Detect and align every image under ``src`` into ``dst`` (same sub-folders and file names).

    Every input file gets one row in ``dst/manifest.csv`` (see `MANIFEST_COLUMNS`) with a status:
    ``aligned``; ``no_face`` (the detector found none: listed, never guessed); ``unreadable`` (not an
    image, corrupt); ``too_small`` (shorter side < ``min_image_size`` px); ``skipped_existing`` (the
    output exists and ``redo`` is False); ``error`` (alignment failed, e.g. degenerate landmarks). Rows
    are appended and flushed as images finish, so an interrupted run keeps what it did; the finished
    manifest is rewritten with one row per input in path order. With ``redo`` every image is processed
    again and an output that no longer aligns is removed. Returns the manifest.

    ``multi_face``: which face to align when an image holds several (`choose_face`). Non-JPEG/PNG/BMP/
    TIFF/WEBP inputs are written as ``<name>.png``. Hidden files (starting with '.') are ignored.
    ``limit`` processes only the first N inputs in path order (a preview; rows of earlier runs for the
    other inputs stay in the manifest).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if src.resolve() == dst.resolve():
        raise ValueError(f"destination must differ from the source folder ({src})")
    if multi_face not in MULTI_FACE_RULES:
        raise ValueError(f"multi_face must be one of {MULTI_FACE_RULES}, not {multi_face!r}")
    all_inputs = list_inputs(src, exclude=dst)
    if not all_inputs:
        raise ValueError(f"no input files in {src} (empty folder?)")
    inputs = all_inputs if limit is None else all_inputs[:max(0, int(limit))]
    width, height = _size_wh(size)
    template = reference_template((width, height)) if template is None else np.asarray(template, float)
    owns_detector = isinstance(detector, str)
    det = make_detector(detector, src)

    dst.mkdir(parents=True, exist_ok=True)
    manifest_path = dst / "manifest.csv"
    previous = read_manifest(manifest_path).set_index("source", drop=False) if manifest_path.exists() else None
    writer = _ManifestWriter(manifest_path)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(inputs), desc=f"align {src.name}", unit="img", disable=not progress)
    try:
        todo: list[tuple[str, Path, str]] = []
        for rel in inputs:
            out_rel, fmt = _output_name(rel)
            if not redo and (dst / out_rel).exists():
                writer.write(_skipped_row(rel.as_posix(), out_rel.as_posix(), det.name, previous))
                bar.update(1)
            else:
                todo.append((rel.as_posix(), out_rel, fmt))
        for start in range(0, len(todo), max(1, int(batch_size))):
            batch = todo[start:start + max(1, int(batch_size))]
            ready: list[tuple[str, Path, str, np.ndarray, str]] = []
            for source, out_rel, fmt in batch:
                try:
                    pixels, note = load_rgb(src / source)
                except ValueError as exc:
                    _remove_stale(dst / out_rel)
                    writer.write(_row(source, "unreadable", det.name, message=str(exc)))
                    bar.update(1)
                    continue
                if min(pixels.shape[:2]) < min_image_size:
                    _remove_stale(dst / out_rel)
                    writer.write(_row(source, "too_small", det.name, size=pixels.shape, message=(
                        f"{pixels.shape[1]}x{pixels.shape[0]} px; need at least {min_image_size} px "
                        f"on the shorter side")))
                    bar.update(1)
                    continue
                ready.append((source, out_rel, fmt, pixels, note))
            if not ready:
                continue
            found = det.detect([r[3] for r in ready], names=[r[0] for r in ready])
            if len(found) != len(ready):
                raise RuntimeError(f"detector {det.name} returned {len(found)} results for {len(ready)} images")
            for (source, out_rel, fmt, pixels, note), faces in zip(ready, found):
                writer.write(_align_one(source, out_rel, fmt, pixels, note, faces, det.name, dst,
                                        (width, height), template, multi_face))
                bar.update(1)
            writer.sync()
    finally:
        bar.close()
        writer.close()
        if owns_detector and hasattr(det, "close"):
            det.close()

    table = read_manifest(manifest_path)
    order = {rel.as_posix(): i for i, rel in enumerate(all_inputs)}
    table = table[table["source"].isin(order)]
    table = table.iloc[np.argsort(table["source"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)
    _write_manifest_atomic(table, manifest_path)
    return table


def _align_one(source, out_rel, fmt, pixels, note, faces, detector_name, dst, size, template, rule) -> dict:
    face = choose_face(faces, rule)
    if face is None:
        _remove_stale(dst / out_rel)
        return _row(source, "no_face", detector_name, size=pixels.shape, faces=faces,
                    message=_join(f"{detector_name} found no face", note))
    try:
        aligned = align_face(pixels, face.landmarks, size=size, template=template)
        _save_image(aligned, dst / out_rel, fmt)
    except (ValueError, OSError) as exc:
        _remove_stale(dst / out_rel)
        return _row(source, "error", detector_name, size=pixels.shape, faces=faces, face=face,
                    message=_join(f"alignment failed: {exc}", note))
    chosen = "" if len(faces) < 2 else f"{len(faces)} faces; aligned the {rule.replace('_', ' ')} one"
    return _row(source, "aligned", detector_name, output=out_rel.as_posix(), size=pixels.shape,
                faces=faces, face=face, message=_join(chosen, note))


def _skipped_row(source: str, output: str, detector_name: str, previous: pd.DataFrame | None) -> dict:
    if previous is not None and source in previous.index:
        row = previous.loc[source].to_dict()
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        row.update(status="skipped_existing", output=output,
                   message=f"output exists (earlier status: {row.get('status')}); use redo to align again")
        return row
    return _row(source, "skipped_existing", detector_name, output=output,
                message="output exists (no earlier manifest row); use redo to align again")


def _remove_stale(path: Path) -> None:
    if path.exists():
        path.unlink()


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def cli_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adadf align",
        description="Detect faces (MTCNN) and align them with a five-point similarity transform, keeping "
                    "the folder tree; every input is listed in DST/manifest.csv.")
    parser.add_argument("src", help="folder tree of images (e.g. SFEW's Train/ with one folder per emotion)")
    parser.add_argument("dst", help="output folder (same tree; created)")
    parser.add_argument("--detector", default="mtcnn",
                        help="'mtcnn' (default), 'landmarks' (finds EmoLabel/landmarks.csv near SRC) or "
                             "'landmarks:<csv>' (recorded landmarks)")
    parser.add_argument("--size", type=int, default=100, help="output width and height in pixels (100)")
    parser.add_argument("--multi-face", choices=MULTI_FACE_RULES, default="largest",
                        help="face to align when an image holds several (largest)")
    parser.add_argument("--redo", action="store_true", help="align again images whose output exists")
    parser.add_argument("--batch-size", type=int, default=16, help="images per detector call (16)")
    parser.add_argument("--min-image-size", type=int, default=32,
                        help="images with a shorter side below this are listed as too_small (32)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N inputs (a preview)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        manifest = align_folder(args.src, args.dst, detector=args.detector, size=args.size,
                                multi_face=args.multi_face, redo=args.redo, batch_size=args.batch_size,
                                min_image_size=args.min_image_size, limit=args.limit,
                                progress=not args.no_progress)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"adadf align: {exc}", file=sys.stderr)
        return 2
    summary = manifest_summary(manifest)
    print(f"{len(manifest)} inputs -> {Path(args.dst) / 'manifest.csv'}")
    for status, count in zip(summary["status"], summary["count"]):
        if count:
            print(f"  {status:<17} {count}")
    return 0


# --------------------------------------------------------------------------- landmark error report
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
    from tqdm.auto import tqdm

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


# ------------------------------------------------------------------------------ notebook helpers
def align_detected(images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], size: int | tuple[int, int] = 100,
                   multi_face: str = "largest", template: np.ndarray | None = None
                   ) -> list[tuple[Face | None, np.ndarray | None]]:
    """For in-memory images and their detections: the chosen face and its aligned crop (None, None when
    no face was found)."""
    out = []
    for image, found in zip(images, faces):
        face = choose_face(found, multi_face)
        crop = None if face is None else align_face(_as_rgb_uint8(np.asarray(image)), face.landmarks, size, template)
        out.append((face, crop))
    return out


def plot_manifest_examples(src: str | os.PathLike, dst: str | os.PathLike, manifest: pd.DataFrame, n: int = 8,
                           statuses: Sequence[str] = ("aligned", "skipped_existing"),
                           path: str | os.PathLike | None = None):
    """Before/after grid for the first ``n`` manifest rows with one of ``statuses``: the source image with
    the landmarks the manifest recorded, above the aligned output."""
    src, dst = Path(src), Path(dst)
    rows = manifest[manifest["status"].isin(statuses)].head(n)
    if rows.empty:
        raise ValueError(f"the manifest has no rows with status {list(statuses)} to show")
    befores, points, afters, titles = [], [], [], []
    for row in rows.itertuples(index=False):
        befores.append(load_rgb(src / row.source)[0])
        xy = np.array([[getattr(row, f"{name}_x"), getattr(row, f"{name}_y")] for name in LANDMARK_NAMES], float)
        points.append(None if np.isnan(xy).any() else xy)
        out = dst / str(row.output)
        afters.append(load_rgb(out)[0] if row.output and out.is_file() else None)
        titles.append(Path(row.source).name)
    size = afters[0].shape[1::-1] if afters and afters[0] is not None else 100
    return plot_before_after(befores, points, afters, titles=titles, size=tuple(size), path=path)


def example_photos() -> dict[str, np.ndarray]:
    """Real photographs with faces that ship with scikit-image (no download), as RGB uint8:
    the astronaut portrait, the same portrait rotated 25 degrees (alignment must undo it), the
    cameraman (grey-scale) and a mosaic of six LFW faces (scaled up from 25x25)."""
    from skimage import data
    from skimage.transform import rescale, rotate

    astronaut = data.astronaut()
    rotated = (rotate(astronaut, 25, resize=False, mode="edge", preserve_range=True)).astype(np.uint8)
    camera = np.stack([data.camera()] * 3, axis=-1)
    faces = data.lfw_subset()[:6]            # floats in [0, 1], 25x25
    tiles = [np.pad(rescale(f, 6, order=1), 15, constant_values=0.5) for f in faces]
    mosaic = np.concatenate([np.concatenate(tiles[:3], axis=1), np.concatenate(tiles[3:], axis=1)], axis=0)
    mosaic = np.stack([np.clip(mosaic * 255, 0, 255).astype(np.uint8)] * 3, axis=-1)
    return {"astronaut": astronaut, "astronaut rotated 25°": rotated, "cameraman": camera,
            "LFW faces (x6)": mosaic}


def _draw_face(ax, face: Face, colour="lime", label=True) -> None:
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = face.box
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
    ax.scatter(face.landmarks[:, 0], face.landmarks[:, 1], s=14, c=["red", "red", "yellow", "cyan", "cyan"],
               edgecolors="black", linewidths=0.5, zorder=3)
    if label:
        ax.text(x1, y1 - 3, f"{face.confidence:.3f}", color=colour, fontsize=7, va="bottom")


def plot_detections(images: dict[str, np.ndarray], faces: Sequence[Sequence[Face]], ncols: int = 4,
                    path: str | os.PathLike | None = None):
    """Photos with every detected box (detector score above it) and the five landmarks
    (eyes red, nose yellow, mouth corners cyan). Saved to ``path`` (PNG) when given."""
    import matplotlib.pyplot as plt

    names = list(images)
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name, found in zip(axes.flat, names, faces):
        ax.imshow(images[name])
        for face in found:
            _draw_face(ax, face)
        ax.set_title(f"{name}: {len(found)} face(s)", fontsize=8)
    fig.tight_layout()
    _maybe_save(fig, path)
    return fig


def plot_template(size: int | tuple[int, int] = 100, template: np.ndarray | None = None, ax=None,
                  path: str | os.PathLike | None = None):
    """The five template points on an empty output canvas, labelled with their coordinates."""
    import matplotlib.pyplot as plt

    width, height = _size_wh(size)
    template = reference_template((width, height)) if template is None else np.asarray(template)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.4, 3.4 * height / width))
    ax.imshow(np.full((height, width), 235, np.uint8), cmap="gray", vmin=0, vmax=255)
    ax.scatter(template[:, 0], template[:, 1], c=["red", "red", "yellow", "cyan", "cyan"], edgecolors="black", s=30)
    for name, (x, y) in zip(LANDMARK_NAMES, template):
        ax.annotate(f"{name}\n({x:.1f}, {y:.1f})", (x, y), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=6)
    ax.set_title(f"template, {width}x{height}", fontsize=9)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    if fig is not None:
        fig.tight_layout()
        _maybe_save(fig, path)
    return fig if fig is not None else ax.figure


def plot_before_after(befores: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None],
                      afters: Sequence[np.ndarray | None], titles: Sequence[str] | None = None,
                      size: int | tuple[int, int] = 100, path: str | os.PathLike | None = None):
    """Two rows: the unaligned images with their landmarks, and the aligned crops with the template points
    (an image without landmarks shows 'no face' below it)."""
    import matplotlib.pyplot as plt

    n = len(befores)
    template = reference_template(size)
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.3), squeeze=False)
    for i in range(n):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(befores[i])
        if landmarks[i] is not None:
            top.scatter(landmarks[i][:, 0], landmarks[i][:, 1], s=8, c="red")
        if titles is not None:
            top.set_title(titles[i], fontsize=7)
        if afters[i] is not None:
            bottom.imshow(afters[i])
            bottom.scatter(template[:, 0], template[:, 1], s=8, c="cyan", marker="+")
        else:
            bottom.text(0.5, 0.5, "no face", ha="center", va="center", transform=bottom.transAxes)
        top.axis("off")
        bottom.axis("off")
    axes[0, 0].text(-0.08, 0.5, "before", rotation=90, va="center", ha="right", transform=axes[0, 0].transAxes)
    axes[1, 0].text(-0.08, 0.5, "aligned", rotation=90, va="center", ha="right", transform=axes[1, 0].transAxes)
    fig.tight_layout()
    _maybe_save(fig, path)
    return fig


def _maybe_save(fig, path) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130, bbox_inches="tight")
