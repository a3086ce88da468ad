"""adadf check-data: official counts, differences, unreadable and duplicated images, the manifest and its
content hash."""
from __future__ import annotations

import json
import shutil

import pytest

from adadf_core.data import checkdata
from adadf_core.data.checkdata import check_data, official_counts
from conftest import make_raf, make_sfew, save_image


def test_official_counts_are_self_consistent():
    raf = official_counts("raf")
    assert (raf.train, raf.test) == (12271, 3068)
    assert sum(raf.train_per_class) == 12271 and sum(raf.test_per_class) == 3068
    a7, a8 = official_counts("affectnet7", "2017"), official_counts("affectnet8", "2017")
    assert (a7.train, a7.test, a8.train, a8.test) == (283901, 3500, 287651, 4000)
    assert official_counts("affectnet8", "hq").train_per_class is None          # totals only, unverified
    sfew = official_counts("sfew")
    assert (sfew.train, sfew.test) == (958, 436) and sfew.train_per_class is None
    assert all(o.source for o in checkdata.OFFICIAL.values())
    assert official_counts("imagefolder") is None


@pytest.mark.slow
def test_a_full_size_raf_db_copy_matches_the_official_release(tmp_path):
    """The real label file's shape: 12,271 + 3,068 lines with the official class counts (tiny stand-in images)."""
    root = tmp_path / "RAF-DB" / "basic"
    image = save_image(tmp_path / "one.jpg", (8, 8))
    (root / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for split, counts, width in (("train", checkdata.RAF_TRAIN, 5), ("test", checkdata.RAF_TEST, 4)):
        labels = [c + 1 for c, n in enumerate(counts) for _ in range(n)]
        for i, lab in enumerate(labels, 1):
            stem = f"{split}_{i:0{width}d}"
            (root / "Image" / "aligned" / f"{stem}_aligned.jpg").hardlink_to(image)
            lines.append(f"{stem}.jpg {lab}")
    (root / "EmoLabel").mkdir()
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    report = check_data("raf", tmp_path / "RAF-DB", decode=False, progress=False)
    assert report.matches_official and report.differences == []
    assert len(report.duplicates) == 1                        # every stand-in is the same bytes: one group


def test_differences_unreadable_duplicates_and_manifest(tmp_path):
    root = make_raf(tmp_path / "raf")
    aligned = root / "Image" / "aligned"
    shutil.copy(aligned / "train_00001_aligned.jpg", aligned / "test_0003_aligned.jpg")   # a train image in test
    (aligned / "train_00005_aligned.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    report = check_data("raf", root, out, progress=False)
    assert "training split: 10 images, the official release has 12,271 (-12,261)" in report.differences
    assert "test split, Fear: 1 images, official 74 (-73)" in report.differences
    assert report.unreadable == [report.unreadable[0]] and report.unreadable[0].startswith(
        "train:Image/aligned/train_00005_aligned.jpg: cannot decode image")
    assert report.duplicates == [["train:Image/aligned/train_00001_aligned.jpg", "test:Image/aligned/test_0003_aligned.jpg"]]
    saved = json.loads((out / "check-data.json").read_text())
    assert saved["content_sha256"] == report.content_sha256 and saved["official"]["source"].startswith("Li, Deng")
    rows = (out / "manifest.csv").read_text().splitlines()
    assert rows[0] == "split,name,label,class,bytes,sha256,status" and len(rows) == 1 + 17


def test_content_hash_tells_copies_apart(tmp_path):
    a = check_data("raf", make_raf(tmp_path / "a"), progress=False).content_sha256
    b = check_data("raf", make_raf(tmp_path / "b"), progress=False).content_sha256
    assert a == b                                           # same files, names and labels, other folder
    c_root = make_raf(tmp_path / "c", train_labels=(1, 2, 3, 4, 5, 6, 7, 1, 4, 6))
    assert check_data("raf", c_root, progress=False).content_sha256 != a        # one label differs
    save_image(make_raf(tmp_path / "d") / "Image" / "aligned" / "train_00002_aligned.jpg", (24, 24), seed=99)
    assert check_data("raf", tmp_path / "d", progress=False).content_sha256 != a   # one image differs


def test_cli_exit_status_and_report(tmp_path, capsys):
    root = make_sfew(tmp_path / "sfew")
    assert checkdata.cli_main(["--dataset", "sfew", "--data-root", str(root), "--out", str(tmp_path / "o"),
                               "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "official: 958 train / 436 test; source: Dhall et al., EmotiW 2015" in out
    assert "DIFFERENCE: training split: 14 images, the official release has 958 (-944)" in out
    assert checkdata.cli_main(["--dataset", "raf", "--data-root", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "adadf check-data: error: raf root" in capsys.readouterr().err


def test_synthfer_defaults_to_the_generated_copy_and_knows_the_generator_s_counts(tiny_synthfer, tmp_path,
                                                                                   monkeypatch, capsys):
    from adadf_core.data.synthfer import DEFAULTS
    monkeypatch.setenv("ADADF_DATA", str(tiny_synthfer.parent))           # where the generated copy lives
    code = checkdata.cli_main(["--dataset", "synthfer", "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert f"synthfer at {tiny_synthfer}" in out
    assert f"official: {DEFAULTS['n_train']:,} train / {DEFAULTS['n_test']:,} test" in out
    assert code == 1 and "70 images, the official release has 2,000" in out   # the tiny copy is not the default one
    with pytest.raises(SystemExit):
        checkdata.cli_main(["--dataset", "raf"])
    assert "--dataset raf needs --data-root PATH" in capsys.readouterr().err
