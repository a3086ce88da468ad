"""``adadf check-data``: is this copy of a data set the official release, and is it the same copy as
another lab's?

`check_data` reads both splits the way training does (`datasets.index_split`), then

- compares the image counts and per-class histograms with the official release's (`OFFICIAL`, each
  with its source), listing every difference;
- decodes every image with the project's decoder and lists the unreadable ones;
- hashes every file (SHA-256 of its bytes) and lists byte-identical duplicates, within a split and
  between training and test split (a leak);
- writes ``manifest.csv`` (split, name, label, class, bytes, sha256, status) and ``check-data.json``
  (counts, differences, problems and ``content_sha256``: the SHA-256 of the sorted manifest lines
  ``split<TAB>name<TAB>label<TAB>sha256``). Two copies with the same content hash hold the same files
  under the same names with the same labels.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from adadf_core.data.cache import decode_face
from adadf_core.data.classes import DATASET_NAMES
from adadf_core.data.labelfiles import DatasetError
from adadf_core.data.layouts import index_split
from adadf_core.data.synthfer import DEFAULTS as SYNTHFER_DEFAULTS, default_root as synthfer_root
from adadf_core.utils.fileio import atomic_write, sha256_file, write_json
from adadf_core.utils.progress import bar as tqdm

# The official releases' counts. Labels in each data set's own order (classes.CLASS_NAMES).
# RAF-DB basic: Li, Deng & Du, "Reliable crowdsourcing and deep locality-preserving learning for expression
#   recognition in the wild", CVPR 2017, and the release's EmoLabel/list_patition_label.txt (12,271 train /
#   3,068 test; the per-class counts are those of that file, as quoted by many later papers).
# AffectNet: Mollahosseini, Hasani & Mahoor, "AffectNet: A database for facial expression, valence, and
#   arousal computing in the wild", IEEE TAC 2017, table of the manually annotated images: training counts per
#   class (these also sum to the 414,798 rows of training.csv with None 33,088, Uncertain 11,645, Non-Face
#   82,414); validation 500 per class (validation.csv, 5,500 rows with the three non-emotions).
#   AffectNet-7 = the same without Contempt: 283,901 / 3,500, the figures papers quote.
#   The HQ release (train_set/, val_set/ with <id>_exp.npy) is assumed to hold the same manually annotated
#   emotion images; we have no authoritative per-class table for it (some papers quote 287,568 training
#   images for AffectNet-8), so its counts are compared as totals and marked unverified.
# SFEW 2.0: Dhall, Ramana Murthy, Goecke, Joshi & Gedeon, "Video and image based emotion recognition
#   challenges in the wild: EmotiW 2015", ICMI 2015: 958 training, 436 validation (our test split) and 372
#   (unlabelled) test images. No per-class counts are given here (we have no source we trust for them), and
#   an aligned-faces folder holds only the faces the organisers' detector found, so fewer can be right.
RAF_TRAIN = (1290, 281, 717, 4772, 1982, 705, 2524)
RAF_TEST = (329, 74, 160, 1185, 478, 162, 680)
AFFECTNET_TRAIN = (74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750)
AFFECTNET_VAL = (500,) * 8
_SOURCES = {
    "raf": "Li, Deng & Du, CVPR 2017 (RAF-DB basic, list_patition_label.txt)",
    "affectnet": "Mollahosseini, Hasani & Mahoor, IEEE TAC 2017 (manually annotated training / validation sets)",
    "sfew": "Dhall et al., EmotiW 2015, ICMI 2015 (SFEW 2.0 train / validation)",
}


@dataclass(frozen=True)
class Official:
    source: str
    train: int
    test: int
    train_per_class: Optional[tuple[int, ...]] = None
    test_per_class: Optional[tuple[int, ...]] = None
    note: str = ""


def _affectnet(n_classes: int, note: str = "") -> Official:
    return Official(_SOURCES["affectnet"], sum(AFFECTNET_TRAIN[:n_classes]), sum(AFFECTNET_VAL[:n_classes]),
                    None if note else AFFECTNET_TRAIN[:n_classes], None if note else AFFECTNET_VAL[:n_classes], note)


_HQ_NOTE = "HQ release: totals assumed equal to the 2017 release's, unverified"
OFFICIAL: dict[tuple[str, str], Official] = {
    ("raf", ""): Official(_SOURCES["raf"], 12271, 3068, RAF_TRAIN, RAF_TEST),
    ("affectnet8", "2017"): _affectnet(8),
    ("affectnet7", "2017"): _affectnet(7),
    ("affectnet8", "hq"): _affectnet(8, _HQ_NOTE),
    ("affectnet7", "hq"): _affectnet(7, _HQ_NOTE),
    ("sfew", ""): Official(_SOURCES["sfew"], 958, 436, note="aligned-face folders may hold fewer (faces not found)"),
    # the embedded data set as `adadf generate-synthfer` writes it by default (and make reproduce uses it)
    ("synthfer", ""): Official("the SynthFER generator's defaults (adadf_core/data/synthfer/params.py)",
                               SYNTHFER_DEFAULTS["n_train"], SYNTHFER_DEFAULTS["n_test"]),
}


def official_counts(dataset: str, release: str = "") -> Optional[Official]:
    """The published counts for ``dataset`` (AffectNet: ``release`` "2017" or "hq"), or None."""
    return OFFICIAL.get((dataset, release if dataset.startswith("affectnet") else ""))


@dataclass
class CheckReport:
    dataset: str
    root: str
    release: str
    class_names: list[str]
    counts: dict[str, list[int]]                 # split -> per-class counts
    official: Optional[Official]
    differences: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    content_sha256: str = ""
    manifest: str = ""

    @property
    def matches_official(self) -> bool:
        return self.official is not None and not self.differences

    @property
    def clean(self) -> bool:
        return not self.unreadable and not self.duplicates


def _count_differences(counts: dict[str, list[int]], official: Official, class_names: list[str]) -> list[str]:
    out = []
    for split, label in (("train", "training"), ("test", "test")):
        total, per_class = getattr(official, split), getattr(official, f"{split}_per_class")
        have = sum(counts[split])
        if have != total:
            out.append(f"{label} split: {have:,} images, the official release has {total:,} ({have - total:+,})")
        if per_class is not None:
            for name, mine, theirs in zip(class_names, counts[split], per_class):
                if mine != theirs:
                    out.append(f"{label} split, {name}: {mine:,} images, official {theirs:,} ({mine - theirs:+,})")
    return out


def _manifest_rows(indexes: dict, decode: bool, progress: bool) -> list[dict]:

    rows = []
    for split, index in indexes.items():
        boxes = index.boxes
        for i in tqdm(range(len(index.paths)), desc=f"checking {split}", disable=not progress, leave=False):
            size, sha = sha256_file(index.paths[i])
            status = "ok"
            if decode:
                try:
                    decode_face(index.paths[i], None if boxes is None else boxes[i])
                except DatasetError as error:
                    status = f"unreadable: {error}"
            rows.append(dict(split=split, name=index.names[i], label=int(index.labels[i]),
                             **{"class": index.class_names[int(index.labels[i])]}, bytes=size, sha256=sha,
                             status=status))
    return rows


def _duplicate_groups(rows: list[dict]) -> list[list[str]]:
    by_hash: dict[str, list[str]] = {}
    for row in rows:
        by_hash.setdefault(row["sha256"], []).append(f"{row['split']}:{row['name']}")
    return [names for names in by_hash.values() if len(names) > 1]


def content_hash(rows: list[dict]) -> str:
    """SHA-256 of the sorted lines ``split<TAB>name<TAB>label<TAB>sha256`` of a manifest."""
    lines = sorted(f"{r['split']}\t{r['name']}\t{r['label']}\t{r['sha256']}\n" for r in rows)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _write_manifest(rows: list[dict], path: Path) -> None:
    columns = ["split", "name", "label", "class", "bytes", "sha256", "status"]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


def check_data(dataset: str, root: str | Path, out: Optional[str | Path] = None, decode: bool = True,
               progress: bool = True, class_names: Optional[str] = None) -> CheckReport:
    """Check a copy of ``dataset`` at ``root`` (see the module docstring); write the manifest and the
    JSON report into ``out`` when given."""
    indexes = {split: index_split(dataset, root, split, class_names) for split in ("train", "test")}
    names = indexes["train"].class_names
    counts = {s: np.bincount(ix.labels, minlength=len(names)).tolist() for s, ix in indexes.items()}
    release = str(indexes["train"].extra.get("release", ""))
    official = official_counts(dataset, release)
    report = CheckReport(dataset, str(root), release, list(names), counts, official)
    if official is not None:
        report.differences = _count_differences(counts, official, names)
    rows = _manifest_rows(indexes, decode, progress)
    report.unreadable = [f"{r['split']}:{r['name']}: {r['status'][len('unreadable: '):]}"
                         for r in rows if r["status"] != "ok"]
    report.duplicates = _duplicate_groups(rows)
    report.content_sha256 = content_hash(rows)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_manifest(rows, out / "manifest.csv")
        report.manifest = str(out / "manifest.csv")
        write_json(out / "check-data.json", _as_json(report))
    return report


def _as_json(report: CheckReport) -> dict:
    official = report.official
    return dict(dataset=report.dataset, root=report.root, release=report.release, class_names=report.class_names,
                counts=report.counts, content_sha256=report.content_sha256,
                official=None if official is None else dict(
                    source=official.source, train=official.train, test=official.test,
                    train_per_class=official.train_per_class, test_per_class=official.test_per_class,
                    note=official.note),
                matches_official=report.matches_official, differences=report.differences,
                unreadable=report.unreadable, duplicates=report.duplicates, manifest=report.manifest)


def format_report(report: CheckReport) -> str:
    lines = [f"{report.dataset} at {report.root}" + (f" ({report.release} release)" if report.release else "")]
    for split in ("train", "test"):
        hist = ", ".join(f"{n} {c:,}" for n, c in zip(report.class_names, report.counts[split]))
        lines.append(f"  {split}: {sum(report.counts[split]):,} images ({hist})")
    official = report.official
    if official is None:
        lines.append("  official counts: none published for this data set")
    else:
        lines.append(f"  official: {official.train:,} train / {official.test:,} test; source: {official.source}"
                     + (f"; note: {official.note}" if official.note else ""))
        lines += [f"  DIFFERENCE: {d}" for d in report.differences] or ["  counts match the official release"]
    lines += [f"  UNREADABLE: {u}" for u in report.unreadable]
    lines += [f"  DUPLICATE (same bytes): {', '.join(g)}" for g in report.duplicates]
    lines.append(f"  content SHA-256: {report.content_sha256}")
    if report.manifest:
        lines.append(f"  manifest: {report.manifest}")
    return "\n".join(lines)


def cli_main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="adadf check-data",
                                description="Compare a copy of a data set with the official release's counts, "
                                            "list unreadable and duplicated images, and write a manifest with "
                                            "a content hash of the set. Exit status 0: matches and clean; 1: "
                                            "differences or problems listed; 2: the copy cannot be read.")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="the data set's name, as for adadf train")
    p.add_argument("--data-root", default=None, help="the data set's folder, as given to adadf train (synthfer: "
                                                    "the generated copy by default, as for train and reproduce)")
    p.add_argument("--out", default=None, help="folder for manifest.csv and check-data.json "
                                               "(default: check-data/<dataset> in the current folder)")
    p.add_argument("--class-names", default=None, help="imagefolder only: 'raf' reads folders 1..7 as RAF-DB")
    p.add_argument("--no-decode", action="store_true", help="hash the files but do not decode them (faster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.data_root is None and args.dataset != "synthfer":
        p.error(f"--dataset {args.dataset} needs --data-root PATH (only synthfer has a default: the generated copy)")
    data_root = args.data_root if args.data_root is not None else synthfer_root()
    out = Path(args.out) if args.out else Path("check-data") / args.dataset
    try:
        report = check_data(args.dataset, data_root, out, decode=not args.no_decode,
                            progress=not args.no_progress, class_names=args.class_names)
    except (DatasetError, OSError) as error:
        print(f"adadf check-data: error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if (report.matches_official or report.official is None) and report.clean else 1
