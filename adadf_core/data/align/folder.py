"""The batch tool: align every image of a folder tree and record each input in ``dst/manifest.csv``.

`align_folder` (and its command line, `cli_main`: ``adadf align SRC DST``) reads each file with
`load_rgb`, detects faces, aligns the chosen one (`choose_face`) onto the template and writes it under
the same relative path. `read_manifest` / `manifest_summary` read the result; `list_inputs` says which
files count as inputs.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import PIL
import skimage
from PIL import Image

from adadf_core import __version__
from adadf_core.data.align.detectors import MULTI_FACE_RULES, choose_face, Detector, Face, make_detector
from adadf_core.data.align.geometry import LANDMARK_NAMES, align_face, reference_template, size_wh
from adadf_core.data.align.pixels import load_rgb
from adadf_core.data.images import is_hidden
from adadf_core.utils.fileio import atomic_write, sha256_file, write_json
from adadf_core.utils.progress import bar as tqdm

# Beside manifest.csv: how the folder was aligned and the content hash of what was written (no times in
# it, so aligning the same input again with the same software writes the same file).
ALIGN_RECORD = "alignment.json"
STATUSES = ("aligned", "no_face", "unreadable", "too_small", "skipped_existing", "error")
MANIFEST_COLUMNS = (
    ["source", "status", "output", "detector", "width", "height", "n_faces", "confidence",
     "box_x1", "box_y1", "box_x2", "box_y2"]
    + [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
    + ["message"]
)
# Output formats kept as they are; any other input is written as <name>.<ext>.png.
_KEEP_EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
                    ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


# ---------------------------------------------------------------------------------------- file names
def _output_name(rel: Path) -> tuple[Path, str]:
    fmt = _KEEP_EXTENSIONS.get(rel.suffix.lower())
    if fmt is not None:
        return rel, fmt
    return rel.with_name(rel.name + ".png"), "PNG"


def _save_image(pixels: np.ndarray, path: Path, fmt: str) -> None:
    """Write atomically (temporary file, then rename) so a crash never leaves half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format=fmt, **options))


def list_inputs(src: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every regular file under ``src`` (sorted, relative paths), skipping hidden files and folders
    (`images.is_hidden`: names starting with '.', such as AppleDouble ``._*`` files, and ``__MACOSX``)
    and anything inside ``exclude`` (the output folder when it sits in src)."""
    src = Path(src)
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    for folder, dirs, files in os.walk(src):
        folder_path = Path(folder)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d)
                         and (excluded is None or (folder_path / d).resolve() != excluded))
        for name in sorted(files):
            if not is_hidden(name):
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
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


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
    output exists, ``redo`` is False and no earlier manifest row says this call's folder aligned it: an
    earlier ``aligned`` row is kept as it was, so a rerun that changes nothing writes the same manifest); ``error`` (alignment failed, e.g. degenerate landmarks). Rows
    are appended and flushed as images finish, so an interrupted run keeps what it did; the finished
    manifest is rewritten with one row per input in path order. With ``redo`` every image is processed
    again and an output that no longer aligns is removed. Returns the manifest.

    ``multi_face``: which face to align when an image holds several (`choose_face`). Non-JPEG/PNG/BMP/
    TIFF/WEBP inputs are written as ``<name>.png``. Hidden files (starting with '.') are ignored.
    ``limit`` processes only the first N inputs in path order (a preview; rows of earlier runs for the
    other inputs stay in the manifest).
    """
    src, dst = Path(src), Path(dst)
    all_inputs = _checked_inputs(src, dst, multi_face)
    inputs = all_inputs if limit is None else all_inputs[:max(0, int(limit))]
    width, height = size_wh(size)
    template = reference_template((width, height)) if template is None else np.asarray(template, float)
    owns_detector = isinstance(detector, str)
    det = make_detector(detector, src)

    dst.mkdir(parents=True, exist_ok=True)
    manifest_path = dst / "manifest.csv"
    previous = read_manifest(manifest_path).set_index("source", drop=False) if manifest_path.exists() else None
    writer = _ManifestWriter(manifest_path)


    bar = tqdm(total=len(inputs), desc=f"align {src.name}", unit="img", disable=not progress)
    job = _Job(src, dst, det, writer, bar, (width, height), template, multi_face, min_image_size)
    try:
        todo = _skip_existing(job, inputs, redo, previous)
        step = max(1, int(batch_size))
        for start in range(0, len(todo), step):
            _align_batch(job, todo[start:start + step])
    finally:
        bar.close()
        writer.close()
        if owns_detector and hasattr(det, "close"):
            det.close()
    manifest = _compact_manifest(manifest_path, all_inputs)
    parameters = dict(size=[width, height], multi_face=multi_face, min_image_size=int(min_image_size),
                      batch_size=int(batch_size), redo=bool(redo), limit=limit)
    write_json(dst / ALIGN_RECORD, alignment_record(dst, det, manifest, parameters, template))
    return manifest


def aligned_set_hash(dst: str | os.PathLike, manifest: pd.DataFrame) -> tuple[int, str]:
    """(number of faces, SHA-256 of the sorted lines ``output<TAB>sha256 of its bytes``) of the aligned
    images a manifest lists: two folders with the same hash hold the same faces under the same names."""
    outputs = sorted(o for o, st in zip(manifest["output"], manifest["status"])
                     if o and st in ("aligned", "skipped_existing"))
    lines = "".join(f"{o}\t{sha256_file(Path(dst) / o)[1]}\n" for o in outputs)
    return len(outputs), hashlib.sha256(lines.encode("utf-8")).hexdigest()


def alignment_record(dst: Path, det: Detector, manifest: pd.DataFrame, parameters: dict,
                     template: np.ndarray) -> dict:
    """What ``alignment.json`` holds: the detector, its version and options, the software versions that
    shape the pixels, every parameter, the template, the counts per status and the aligned set's hash.
    The per-image box, landmarks, score and failure reason are the rows of manifest.csv."""
    describe = getattr(det, "describe", None)
    n_faces, digest = aligned_set_hash(dst, manifest)
    return dict(
        adadf=__version__, detector=describe() if callable(describe) else {"detector": det.name},
        software={"scikit-image": skimage.__version__, "Pillow": PIL.__version__, "numpy": np.__version__},
        parameters=parameters, template=np.round(np.asarray(template, float), 4).tolist(),
        template_points=list(LANDMARK_NAMES), warp="similarity (least squares), bilinear, black border",
        counts={k: int(v) for k, v in manifest["status"].value_counts().sort_index().items()},
        per_image="manifest.csv: box_x1..box_y2, the five landmarks, confidence, status and message per input",
        aligned_faces=n_faces, aligned_sha256=digest)


@dataclass
class _Job:
    """What every step of one `align_folder` call needs."""
    src: Path
    dst: Path
    det: Detector
    writer: _ManifestWriter
    bar: object
    size: tuple[int, int]
    template: np.ndarray
    rule: str
    min_image_size: int

    def record(self, row: dict, stale: Path | None = None) -> None:
        """Write one manifest row (removing ``dst/stale``, an output that no longer applies, first)."""
        if stale is not None:
            _remove_stale(self.dst / stale)
        self.writer.write(row)
        self.bar.update(1)


def _checked_inputs(src: Path, dst: Path, multi_face: str) -> list[Path]:
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if src.resolve() == dst.resolve():
        raise ValueError(f"destination must differ from the source folder ({src})")
    if multi_face not in MULTI_FACE_RULES:
        raise ValueError(f"multi_face must be one of {MULTI_FACE_RULES}, not {multi_face!r}")
    all_inputs = list_inputs(src, exclude=dst)
    if not all_inputs:
        raise ValueError(f"no input files in {src} (empty folder?)")
    return all_inputs


def _skip_existing(job: _Job, inputs: Sequence[Path], redo: bool,
                   previous: pd.DataFrame | None) -> list[tuple[str, Path, str]]:
    """Record the inputs whose output exists (unless ``redo``); return the others as (source, output, format)."""
    todo: list[tuple[str, Path, str]] = []
    for rel in inputs:
        out_rel, fmt = _output_name(rel)
        if not redo and (job.dst / out_rel).exists():
            job.record(_skipped_row(rel.as_posix(), out_rel.as_posix(), job.det.name, previous))
        else:
            todo.append((rel.as_posix(), out_rel, fmt))
    return todo


def _read_batch(job: _Job, batch: Sequence[tuple[str, Path, str]]) -> list[tuple[str, Path, str, np.ndarray, str]]:
    """Load a batch; unreadable and too-small files are recorded here, the rest returned with their pixels."""
    ready: list[tuple[str, Path, str, np.ndarray, str]] = []
    for source, out_rel, fmt in batch:
        try:
            pixels, note = load_rgb(job.src / source)
        except ValueError as exc:
            job.record(_row(source, "unreadable", job.det.name, message=str(exc)), stale=out_rel)
            continue
        if min(pixels.shape[:2]) < job.min_image_size:
            job.record(_row(source, "too_small", job.det.name, size=pixels.shape, message=(
                f"{pixels.shape[1]}x{pixels.shape[0]} px; need at least {job.min_image_size} px "
                f"on the shorter side")), stale=out_rel)
            continue
        ready.append((source, out_rel, fmt, pixels, note))
    return ready


def _align_batch(job: _Job, batch: Sequence[tuple[str, Path, str]]) -> None:
    """Read, detect (one detector call) and align one batch, recording every input."""
    ready = _read_batch(job, batch)
    if not ready:
        return
    found = job.det.detect([r[3] for r in ready], names=[r[0] for r in ready])
    if len(found) != len(ready):
        raise RuntimeError(f"detector {job.det.name} returned {len(found)} results for {len(ready)} images")
    for (source, out_rel, fmt, pixels, note), faces in zip(ready, found):
        job.record(_align_one(source, out_rel, fmt, pixels, note, faces, job.det.name, job.dst,
                              job.size, job.template, job.rule))
    job.writer.sync()


def _compact_manifest(manifest_path: Path, all_inputs: Sequence[Path]) -> pd.DataFrame:
    """Rewrite the manifest with one row per current input, in path order; return it."""
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
    """The row of an input whose output exists: an earlier run's ``aligned`` row stays as it was (a rerun that
    changes nothing writes the same manifest); any other output is ``skipped_existing``."""
    if previous is not None and source in previous.index:
        row = previous.loc[source].to_dict()
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        if row.get("status") == "aligned" and row.get("output") == output:
            return row
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
                        help="'mtcnn' (default), 'landmarks' (finds EmoLabel/landmarks.csv near SRC), "
                             "'landmarks:<csv>' (recorded landmarks) or 'affectnet:<training.csv>' (AffectNet's "
                             "own 68 landmarks, SRC = Manually_Annotated_Images)")
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
    record = Path(args.dst) / ALIGN_RECORD
    print(f"aligned set SHA-256 {aligned_set_hash(args.dst, manifest)[1]} (detector, versions, parameters: {record})")
    return 0

