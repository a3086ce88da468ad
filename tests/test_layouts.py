"""Real data as researchers hold it: every accepted layout in its exact shape (file names, folder names,
CSV headers), and the bad-input cases with the message each one gives."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from adadf_core.data.classes import RAF_CLASSES
from adadf_core.data.labelfiles import DatasetError
from conftest import SFEW, make_raf, save_image
from test_datasets import load          # small images, recipe none, no progress bar

AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")
LANDMARKS = '"' + ";".join(["10.5"] * 136) + '"'        # 68 points, as the release writes them


def hidden_files(folder):
    """What a Mac leaves in a folder: .DS_Store, AppleDouble ._ files (not images) and a zip's __MACOSX/."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "._face.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "__MACOSX").mkdir(exist_ok=True)
    (folder / "__MACOSX" / "._face.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")


# --------------------------------------------------------------------------- AffectNet 2017 release
def make_affectnet2017(root, train=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1), val=(0, 1, 2, 3, 4, 5, 6, 7)):
    """Manually_Annotated_file_lists/{training,validation}.csv + Manually_Annotated/Manually_Annotated_Images/
    <subdir>/<hash>.jpg, 60x50 photographs; face box x=10, y=5, 30x40."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    for csv_name, labels in (("training.csv", train), ("validation.csv", val)):
        rows = [AFFECTNET_HEADER]
        for i, lab in enumerate(labels):
            rel = f"{689 + i % 3}/{csv_name[0]}{i:02d}737db2483489148d783ef278f43f486c0a97e140fc4b6b61b.jpg"
            save_image(root / "Manually_Annotated" / "Manually_Annotated_Images" / rel, (60, 50), seed=i, mode="RGB")
            rows.append(f"{rel},10,5,30,40,{LANDMARKS},{lab},0.5,-0.25")
        (lists / csv_name).write_text("\n".join(rows) + "\n")
    return root


def test_affectnet_2017_release_drops_non_emotions_and_crops_the_face_box(tmp_path):
    root = make_affectnet2017(tmp_path / "AffectNet")
    a8 = load("affectnet8", root)
    assert a8.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 1]             # 8 None, 9 Uncertain, 10 Non-Face dropped
    assert a8.class_names[-1] == "Contempt" and a8.info["dropped"] == {"None": 1, "Uncertain": 1, "Non-Face": 1}
    a7 = load("affectnet7", root)
    assert 7 not in a7.labels.tolist() and a7.num_classes == 7 and a7.info["dropped_contempt"] == 1
    face = np.asarray(a8.decode(0))
    assert face.shape == (40, 30, 3)                                      # the face box, not the photo
    photo = np.asarray(Image.open(a8.paths[0]).convert("RGB"))
    assert np.array_equal(face, photo[5:45, 10:40])
    cached = load("affectnet8", root, cache="memory", image_size=64)      # stored at the box size
    assert cached.store[0].shape == (40, 30, 3) and np.array_equal(cached.store[0], face)
    test = load("affectnet8", root, "test")                               # validation.csv is the test split
    assert len(test) == 8 and all("Manually_Annotated_Images" in n for n in test.names)
    from adadf_core.data.dataset import make_train_sampler
    assert make_train_sampler(a7, "affectnet7", 0) is not None            # the balanced sampler stays


def test_affectnet_2017_bad_rows_name_the_line(tmp_path):
    root = make_affectnet2017(tmp_path / "an")
    csv_file = root / "Manually_Annotated_file_lists" / "training.csv"
    lines = csv_file.read_text().splitlines()
    csv_file.write_text("\n".join(lines[:3] + [lines[3].replace(",2,0.5", ",11,0.5")] + lines[4:]) + "\n")
    with pytest.raises(DatasetError, match=r"training.csv:4: label 11 is out of range; expected an integer in 0..10"):
        load("affectnet8", root)
    csv_file.write_text("\n".join(["subDirectory_filePath,expression"] + lines[1:]) + "\n")
    with pytest.raises(DatasetError, match=r"training.csv:1: header .* is not AffectNet's subDirectory_filePath,face_x"):
        load("affectnet8", root)
    csv_file.write_text("\n".join(lines + [lines[2]]) + "\n")
    with pytest.raises(DatasetError, match=r"listed twice \(lines 3 and 14\)"):
        load("affectnet8", root)


# ----------------------------------------------------------------------------- SFEW 2.0 as shipped
def make_sfew_distributed(root):
    """Train/Train_Aligned_Faces/<Emotion>/*.png, Val/Val_Aligned_Faces/<Emotion>/*.png and the frames
    Val/Val/<emotion>/*.png (lower-case folders), with Mac leftovers."""
    for c, emo in enumerate(SFEW):
        for i in range(2):
            save_image(root / "Train" / "Train_Aligned_Faces" / emo / f"Airplane_{c:03d}{i:05d}_00000005.png",
                       (30, 30), seed=c * 10 + i)
        save_image(root / "Val" / "Val_Aligned_Faces" / emo / f"Aviator_{c:03d}_00000030.png", (30, 30), seed=c)
        save_image(root / "Val" / "Val" / emo.lower() / f"Aviator_{c:03d}_00000030.png", (72, 57), seed=c)
        hidden_files(root / "Train" / "Train_Aligned_Faces" / emo)
    hidden_files(root / "Train" / "Train_Aligned_Faces")
    return root


def test_sfew_as_distributed_reads_the_aligned_faces(tmp_path):
    root = make_sfew_distributed(tmp_path / "SFEW_2")
    train = load("sfew", root)
    assert len(train) == 14 and train.info["split_dir"] == "Train/Train_Aligned_Faces"
    assert train.names[0] == "Train/Train_Aligned_Faces/Angry/Airplane_00000000_00000005.png"
    test = load("sfew", root, "test")
    assert len(test) == 7 and test.info["split_dir"] == "Val/Val_Aligned_Faces"


def test_sfew_frames_in_lower_case_folders(tmp_path):
    root = make_sfew_distributed(tmp_path / "SFEW_2")
    import shutil
    shutil.rmtree(root / "Val" / "Val_Aligned_Faces")
    test = load("sfew", root, "test")
    assert test.info["split_dir"] == "Val/Val" and test.class_names == SFEW
    assert test.labels.tolist() == list(range(7)) and test.names[6].startswith("Val/Val/surprise/")
    (root / "Val" / "Val" / "Angry").mkdir()
    save_image(root / "Val" / "Val" / "Angry" / "x.png")
    with pytest.raises(DatasetError, match=r"folders 'Angry' and 'angry' are both class Angry"):
        load("sfew", root, "test")


# ------------------------------------------------------------------------------------ RAF-DB variants
def test_raf_archive_top_folder_and_images_without_suffix(tmp_path):
    make_raf(tmp_path / "RAF-DB" / "basic")
    hidden_files(tmp_path / "RAF-DB" / "basic" / "Image" / "aligned")
    ds = load("raf", tmp_path / "RAF-DB")                              # the archive's top folder
    assert len(ds) == 10 and ds.root == tmp_path / "RAF-DB" / "basic"    # names stay relative to the root
    assert (ds.root / ds.names[0]).is_file()
    aligned = tmp_path / "RAF-DB" / "basic" / "Image" / "aligned"
    for p in aligned.glob("*_aligned.jpg"):
        p.rename(p.with_name(p.name.replace("_aligned", "")))
    plain = load("raf", tmp_path / "RAF-DB" / "basic")
    assert plain.names[0] == "Image/aligned/train_00001.jpg" and plain.labels.tolist() == ds.labels.tolist()


def test_raf_train_and_test_txt_pair(tmp_path):
    root = make_raf(tmp_path / "raf")
    full = (root / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()
    (root / "EmoLabel" / "list_patition_label.txt").unlink()
    (root / "EmoLabel" / "train.txt").write_text("\n".join(l for l in full if l.startswith("train_")) + "\n")
    (root / "EmoLabel" / "test.txt").write_text("\n".join(l for l in full if l.startswith("test_")) + "\n")
    train, test = load("raf", root), load("raf", root, "test")
    assert len(train) == 10 and len(test) == 7 and train.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 3, 6]
    assert train.info["label_file"].endswith("EmoLabel/train.txt")


def make_raf_dataset_folders(root, train=(1, 2, 3, 4, 5, 6, 7, 4), test=(1, 2, 3, 4, 5, 6, 7)):
    """The re-packaged copy: DATASET/{train,test}/<1..7>/<split>_NNNNN_aligned.jpg + train_labels.csv
    and test_labels.csv (header image,label) beside DATASET/."""
    for split, labels in (("train", train), ("test", test)):
        rows = ["image,label"]
        for i, lab in enumerate(labels, 1):
            name = f"{split}_{i:05d}_aligned.jpg" if split == "train" else f"{split}_{i:04d}_aligned.jpg"
            save_image(root / "DATASET" / split / str(lab) / name, (24, 24), seed=i)
            rows.append(f"{name},{lab}")
        (root / f"{split}_labels.csv").write_text("\n".join(rows) + "\n")
    hidden_files(root / "DATASET" / "train" / "1")
    return root


def test_raf_dataset_folders_with_label_csvs(tmp_path):
    root = make_raf_dataset_folders(tmp_path / "raf-db-dataset")
    ds = load("raf", root)
    assert ds.class_names == RAF_CLASSES and len(ds) == 8
    assert sorted(ds.labels.tolist()) == [0, 1, 2, 3, 3, 4, 5, 6]
    assert ds.names[0] == "train/1/train_00001_aligned.jpg"
    assert len(load("raf", root / "DATASET", "test")) == 7                # DATASET itself as the root
    csv_file = root / "train_labels.csv"
    csv_file.write_text(csv_file.read_text().replace("train_00002_aligned.jpg,2", "train_00002_aligned.jpg,5"))
    with pytest.raises(DatasetError, match=r"train_labels.csv:3: train_00002_aligned.jpg has label 5 but lies in "
                                           r"folder train/2/train_00002_aligned.jpg; expected 2"):
        load("raf", root)


def test_imagefolder_numbered_folders_get_raf_names_when_asked(tmp_path):
    root = make_raf_dataset_folders(tmp_path / "r") / "DATASET"
    plain = load("imagefolder", root)
    assert plain.class_names == ["1", "2", "3", "4", "5", "6", "7"]
    named = load("imagefolder", root, class_names="raf")
    assert named.class_names == RAF_CLASSES and named.labels.tolist() == plain.labels.tolist()
    with pytest.raises(DatasetError, match="class_names='fer' is not known; expected one of raf"):
        load("imagefolder", root, class_names="fer")


# ------------------------------------------------------------------------------------- noisy labels
def test_scn_format_noise_file_absolute_and_relative_paths(raf_root, tmp_path):
    f = tmp_path / "noise.txt"
    f.write_text(f"{raf_root}/Image/aligned/train_00001_aligned.jpg 6\nImage/aligned/train_00004_aligned.jpg 0\n")
    ds = load("raf", raf_root, noise_file=f"scn:{f}")
    assert ds.labels[0] == 6 and ds.labels[3] == 0 and int(ds.flipped.sum()) == 2
    same = load("raf", raf_root, noise_file=f, noise_format="scn")
    assert same.labels.tolist() == ds.labels.tolist()
    f.write_text("/data/My Datasets/RAF-DB/Image/aligned/train_00001_aligned.jpg\t6\n")   # a space in the path
    assert load("raf", raf_root, noise_file=f"scn:{f}").labels[0] == 6


def test_zero_based_file_read_as_raf_asks_0_based(raf_root, tmp_path):
    f = tmp_path / "noise.txt"
    f.write_text("train_00001.jpg 0\n")
    with pytest.raises(DatasetError, match=r"noise.txt:1: label 0 is out of range; expected an integer in 1..7 "
                                           r"\(0-based\? give the file as scn:PATH\)"):
        load("raf", raf_root, noise_file=f)
    f.write_text("train_00001.jpg 7\n")
    with pytest.raises(DatasetError, match=r"label 7 is out of range; expected an integer in 0..6 \(1-based\?"):
        load("raf", raf_root, noise_file=f"scn:{f}")


def test_shifted_labels_without_a_zero_are_caught(tmp_path):
    labels = [1 + i % 7 for i in range(28)]
    root = make_raf(tmp_path / "raf", train_labels=labels)
    f = tmp_path / "noise.txt"       # the clean labels written 0-based, with no 0 in the file: 2..7 minus one
    f.write_text("".join(f"train_{i:05d}.jpg {lab - 1}\n" for i, lab in enumerate(labels, 1) if lab > 1))
    with pytest.raises(DatasetError, match=r"noise.txt: 100% of its labels are the clean label shifted by one .*0-based\?"):
        load("raf", root, noise_file=f)


def test_noise_file_with_max_train_samples(tmp_path):
    labels = [1 + i % 7 for i in range(28)]
    root = make_raf(tmp_path / "raf", train_labels=labels)
    f = tmp_path / "noise.txt"
    f.write_text("".join(f"train_{i:05d}.jpg {1 + i % 7}\n" for i in range(1, 29)))   # every image, shifted class
    ds = load("raf", root, noise_file=f, max_samples=14)
    assert len(ds) == 14 and ds.noise["kind"] == "file"
    full = load("raf", root, noise_file=f)
    keep = [full.ids.index(i) for i in ds.ids]
    assert ds.labels.tolist() == full.labels[keep].tolist()


def test_duplicates_name_both_lines(raf_root, tmp_path):
    f = tmp_path / "noise.txt"
    f.write_text("train_00001.jpg 2\ntrain_00002.jpg 3\ntrain_00001_aligned.jpg 5\n")
    with pytest.raises(DatasetError, match=r"'train_00001_aligned.jpg' is listed with labels 2 and 5 \(lines 1 and 3\)"):
        load("raf", raf_root, noise_file=f)
    f.write_text("train_00001.jpg 2\ntrain_00001.jpg 2\n")                # the same label twice: harmless
    assert load("raf", raf_root, noise_file=f).labels[0] == 1
    label_file = raf_root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00003.jpg 3\n")
    with pytest.raises(DatasetError, match=r"list_patition_label.txt: 'train_00003.jpg' is listed twice "
                                           r"\(lines 3 and 18\)"):
        load("raf", raf_root)


def test_raf_class_without_training_images(tmp_path):
    root = make_raf(tmp_path / "raf", train_labels=(1, 3, 4, 5, 6, 7))
    with pytest.raises(DatasetError, match=r"list_patition_label.txt: class\(es\) \['Fear'\] have no training images"):
        load("raf", root)


# ---------------------------------------------------------------------------------------- encodings
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_label_file_in_utf16_or_with_a_bom_is_read(raf_root, encoding):
    label_file = raf_root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_bytes(label_file.read_text().encode(encoding))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert load("raf", raf_root).labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 3, 6]


def test_latin1_letters_are_read_with_a_warning_and_ambiguous_bytes_refused(raf_root, tmp_path):
    f = tmp_path / "noise.txt"
    f.write_bytes("# relabelled by Andr\xe9\ntrain_00001.jpg 7\n".encode("latin-1"))
    with pytest.warns(UserWarning, match=r"noise.txt is not UTF-8; read it as Latin-1"):
        assert load("raf", raf_root, noise_file=f).labels[0] == 6
    f.write_bytes("# \u20ac relabelled\ntrain_00001.jpg 7\n".encode("cp1252"))   # 0x80: the euro sign in cp1252
    with pytest.raises(DatasetError, match=r"label file .*noise.txt: not UTF-8 text \(byte 0x80 on line 1\), and "
                                           r"Latin-1, Latin-9 and Windows-1252 read that byte differently"):
        load("raf", raf_root, noise_file=f)


# ------------------------------------------------------------------------------ pixels and caches
def test_sixteen_bit_png_in_a_data_set_is_mid_grey_not_white(tmp_path):
    from conftest import make_sfew
    root = make_sfew(tmp_path / "sfew")
    Image.fromarray(np.full((32, 40), 32768, np.uint16)).save(root / "Train" / "Angry" / "angry_0.png")
    (root / "Train" / "Angry" / "angry_0.jpg").unlink(missing_ok=True)
    ds = load("sfew", root, cache="memory", image_size=64)
    i = ds.names.index("Train/Angry/angry_0.png")
    assert np.unique(np.asarray(ds.raw_image(i))).tolist() == [128]


def test_one_cache_file_per_stored_size(raf_root, tmp_path):
    cache = tmp_path / "cache"
    for size in (32, 40, 64):                     # 24 px images: stored as decoded at every one of these
        load("raf", raf_root, "test", cache="mmap", image_size=size, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 1
    load("raf", raf_root, "test", cache="mmap", image_size=16, cache_dir=cache)    # stored resized: its own file
    assert len(list(cache.glob("*.npy"))) == 2


def test_memory_cache_over_the_limit_is_memory_mapped_and_says_so(raf_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADADF_MEMORY_CACHE_GB", str(1000 / 2**30))           # 1,000 bytes
    ds = load("raf", raf_root, "test", cache="memory", image_size=64, cache_dir=tmp_path / "c", progress=True)
    out = capsys.readouterr().out
    assert ds.store.mmap_path is not None and ds.store.mmap_path.parent == tmp_path / "c"
    assert "decoded-image cache of 7 images, 0.0 MiB, memory-mapped from" in out
    assert "over the 0.0 GiB memory-cache limit" in out


def sixty_eight_points(five):
    """68 iBUG points whose eye centres, nose tip and mouth corners are the given five (x, y)."""
    pts = np.zeros((68, 2))
    pts[:] = five[2]
    pts[36:42] = five[0] + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]])
    pts[42:48] = five[1] + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]])
    pts[48], pts[54] = five[3], five[4]
    return ";".join(f"{v:.2f}" for v in pts.reshape(-1))


def test_affectnet_2017_aligned_with_its_own_landmarks(tmp_path):
    """adadf align --detector affectnet:<file lists> on Manually_Annotated_Images, then the aligned copy loads
    uncropped; the row whose landmarks are degenerate is listed by align and dropped by the loader."""
    from adadf_core.data import align
    root = make_affectnet2017(tmp_path / "AffectNet", train=(0, 1, 2, 3, 4, 5, 6, 7, 1), val=(0, 1))
    five = align.reference_template(40) + np.array([10, 5])          # inside the 60x50 photo
    for csv_name in ("training.csv", "validation.csv"):
        f = root / "Manually_Annotated_file_lists" / csv_name
        lines = f.read_text().splitlines()
        lines = [lines[0]] + [l.replace(LANDMARKS, '"' + sixty_eight_points(five) + '"') for l in lines[1:]]
        if csv_name == "training.csv":
            lines[2] = lines[2].replace('"' + sixty_eight_points(five) + '"', LANDMARKS)   # all points equal
        f.write_text("\n".join(lines) + "\n")
    aligned = tmp_path / "AffectNet_aligned"
    shutil.copytree(root / "Manually_Annotated_file_lists", aligned / "Manually_Annotated_file_lists")
    manifest = align.align_folder(root / "Manually_Annotated" / "Manually_Annotated_Images",
                                  aligned / "Manually_Annotated_Images", size=64, progress=False,
                                  detector=f"affectnet:{root / 'Manually_Annotated_file_lists'}")
    assert (manifest.status == "aligned").sum() == 10 and (manifest.status == "error").sum() == 1
    row = manifest.set_index("source").loc[manifest.source[manifest.status == "aligned"].iloc[0]]
    np.testing.assert_allclose([row.left_eye_x, row.mouth_right_y], [five[0, 0], five[4, 1]], atol=0.01)
    ds = load("affectnet8", aligned)
    assert len(ds) == 8 and ds.boxes is None and ds.info["dropped"] == {"not aligned": 1}
    assert np.asarray(ds.decode(0)).shape == (64, 64, 3)             # the aligned face, not a face-box crop
    assert len(load("affectnet8", aligned, "test")) == 2


def test_sfew_frames_dir_finds_the_frames_to_align(tmp_path):
    from adadf_core.data.layouts import sfew_frames_dir
    root = make_sfew_distributed(tmp_path / "SFEW_2")
    assert sfew_frames_dir(root, "test") == root / "Val" / "Val"          # not Val_Aligned_Faces
    assert sfew_frames_dir(root, "train") == root / "Train"               # no Train/Train here: the split folder


def test_cache_none_finds_a_file_cut_short_at_load(raf_root):
    img = raf_root / "Image" / "aligned" / "train_00003_aligned.jpg"
    data = img.read_bytes()
    img.write_bytes(data + b"\x00" * 2048 + b"trailer a camera appended")   # data after the end: still fine
    assert len(load("raf", raf_root, cache="none")) == 10
    img.write_bytes(data[: len(data) * 2 // 3])                 # the header survives, the end does not
    with pytest.raises(DatasetError, match=r"cannot decode image .*train_00003_aligned.jpg: OSError: image file is truncated"):
        load("raf", raf_root, cache="none")
