"""Label and table files as researchers hold them: the text encoding, ``name label`` lines, duplicates,
and the two noisy-label formats (torch-free, so `checkdata` and `align` can use it).

Encodings (`read_text_file`): UTF-8 (a BOM accepted); UTF-16 with a BOM, or without one when every other
byte is zero (ASCII names saved as UTF-16); Latin-1 when every non-ASCII byte is 0xC0-0xFF (accented
letters, the same characters in Latin-1, Latin-9 and Windows-1252). Anything else is ambiguous (bytes
0x80-0xBF differ between those code pages) and is a one-line error naming the file, the byte and line.

Noisy label files (`read_label_file`):
  ``raf``  the RAF-DB list format, ``train_00001.jpg 5``: a name and a 1-based label (this project's format
           and the one the noisy lists shared by other FER projects use).
  ``scn``  the format SCN's code reads: a path (absolute, or relative to any folder) and a 0-based label,
           ``/data/RAF-DB/basic/Image/aligned/train_00001_aligned.jpg 4``.
A name is matched by `sample_key` (its file name without the ``_aligned`` suffix), so both formats find
the same image whatever folder the file was written in.
"""
from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

NOISE_FORMATS = ("raf", "scn")
# AffectNet's 2017 release: the header of training.csv / validation.csv (datasets reads the labels and face
# boxes, align the 68 facial landmarks).
AFFECTNET_CSV_HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                        "facial_landmarks", "expression", "valence", "arousal")
_NOISE_BASE = {"raf": 1, "scn": 0}


class DatasetError(ValueError):
    """A data set is missing, malformed or not what was asked for (the message names the path)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data set root, label file or image does not exist."""


# ------------------------------------------------------------------------------------------ encodings
def text_encoding(data: bytes) -> tuple[str, int]:
    """(Python codec, offending byte position or -1) for the bytes of a text file; see the module doc.
    The codec is None with the position of the first byte that makes the file ambiguous."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig", -1
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16", -1
    if len(data) >= 4 and len(data) % 2 == 0 and b"\x00" in data:     # NUL bytes: no text file is UTF-8 with them
        if data[1::2].count(0) > len(data) // 4 and data[0::2].count(0) == 0:
            return "utf-16-le", -1
        if data[0::2].count(0) > len(data) // 4 and data[1::2].count(0) == 0:
            return "utf-16-be", -1
    try:
        data.decode("utf-8")
        return "utf-8", -1
    except UnicodeDecodeError as error:
        first_bad = error.start
    ambiguous = next((i for i, b in enumerate(data) if 0x80 <= b < 0xC0), -1)
    if ambiguous < 0:
        return "latin-1", first_bad
    return None, ambiguous


def read_text_file(path: str | Path, what: str) -> str:
    """The text of a label or table file in any encoding `text_encoding` accepts (a warning names the
    file when it is not UTF-8); otherwise a one-line `DatasetError` naming the file, byte and line."""
    path = Path(path)
    data = path.read_bytes()
    codec, position = text_encoding(data)
    if codec is None:
        line = data[:position].count(b"\n") + 1
        raise DatasetError(f"{what} {path}: not UTF-8 text (byte 0x{data[position]:02x} on line {line}), and "
                           "Latin-1, Latin-9 and Windows-1252 read that byte differently; save it as UTF-8")
    if codec == "latin-1":
        warnings.warn(f"{what} {path} is not UTF-8; read it as Latin-1 (its non-ASCII bytes are letters "
                      "that Latin-1, Latin-9 and Windows-1252 agree on)", stacklevel=2)
    elif codec.startswith("utf-16"):
        warnings.warn(f"{what} {path} is UTF-16 text; read it as such", stacklevel=2)
    return data.decode(codec)


# ------------------------------------------------------------------------------------ name-label lines
@dataclass(frozen=True)
class LabelLine:
    lineno: int
    name: str
    value: int


def read_label_lines(path: str | Path, what: str, expected: str, header: tuple[str, ...] = ()) -> list[LabelLine]:
    """``name label`` lines: the label is the last blank-separated field, so a name (a path) may hold
    spaces; blank lines and ``#`` comments are skipped. With ``header`` the file is a CSV whose first line
    must be those column names (such as ``image,label``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{what} {path} not found; expected lines {expected}")
    lines = read_text_file(path, what).splitlines()
    start = 0
    if header:
        found = tuple(c.strip() for c in (lines[0] if lines else "").split(","))
        if found != header:
            raise DatasetError(f"{path}:1: header {found} is not the expected {header}")
        start = 1
    out = []
    for lineno, line in enumerate(lines[start:], start + 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [c.strip() for c in line.rsplit(",", 1)] if header else line.strip().rsplit(None, 1)
        if len(parts) != 2 or not parts[0] or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{lineno}: cannot parse {line!r}; expected {expected}")
        out.append(LabelLine(lineno, parts[0], int(parts[1])))
    return out


def refuse_duplicates(lines: list[LabelLine], path: str | Path, key=lambda n: n, same_label_ok: bool = False) -> None:
    """An error naming both lines when a name (after ``key``) is listed twice (with ``same_label_ok``:
    only when the two lines give different labels)."""
    first: dict[str, LabelLine] = {}
    for line in lines:
        k = key(line.name)
        seen = first.setdefault(k, line)
        if seen is not line and not (same_label_ok and seen.value == line.value):
            detail = (f"with labels {seen.value} and {line.value}" if seen.value != line.value
                      else "twice")
            raise DatasetError(f"{path}: {line.name!r} is listed {detail} (lines {seen.lineno} and "
                               f"{line.lineno}); each image must appear once")


def sample_key(name: str) -> str:
    """The key a label-file name is matched by: its file name (any folder, / or \\ separated) without
    the ``_aligned`` suffix RAF-DB's aligned images carry: ``Image/aligned/train_00001_aligned.jpg`` and
    ``train_00001.jpg`` are both ``train_00001.jpg``."""
    base = PureWindowsPath(name).name if "\\" in name else PurePosixPath(name).name
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    if stem.endswith("_aligned"):
        stem = stem[: -len("_aligned")]
    return f"{stem}.{ext}" if ext else stem


def check_label(value: int, num_classes: int, where: str, base: int = 0, hint: str = "") -> int:
    """``value - base`` when it is a valid label, else an error naming ``where`` and the range."""
    if not base <= value < num_classes + base:
        raise DatasetError(f"{where}: label {value} is out of range; expected an integer in "
                           f"{base}..{num_classes - 1 + base}{hint}")
    return value - base


# ----------------------------------------------------------------------------------- noisy label files
def parse_noise_spec(spec: str | Path, fmt: str | None = None) -> tuple[Path, str]:
    """``raf:PATH`` / ``scn:PATH`` / ``PATH`` (format ``fmt`` or ``raf``) -> (path, format)."""
    text = str(spec)
    head, sep, rest = text.partition(":")
    if sep and head in NOISE_FORMATS and len(head) > 1:
        if fmt is not None and fmt != head:
            raise DatasetError(f"noise file {text!r} says format {head!r} but noise_format={fmt!r}")
        return Path(rest), head
    fmt = fmt or "raf"
    if fmt not in NOISE_FORMATS:
        raise DatasetError(f"noise file format {fmt!r} is not known; expected one of {', '.join(NOISE_FORMATS)}")
    return Path(text), fmt


def _format_hint(fmt: str) -> str:
    other = "scn" if fmt == "raf" else "raf"
    based = "0-based" if fmt == "raf" else "1-based"
    return f" ({based}? give the file as {other}:PATH)"


def read_label_file(path: str | Path, num_classes: int, fmt: str = "raf") -> dict[str, tuple[int, int]]:
    """A noisy label file -> {`sample_key`: (0-based label, line number)}. A name listed twice with
    different labels is an error naming both lines; a label outside the format's range is an error that
    asks whether the file uses the other base."""
    path, fmt = parse_noise_spec(path, fmt)
    base = _NOISE_BASE[fmt]
    expected = f"'<name> <label {base}..{num_classes - 1 + base}>' ({fmt} format)"
    lines = read_label_lines(path, "label file", expected)
    refuse_duplicates(lines, path, key=sample_key, same_label_ok=True)
    return {sample_key(line.name): (check_label(line.value, num_classes, f"{path}:{line.lineno}", base,
                                                _format_hint(fmt)), line.lineno) for line in lines}


def refuse_shifted_labels(noisy: list[int], clean: list[int], path: str | Path, fmt: str) -> None:
    """Labels that mostly equal the clean ones shifted by one are a file of the other base: an error."""
    n = len(noisy)
    if n < 20:
        return
    same = sum(a == b for a, b in zip(noisy, clean)) / n
    shifted = sum(a + 1 == b for a, b in zip(noisy, clean)) / n if fmt == "raf" else \
        sum(a - 1 == b for a, b in zip(noisy, clean)) / n
    if same < 0.5 <= shifted:
        raise DatasetError(f"label file {path}: {shifted:.0%} of its labels are the clean label shifted by one "
                           f"and only {same:.0%} agree with it; the labels look shifted{_format_hint(fmt)}")


def read_affectnet_csv(path: str | Path) -> list[tuple[int, list[str]]]:
    """The rows of an AffectNet 2017 CSV as (line number, cells), the header checked."""
    path = Path(path)
    with io.StringIO(read_text_file(path, "AffectNet label file"), newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(c.strip() for c in rows[0]) != AFFECTNET_CSV_HEADER:
        raise DatasetError(f"{path}:1: header {rows[0] if rows else []} is not AffectNet's "
                           f"{','.join(AFFECTNET_CSV_HEADER)}")
    return [(lineno, row) for lineno, row in enumerate(rows[1:], 2) if any(c.strip() for c in row)]
