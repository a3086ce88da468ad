"""Face alignment: template geometry, recorded-landmark detector, the folder tool and its manifest, MTCNN."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from adadf_core.data import align
from adadf_core.data.align import Face, LandmarkFileDetector, align_face, align_folder, read_manifest


# ------------------------------------------------------------------------------------------ helpers
def random_similarity(rng, max_angle=40, centre=(160, 150)):
    """A random rotation / uniform scale that puts the template's centre near ``centre`` (x, y)."""
    from skimage.transform import SimilarityTransform

    turn = SimilarityTransform(scale=rng.uniform(1.4, 2.2), rotation=np.deg2rad(rng.uniform(-max_angle, max_angle)))
    middle = turn(align.reference_template(100)).mean(axis=0)
    shift = np.asarray(centre) + rng.uniform(-15, 15, size=2) - middle
    return SimilarityTransform(scale=turn.scale, rotation=turn.rotation, translation=shift)


def spot_image(shape, point, sigma=3.0):
    """Grey uint8 image with one bright Gaussian spot at ``point`` (x, y)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    spot = np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * sigma ** 2))
    return np.clip(spot * 250, 0, 255).astype(np.uint8)


def centroid(grey):
    w = grey.astype(np.float64)
    w[w < 20] = 0
    yy, xx = np.mgrid[0:grey.shape[0], 0:grey.shape[1]]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


def synthetic_face(rng, shape=(220, 260)):
    """An RGB 'photo' with dark dots at five landmarks placed by a random similarity of the template."""
    tform = random_similarity(rng, max_angle=20, centre=(shape[1] / 2, shape[0] / 2))
    points = tform(align.reference_template(100))
    image = np.full(shape + (3,), 180, np.uint8)
    image[..., 0] = np.linspace(120, 220, shape[1]).astype(np.uint8)[None, :]
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for x, y in points:
        image[(xx - x) ** 2 + (yy - y) ** 2 < 9] = (20, 20, 20)
    return image, points


def write_landmark_csv(path, records):
    """records: name -> (width, height, points [5, 2])."""
    rows = []
    for name, (w, h, pts) in records.items():
        row = {"name": name, "width": w, "height": h}
        for label, (x, y) in zip(align.LANDMARK_NAMES, pts):
            row[f"{label}_x"], row[f"{label}_y"] = x, y
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


class CountingDetector:
    """Wraps a detector; raises on call number ``fail_on`` (1-based) to simulate a crash."""

    def __init__(self, inner, fail_on=None):
        self.inner, self.fail_on, self.calls, self.images_seen = inner, fail_on, 0, 0
        self.name = "counting"

    def detect(self, images, names=None):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise RuntimeError("simulated detector crash")
        self.images_seen += len(images)
        return self.inner.detect(images, names=names)


@pytest.fixture
def tree(tmp_path):
    """An SFEW-like tree: Train/<Emotion>/ with good faces, a grey and an RGBA face, a face-less image
    (no recorded landmarks), a corrupt JPEG, a text file and a tiny image; plus the landmarks CSV."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    records = {}
    for rel in ["Train/Happy/a.jpg", "Train/Happy/b.png", "Train/Sad/c.jpg", "Train/Sad/grey.png",
                "Train/Sad/rgba.png"]:
        image, points = synthetic_face(rng)
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("grey.png"):
            Image.fromarray(image[..., 1]).save(path)
        elif rel.endswith("rgba.png"):
            Image.fromarray(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])).save(path)
        else:
            Image.fromarray(image).save(path)
        records[path.name] = (image.shape[1], image.shape[0], points)
    Image.fromarray(np.full((120, 150, 3), 90, np.uint8)).save(src / "Train/Sad/noface.jpg")
    (src / "Train/Happy/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (src / "Train/notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(src / "Train/Happy/tiny.png")
    csv = write_landmark_csv(tmp_path / "landmarks.csv", records)
    return src, csv, records


def statuses(manifest):
    return dict(zip(manifest["source"], manifest["status"]))


# ----------------------------------------------------------------------------------------- geometry
def test_template_is_the_112_template_scaled_to_the_output():
    t100 = align.reference_template(100)
    np.testing.assert_allclose(t100, align.TEMPLATE_112x112 * 100 / 112)
    np.testing.assert_allclose(t100[0], [34.19, 46.16], atol=0.01)
    wide = align.reference_template((96, 112), base="96x112")
    np.testing.assert_allclose(wide, align.TEMPLATE_96x112)
    # eyes above nose above mouth, left before right
    assert t100[0, 1] < t100[2, 1] < t100[3, 1] and t100[0, 0] < t100[1, 0]
    with pytest.raises(ValueError, match="template base"):
        align.reference_template(100, base="128x128")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alignment_maps_known_landmarks_onto_the_template_within_a_pixel(seed):
    rng = np.random.default_rng(seed)
    template = align.reference_template(100)
    tform = random_similarity(rng)
    landmarks = tform(template)            # where the template points land in a 'photo'
    shape = (320, 340)
    for k in range(5):
        photo = spot_image(shape, landmarks[k])
        aligned = align_face(photo, landmarks, size=100)
        assert aligned.shape == (100, 100) and aligned.dtype == np.uint8
        found = centroid(aligned)
        assert np.linalg.norm(found - template[k]) < 1.0, (k, found, template[k])


def test_alignment_output_size_and_rgb():
    rng = np.random.default_rng(3)
    image, points = synthetic_face(rng)
    out = align_face(image, points, size=(96, 112), template=align.reference_template((96, 112), base="96x112"))
    assert out.shape == (112, 96, 3) and out.dtype == np.uint8


def test_degenerate_landmarks_raise_a_clear_error():
    with pytest.raises(ValueError, match="similarity transform|NaN"):
        align.similarity_to_template(np.zeros((5, 2)), align.reference_template(100))
    with pytest.raises(ValueError, match="NaN"):
        align.similarity_to_template(np.full((5, 2), np.nan), align.reference_template(100))


def test_choose_face_rules():
    big = Face(box=(0, 0, 100, 100), confidence=0.8, landmarks=np.zeros((5, 2)))
    sure = Face(box=(0, 0, 30, 30), confidence=0.99, landmarks=np.zeros((5, 2)))
    assert align.choose_face([sure, big], "largest") is big
    assert align.choose_face([sure, big], "most_confident") is sure
    assert align.choose_face([], "largest") is None
    with pytest.raises(ValueError, match="multi_face"):
        align.choose_face([big], "first")


# ------------------------------------------------------------------------------ recorded landmarks
def test_landmark_file_detector_lookup_scaling_and_mirrored_order(tmp_path):
    pts = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
    mirrored = pts[[1, 0, 2, 4, 3]]     # subject's-left-first convention
    csv = write_landmark_csv(tmp_path / "lm.csv", {"x.jpg": (100, 120, pts), "sub/y.jpg": (100, 120, mirrored)})
    det = LandmarkFileDetector(csv)
    assert isinstance(det, align.Detector)
    img = np.zeros((120, 100, 3), np.uint8)
    x, y, z = det.detect([img, img, img], names=["Train/x.jpg", "sub/y.jpg", "missing.jpg"])
    np.testing.assert_allclose(x[0].landmarks, pts)
    np.testing.assert_allclose(y[0].landmarks, pts)          # swapped back into image-left order
    assert z == []
    bigger = np.zeros((240, 200, 3), np.uint8)                # same photo at twice the size
    np.testing.assert_allclose(det.detect([bigger], names=["x.jpg"])[0][0].landmarks, pts * 2)
    box = x[0].box
    assert box[0] < pts[:, 0].min() and box[2] > pts[:, 0].max() and box[1] < pts[:, 1].min() and box[3] > pts[:, 1].max()
    with pytest.raises(ValueError, match="one name per image"):
        det.detect([img])


def test_landmark_file_detector_rejects_a_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,width,height\na.jpg,10,10\n")
    with pytest.raises(ValueError, match="bad.csv.*10 landmark"):
        LandmarkFileDetector(bad)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        LandmarkFileDetector(tmp_path / "nope.csv")


def test_load_rgb_converts_grey_and_rgba_and_names_bad_files(tmp_path):
    Image.fromarray(np.full((40, 50), 77, np.uint8)).save(tmp_path / "g.png")
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :25, 3] = 255                       # left half opaque red, right half transparent
    Image.fromarray(rgba).save(tmp_path / "t.png")
    grey, note = align.load_rgb(tmp_path / "g.png")
    assert grey.shape == (40, 50, 3) and (grey == 77).all() and "from L" in note
    comp, note = align.load_rgb(tmp_path / "t.png")
    assert comp.shape == (40, 50, 3) and tuple(comp[0, 0]) == (200, 0, 0) and tuple(comp[0, 49]) == (255, 255, 255)
    assert "RGBA" in note
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.jpg.*not a readable image"):
        align.load_rgb(tmp_path / "x.jpg")


# -------------------------------------------------------------------------------------- folder tool
def test_align_folder_preserves_the_tree_and_lists_every_input(tree, tmp_path):
    src, csv, records = tree
    dst = tmp_path / "dst"
    manifest = align_folder(src, dst, detector=f"landmarks:{csv}", progress=False, batch_size=3)
    got = statuses(manifest)
    assert got == {
        "Train/Happy/a.jpg": "aligned", "Train/Happy/b.png": "aligned", "Train/Happy/corrupt.jpg": "unreadable",
        "Train/Happy/tiny.png": "too_small", "Train/Sad/c.jpg": "aligned", "Train/Sad/grey.png": "aligned",
        "Train/Sad/noface.jpg": "no_face", "Train/Sad/rgba.png": "aligned", "Train/notes.txt": "unreadable",
    }
    for rel in ["Train/Happy/a.jpg", "Train/Happy/b.png", "Train/Sad/c.jpg", "Train/Sad/grey.png", "Train/Sad/rgba.png"]:
        out = np.asarray(Image.open(dst / rel))
        assert out.shape == (100, 100, 3), rel
    assert not (dst / "Train/Sad/noface.jpg").exists() and not (dst / "Train/Happy/corrupt.jpg").exists()
    # the aligned dots sit on the template (PNG: lossless)
    out = np.asarray(Image.open(dst / "Train/Happy/b.png")).astype(int).sum(axis=2)
    for x, y in align.reference_template(100):
        assert out[int(round(y)), int(round(x))] < 250, "landmark dot not at the template point"
    on_disk = read_manifest(dst / "manifest.csv")
    assert list(on_disk.columns) == align.MANIFEST_COLUMNS and len(on_disk) == 9
    row = on_disk.set_index("source").loc["Train/Happy/a.jpg"]
    np.testing.assert_allclose([row.left_eye_x, row.left_eye_y], records["a.jpg"][2][0], atol=0.01)
    assert row.output == "Train/Happy/a.jpg" and row.confidence == 1.0
    msgs = on_disk.set_index("source")["message"]
    assert "not a readable image" in msgs["Train/Happy/corrupt.jpg"]
    assert "12x12" in msgs["Train/Happy/tiny.png"]
    assert "no face" in msgs["Train/Sad/noface.jpg"]
    assert "from L" in msgs["Train/Sad/grey.png"] and "RGBA" in msgs["Train/Sad/rgba.png"]
    summary = align.manifest_summary(on_disk).set_index("status")["count"]
    assert summary["aligned"] == 5 and summary["unreadable"] == 2 and summary["skipped_existing"] == 0


def test_rerun_skips_done_images_and_redo_redoes_them(tree, tmp_path):
    src, csv, _ = tree
    dst = tmp_path / "dst"
    first = align_folder(src, dst, detector=f"landmarks:{csv}", progress=False)
    out = dst / "Train/Happy/a.jpg"
    out.write_bytes(out.read_bytes())         # a marker: redo must rewrite it
    marker_mtime = out.stat().st_mtime_ns
    det = CountingDetector(LandmarkFileDetector(csv))
    again = align_folder(src, dst, detector=det, progress=False)
    got = statuses(again)
    assert got == statuses(first) and sum(s == "aligned" for s in got.values()) == 5   # a rerun: the same manifest
    assert align.manifest_summary(again).equals(align.manifest_summary(first))
    assert got["Train/Sad/noface.jpg"] == "no_face" and got["Train/Happy/corrupt.jpg"] == "unreadable"
    assert det.images_seen == 1               # only the face-less image went to the detector again
    assert out.stat().st_mtime_ns == marker_mtime
    kept = again.set_index("source").loc["Train/Happy/a.jpg"]
    assert kept.confidence == 1.0 and not np.isnan(kept.nose_x)   # carried over from the first run
    (dst / "manifest.csv").unlink()                                # outputs with no manifest row: skipped
    assert set(statuses(align_folder(src, dst, detector=det, progress=False)).values()) >= {"skipped_existing"}
    det = CountingDetector(LandmarkFileDetector(csv))
    redone = align_folder(src, dst, detector=det, redo=True, progress=False)
    assert sum(s == "aligned" for s in statuses(redone).values()) == 5
    assert det.images_seen == 6
    assert len(redone) == 9 and len(pd.read_csv(dst / "manifest.csv")) == 9   # compacted: one row per input


def test_a_crash_partway_keeps_the_finished_rows_and_a_rerun_finishes(tree, tmp_path):
    src, csv, _ = tree
    dst = tmp_path / "dst"
    crashing = CountingDetector(LandmarkFileDetector(csv), fail_on=2)
    with pytest.raises(RuntimeError, match="simulated"):
        align_folder(src, dst, detector=crashing, batch_size=2, progress=False)
    partial = read_manifest(dst / "manifest.csv")
    # first batch (a.jpg, b.png) plus the unreadable/tiny files read before the second detector call
    assert statuses(partial)["Train/Happy/a.jpg"] == "aligned"
    assert statuses(partial)["Train/Happy/b.png"] == "aligned"
    assert "Train/Sad/c.jpg" not in set(partial["source"])
    assert (dst / "Train/Happy/a.jpg").exists()
    assert not list(dst.rglob("*.partial"))
    finished = align_folder(src, dst, detector=f"landmarks:{csv}", progress=False)
    got = statuses(finished)
    assert got["Train/Happy/a.jpg"] == "aligned" and got["Train/Sad/c.jpg"] == "aligned"
    assert len(finished) == 9


def test_several_faces_follow_the_multi_face_rule(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(src / "two.png")
    pts = align.reference_template(100)

    class TwoFaces:
        name = "two-faces"

        def detect(self, images, names=None):
            return [[Face((0, 0, 150, 150), 0.80, pts * 1.5), Face((120, 120, 160, 160), 0.99, pts * 0.4 + 120)]
                    for _ in images]

    largest = align_folder(src, tmp_path / "l", detector=TwoFaces(), progress=False)
    confident = align_folder(src, tmp_path / "c", detector=TwoFaces(), multi_face="most_confident", progress=False)
    assert largest.loc[0, "confidence"] == 0.8 and confident.loc[0, "confidence"] == 0.99
    assert largest.loc[0, "n_faces"] == 2 and "2 faces" in largest.loc[0, "message"]


def test_degenerate_landmarks_are_listed_as_error_and_limit_previews(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.full((80, 80, 3), 100, np.uint8)).save(src / name)
    flat = np.full((5, 2), 40.0)
    good = align.reference_template(100) * 0.8
    csv = write_landmark_csv(tmp_path / "lm.csv", {"a.png": (80, 80, flat), "b.png": (80, 80, good),
                                                  "c.png": (80, 80, good)})
    preview = align_folder(src, tmp_path / "dst", detector=f"landmarks:{csv}", limit=2, progress=False)
    assert statuses(preview) == {"a.png": "error", "b.png": "aligned"}
    assert "similarity transform" in preview.loc[0, "message"]
    assert not (tmp_path / "dst" / "a.png").exists() and not (tmp_path / "dst" / "c.png").exists()
    full = align_folder(src, tmp_path / "dst", detector=f"landmarks:{csv}", progress=False)
    assert statuses(full) == {"a.png": "error", "b.png": "aligned", "c.png": "aligned"}


def test_empty_or_missing_folders_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        align_folder(tmp_path / "empty", tmp_path / "out", detector="landmarks:x.csv")
    with pytest.raises(FileNotFoundError, match="missing"):
        align_folder(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown detector"):
        align.make_detector("dlib")


def test_cli_aligns_a_tree_and_reports_errors(tree, tmp_path, capsys):
    from adadf_core.cli import main

    src, csv, _ = tree
    dst = tmp_path / "cli"
    assert main(["align", str(src), str(dst), "--detector", f"landmarks:{csv}", "--size", "64", "--no-progress"]) == 0
    assert np.asarray(Image.open(dst / "Train/Sad/c.jpg")).shape == (64, 64, 3)
    assert "aligned" in capsys.readouterr().out
    (tmp_path / "nothing").mkdir()
    assert main(["align", str(tmp_path / "nothing"), str(dst)]) == 2
    assert "nothing" in capsys.readouterr().err


def test_landmark_error_report_measures_pixel_error(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "synth"
    (root / "Image" / "original").mkdir(parents=True)
    (root / "EmoLabel").mkdir()
    records = {}
    for i in range(4):
        image, points = synthetic_face(rng)
        name = f"train_{i:05d}.jpg"
        Image.fromarray(image).save(root / "Image" / "original" / name)
        records[name] = (image.shape[1], image.shape[0], points)
    write_landmark_csv(root / "EmoLabel" / "landmarks.csv", records)
    recorded = LandmarkFileDetector(root / "EmoLabel" / "landmarks.csv")

    class Shifted:                       # finds three faces of four, every landmark 5 px off (3, 4)
        name = "shifted"

        def detect(self, images, names=None):
            faces = recorded.detect(images, names)
            return [[] if n.endswith("00003.jpg") else
                    [Face(f[0].box, 0.9, f[0].landmarks + [3.0, 4.0])] for n, f in zip(names, faces)]

    report = align.landmark_error_report(root, detector=Shifted(), progress=False)
    s = report.summary.iloc[0]
    assert s.n_images == 4 and s.detection_rate == 0.75
    assert s.mean_error_px == pytest.approx(5.0) and s.mean_err_nose_px == pytest.approx(5.0)
    assert not report.per_image.set_index("name").loc["train_00003.jpg", "detected"]
    # the landmarks-folder shortcut finds EmoLabel/landmarks.csv above Image/original
    assert isinstance(align.make_detector("landmarks", root / "Image" / "original"), LandmarkFileDetector)


def test_example_photos_are_rgb():
    photos = align.example_photos()
    assert "astronaut" in photos
    for name, image in photos.items():
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, name


# -------------------------------------------------------------------------------------------- MTCNN
needs_mtcnn = pytest.mark.skipif(not align.mtcnn_available(), reason="align extra (mtcnn + tensorflow) not installed")


@pytest.fixture(scope="module")
def mtcnn():
    if not align.mtcnn_available():
        pytest.skip("align extra (mtcnn + tensorflow) not installed")
    det = align.MTCNNDetector()
    yield det
    det.close()


@pytest.mark.align
@needs_mtcnn
def test_mtcnn_finds_the_astronaut_with_plausible_landmarks(mtcnn):
    from skimage import data

    astronaut = data.astronaut()
    blank = np.full((200, 240, 3), 128, np.uint8)
    faces_astronaut, faces_blank = mtcnn.detect([astronaut, blank])   # one batch, two shapes
    assert faces_blank == []
    assert len(faces_astronaut) == 1
    face = faces_astronaut[0]
    assert face.confidence > 0.9
    (le, re, nose, ml, mr) = face.landmarks
    x1, y1, x2, y2 = face.box
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200     # her face is in the upper middle
    assert le[0] < re[0] and ml[0] < mr[0]
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])             # eyes above nose above mouth
    assert ((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2])).all()
    assert "tensorflow" not in sys.modules                              # TF stayed in the worker


@pytest.mark.align
@needs_mtcnn
def test_mtcnn_folder_alignment_of_a_real_photo(mtcnn, tmp_path):
    from skimage import data

    src = tmp_path / "src" / "Happy"
    src.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(src / "astronaut.jpg")
    Image.fromarray(np.full((150, 150, 3), 60, np.uint8)).save(src / "wall.png")
    manifest = align_folder(tmp_path / "src", tmp_path / "dst", detector=mtcnn, progress=False)
    got = statuses(manifest)
    assert got == {"Happy/astronaut.jpg": "aligned", "Happy/wall.png": "no_face"}
    assert np.asarray(Image.open(tmp_path / "dst" / "Happy" / "astronaut.jpg")).shape == (100, 100, 3)


@pytest.mark.align
@needs_mtcnn
def test_mtcnn_landmarks_on_synthfer_are_close_to_the_recorded_ones(mtcnn, tmp_path):
    from adadf_core.data import synthfer
    root = synthfer.ensure(tmp_path / "synth", n_train=12, n_test=4, progress=False)
    report = align.landmark_error_report(root, detector=mtcnn, progress=False)
    s = report.summary.iloc[0]
    assert s.n_images == 16
    assert s.detection_rate >= 0.5                  # measured 0.69-0.84 on the default generator
    assert s.mean_error_px < 6.0 and s.mean_nme < 0.2    # measured about 3.3-3.5 px, NME about 0.09


# ----------------------------------------------------------------------------------------- notebook
@pytest.mark.slow
def test_alignment_notebook_runs_on_synthfer_with_recorded_landmarks(tmp_path):
    """The notebook's no-MTCNN path (detector='landmarks'), on a tiny SynthFER copy."""
    import nbformat
    import papermill
    from pathlib import Path

    from adadf_core.data import synthfer
    path = Path(__file__).resolve().parent.parent / "notebooks" / "01_alignment.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    root = synthfer.ensure(tmp_path / "synth", n_train=12, n_test=4, progress=False)
    out = tmp_path / "results-quick"          # quick runs write to a -quick folder
    papermill.execute_notebook(str(path), str(tmp_path / "run.ipynb"), cwd=str(path.parent), progress_bar=False,
                               parameters=dict(data_root=str(root), output_dir=str(out), quick=True,
                                               detector="landmarks", n_examples=4))
    assert (out / "figures" / "alignment_before_after.png").stat().st_size > 10_000
    assert (out / "figures" / "alignment_template.png").exists()
    summary = pd.read_csv(out / "tables" / "alignment_manifest_summary.csv").set_index("status")["count"]
    assert summary["aligned"] == 16
    assert (out / "tables" / "alignment_manifest_summary.md").read_text().startswith("| status")
    assert len(list((out / "data" / "synthfer_aligned").glob("*.jpg"))) == 16


# ----------------------------------------------------------------------------- the alignment record
def test_alignment_record_is_complete_and_its_hash_reproducible(tree, tmp_path):
    import json

    src, csv, _ = tree
    (src / "Train" / "Happy" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")   # Mac leftovers: not inputs
    (src / "Train" / ".DS_Store").write_bytes(b"Bud1")
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "x.jpg").write_bytes(b"junk")
    first = align_folder(src, tmp_path / "one", detector=f"landmarks:{csv}", progress=False, size=112)
    assert len(first) == 9 and not any("._" in s or "MACOSX" in s for s in first["source"])
    record = json.loads((tmp_path / "one" / align.ALIGN_RECORD).read_text())
    assert record["detector"]["detector"] == "recorded landmarks" and len(record["detector"]["file_sha256"]) == 64
    assert record["parameters"] == dict(size=[112, 112], multi_face="largest", min_image_size=32, batch_size=16,
                                        redo=False, limit=None)
    np.testing.assert_allclose(record["template"], align.reference_template(112), atol=1e-4)
    assert record["counts"] == {"aligned": 5, "no_face": 1, "too_small": 1, "unreadable": 2}
    assert record["aligned_faces"] == 5 and set(record["software"]) == {"scikit-image", "Pillow", "numpy"}
    again = align_folder(src, tmp_path / "one", detector=f"landmarks:{csv}", progress=False, size=112)   # skips
    assert json.loads((tmp_path / "one" / align.ALIGN_RECORD).read_text())["aligned_sha256"] == record["aligned_sha256"]
    align_folder(src, tmp_path / "two", detector=f"landmarks:{csv}", progress=False, size=112, redo=True)
    second = json.loads((tmp_path / "two" / align.ALIGN_RECORD).read_text())
    assert second["aligned_sha256"] == record["aligned_sha256"]        # aligned afresh: the same faces
    assert len(again) == 9
    image = np.asarray(Image.open(src / "Train" / "Sad" / "c.jpg")).copy()
    image[:5] = 0
    Image.fromarray(image).save(src / "Train" / "Sad" / "c.jpg")
    align_folder(src, tmp_path / "three", detector=f"landmarks:{csv}", progress=False, size=112)
    third = json.loads((tmp_path / "three" / align.ALIGN_RECORD).read_text())
    assert third["aligned_sha256"] != record["aligned_sha256"]          # one input changed: another set


@pytest.mark.align
@needs_mtcnn
def test_mtcnn_alignment_record_names_the_versions_and_repeats_its_hash(tmp_path):
    import json

    from skimage import data

    src = tmp_path / "src" / "Happy"
    src.mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(src / "astronaut.png")
    hashes = []
    for dst in ("a", "b"):                                    # two separate MTCNN processes
        align_folder(tmp_path / "src", tmp_path / dst, detector="mtcnn", progress=False)
        record = json.loads((tmp_path / dst / align.ALIGN_RECORD).read_text())
        hashes.append(record["aligned_sha256"])
    assert set(record["detector"]["versions"]) == {"tensorflow", "mtcnn"} and record["detector"]["versions"]["mtcnn"][0].isdigit()
    assert record["detector"]["options"]["thresholds"] == [0.6, 0.7, 0.8] and record["aligned_faces"] == 1
    assert hashes[0] == hashes[1]


def test_sfew_like_frames_deal_every_emotion_to_both_splits_with_reference_landmarks(tmp_path):
    class EveryOther:
        """Finds a face with fixed landmarks on every other photo."""
        name = "stub"

        def detect(self, images, names=None):
            points = align.reference_template(100) + 30
            return [[Face((30, 30, 130, 130), 0.99, points)] if i % 2 == 0 else [] for i in range(len(images))]

    frames = align.sfew_like_frames(tmp_path / "frames", EveryOther(), n_faces=28, n_non_faces=3)
    faces = frames[frames.reference]
    assert len(frames) == 31 and len(faces) == 14 + 2            # faces 0, 2, ..., 26 and non-faces 0, 2
    assert set(frames[frames.split == "Val"].emotion) == set(align.walkthrough.SFEW_EMOTIONS)
    assert set(frames[frames.split == "Train"].emotion) == set(align.walkthrough.SFEW_EMOTIONS)
    assert (frames[~frames.reference | (frames.kind == "non-face")].split == "Train").all()
    assert all((tmp_path / "frames" / n).is_file() for n in frames.name)
    assert Image.open(tmp_path / "frames" / frames.name[0]).size == (160, 160)
    recorded = pd.read_csv(tmp_path / "frames" / "EmoLabel" / "landmarks.csv")
    assert list(recorded.name) == list(frames.name[frames.reference])
    # a reference point is the upright landmark carried through a similarity: eye distance scaled by 0.85-1.15
    eyes = recorded[["left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y"]].to_numpy()
    ratio = np.hypot(eyes[:, 2] - eyes[:, 0], eyes[:, 3] - eyes[:, 1]) / np.ptp(align.reference_template(100)[:2, 0])
    assert ((ratio > 0.84) & (ratio < 1.16)).all()
