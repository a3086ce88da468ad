"""Data layer: layouts, label orders, noise, samplers, cache, and clear errors on bad input."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from adadf_core.data import dataset, subsets
from adadf_core.data.labelfiles import DatasetError, DatasetNotFoundError
from adadf_core.data.dataset import load_split
from conftest import make_affectnet, make_imagefolder, make_raf, save_image


def load(name, root, split="train", **kw):
    kw.setdefault("image_size", 16)
    kw.setdefault("recipe", "none")
    kw.setdefault("progress", False)
    return load_split(name, root, split, **kw)


# ------------------------------------------------------------------ layouts and label orders

def test_raf_counts_labels_and_items(raf_root):
    ds = load("raf", raf_root, "train")
    assert len(ds) == 10 and ds.num_classes == 7
    assert ds.class_names == ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"]
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 3, 6]          # file value - 1
    assert ds.ids[0] == "train_00001.jpg" and ds.names[0] == "Image/aligned/train_00001_aligned.jpg"
    img, label, idx = ds[8]
    assert img.shape == (3, 16, 16) and img.dtype == torch.float32 and label == 3 and idx == 8
    assert ds.gt_distribution is None and not ds.flipped.any()
    test = load("raf", raf_root, "test")
    assert len(test) == 7 and test.ids[-1] == "test_0007.jpg"


def test_affectnet8_and_7_test_split_is_val_set(affectnet_root):
    a8 = load("affectnet8", affectnet_root, "train")
    assert a8.class_names[-1] == "Contempt" and a8.num_classes == 8
    assert a8.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 7, 1, 1, 0]
    a7 = load("affectnet7", affectnet_root, "train")
    assert a7.num_classes == 7 and "Contempt" not in a7.class_names
    assert len(a7) == 10 and 7 not in a7.labels.tolist() and a7.info["dropped_contempt"] == 2
    t8, t7 = load("affectnet8", affectnet_root, "test"), load("affectnet7", affectnet_root, "test")
    assert len(t8) == 8 and len(t7) == 7                      # val_set, never empty
    assert all(n.startswith("val_set/images/") for n in t7.names)


def test_affectnet_integer_annotations(tmp_path):
    root = make_affectnet(tmp_path / "an", str_labels=False)
    assert load("affectnet8", root).labels.tolist()[:3] == [0, 1, 2]


def test_sfew_order_tencrop_and_rgb(sfew_root):
    ds = load_split("sfew", sfew_root, "train", image_size=16, recipe="official", cache="none", progress=False)
    assert ds.class_names == ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
    assert len(ds) == 14 and ds.labels.tolist() == [c for c in range(7) for _ in range(2)]
    img, label, idx = ds[1]                                    # a grey-scale PNG
    assert img.shape == (10, 3, 16, 16) and label == 0 and idx == 1
    test = load("sfew", sfew_root, "test")
    assert len(test) == 7 and test[2][0].shape == (10, 3, 16, 16)
    # grey-scale and RGBA sources decode to three channels
    assert all(np.asarray(ds.raw_image(i)).shape[2] == 3 for i in range(len(ds)))


@pytest.mark.parametrize("splits", [("train", "test"), ("Train", "Val")])
def test_imagefolder(tmp_path, splits):
    root = make_imagefolder(tmp_path / "f", splits=splits)
    tr, te = load("imagefolder", root, "train"), load("imagefolder", root, "test")
    assert tr.class_names == ["cat", "dog", "owl"] and len(tr) == 9 and len(te) == 6
    assert te.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_synthfer_loader(tiny_synthfer):
    ds = load("synthfer", tiny_synthfer, "train")
    assert len(ds) == 70 and ds.class_names[0] == "Surprise"
    gt = ds.gt_distribution
    assert gt.shape == (70, 7) and torch.allclose(gt.sum(1), torch.ones(70), atol=1e-4)
    # the majority-vote label has the largest vote share
    assert torch.all(gt[torch.arange(70), ds.labels] >= gt.max(1).values - 1e-6)
    assert len(load("synthfer", tiny_synthfer, "test")) == 35


# ------------------------------------------------------------------ subsets

def test_max_samples_first_n_stratified(raf_root):
    ds = load("raf", raf_root, max_samples=7)
    assert len(ds) == 7
    again = load("raf", raf_root, max_samples=7)
    assert ds.ids == again.ids
    labels = np.array([0] * 6 + [1] * 3 + [2])
    # exact shares 3, 1.5, 0.5 -> floors 3, 1, 0; the one left goes to the first largest remainder (class 1)
    assert subsets.stratified_first(labels, 5).tolist() == [0, 1, 2, 6, 7]
    assert subsets.stratified_first(labels, 10).tolist() == list(range(10))


def test_stratified_counts_hand_computed():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    keep = subsets.stratified_first(labels, 10)
    assert np.bincount(labels[keep]).tolist() == [5, 3, 2]
    assert keep[:5].tolist() == [0, 1, 2, 3, 4] and keep[5:8].tolist() == [50, 51, 52]


# ------------------------------------------------------------------ label noise

def test_symmetric_noise_exact_count_and_seeded(tmp_path):
    labels = np.arange(35) % 7
    root = make_raf(tmp_path / "r", train_labels=tuple(int(v) + 1 for v in labels))
    ds = load("raf", root, noise_rate=0.2, noise_seed=3)
    assert int(ds.flipped.sum()) == round(0.2 * 35) == 7
    assert torch.all(ds.labels[ds.flipped] != ds.clean_labels[ds.flipped])
    assert torch.equal(ds.labels[~ds.flipped], ds.clean_labels[~ds.flipped])
    assert ds.clean_labels.tolist() == labels.tolist() and ds.noise["kind"] == "symmetric"
    again = load("raf", root, noise_rate=0.2, noise_seed=3)
    other = load("raf", root, noise_rate=0.2, noise_seed=4)
    assert torch.equal(ds.labels, again.labels) and not torch.equal(ds.labels, other.labels)
    test = load("raf", root, "test", noise_rate=0.2, noise_seed=3)
    assert not test.flipped.any()                               # test labels never change


def test_symmetric_noise_targets_are_uniform_other_classes():
    labels = np.zeros(7000, dtype=np.int64)
    noisy = subsets.symmetric_noise(labels, 0.5, 7, seed=0)
    assert (noisy != 0).sum() == 3500
    counts = np.bincount(noisy[noisy != 0], minlength=7)[1:]
    assert counts.min() > 500 and counts.max() < 680              # ~583 each


def test_noise_file_overrides(raf_root, tmp_path):
    f = tmp_path / "noisy.txt"
    f.write_text("train_00001.jpg 7\n\ntrain_00004.jpg 1\n")
    ds = load("raf", raf_root, noise_file=f)
    assert ds.labels[0] == 6 and ds.labels[3] == 0 and ds.clean_labels[0] == 0
    assert ds.flipped.tolist() == [True, False, False, True] + [False] * 6


def test_noise_file_errors(raf_root, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("train_00001.jpg 2\ntrain_00002.jpg two\n")
    with pytest.raises(DatasetError, match=r"bad\.txt:2"):
        load("raf", raf_root, noise_file=bad)
    bad.write_text("train_00001.jpg 9\n")
    with pytest.raises(DatasetError, match=r"bad\.txt:1: label 9 is out of range"):
        load("raf", raf_root, noise_file=bad)
    bad.write_text("test_0001.jpg 2\n")
    with pytest.raises(DatasetError, match="not in this training split.*test_0001.jpg"):
        load("raf", raf_root, noise_file=bad)
    with pytest.raises(DatasetNotFoundError, match="missing.txt"):
        load("raf", raf_root, noise_file=tmp_path / "missing.txt")
    with pytest.raises(DatasetError, match="either"):
        load("raf", raf_root, noise_file=bad, noise_rate=0.1)


# ------------------------------------------------------------------ balanced undersampler

def test_balanced_sampler_per_epoch(affectnet_root):
    ds = load("affectnet7", affectnet_root)                   # counts: 0:2 1:3 2..6:1
    assert dataset.make_train_sampler(ds, "raf", 0) is None
    s = dataset.make_train_sampler(ds, "affectnet7", seed=5)
    assert len(s) == 7
    epochs = []
    for e in range(4):
        s.set_epoch(e)
        idx = list(s)
        assert len(idx) == 7 and len(set(idx)) == 7
        assert torch.bincount(ds.labels[idx], minlength=7).tolist() == [1] * 7
        epochs.append(idx)
    s.set_epoch(2)
    assert list(s) == epochs[2]
    assert len({tuple(sorted(e)) for e in epochs}) > 1           # redrawn across epochs


def test_balanced_sampler_min_count():
    labels = torch.tensor([0] * 10 + [1] * 4 + [2] * 6)
    s = dataset.BalancedUndersampler(labels, seed=0)
    assert len(s) == 12 and np.bincount(labels[list(s)].numpy()).tolist() == [4, 4, 4]


# ------------------------------------------------------------------ cache

@pytest.mark.parametrize("name,fixture,size", [("raf", "raf_root", 16), ("raf", "raf_root", 40),
                                               ("sfew", "sfew_root", 16)])
def test_cache_equals_direct_decode(name, fixture, size, request, tmp_path):
    root = request.getfixturevalue(fixture)
    direct = load(name, root, cache="none", image_size=size)
    mem = load(name, root, cache="memory", image_size=size)
    mm = load(name, root, cache="mmap", image_size=size, cache_dir=tmp_path / "c")
    for i in range(len(direct)):
        a = direct[i][0]
        assert torch.equal(a, mem[i][0]) and torch.equal(a, mm[i][0])
    files = list((tmp_path / "c").glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = load(name, root, cache="mmap", image_size=size, cache_dir=tmp_path / "c")
    assert files[0].stat().st_mtime_ns == mtime and torch.equal(again[0][0], direct[0][0])
    clone = pickle.loads(pickle.dumps(mm))                       # memmap re-opened, not copied
    assert len(pickle.dumps(mm)) < files[0].stat().st_size + 20000
    assert torch.equal(clone[1][0], direct[1][0])


def test_cache_stores_downscaled_images(raf_root):
    ds = load("raf", raf_root, cache="memory", image_size=16)
    assert ds.store[0].shape == (16, 16, 3) and ds.pre_done.all()          # 24 -> 16: stored resized
    big = load("raf", raf_root, cache="memory", image_size=40)
    assert big.store[0].shape == (24, 24, 3) and not big.pre_done.any()    # upscaling happens per access


# ------------------------------------------------------------------ bad input

def test_error_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="unknown data set 'rafdb'.*synthfer, raf"):
        load("rafdb", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        load("raf", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="needs a root"):
        load("raf", None)


def test_error_wrong_dataset_kind(affectnet_root, raf_root):
    with pytest.raises(DatasetNotFoundError, match="list_patition_label.txt.*AffectNet folder"):
        load("raf", affectnet_root)
    with pytest.raises(DatasetNotFoundError, match="train_set.*RAF-DB"):
        load("affectnet7", raf_root)
    with pytest.raises(DatasetNotFoundError, match="distribution.csv"):
        load("synthfer", raf_root)                                # a RAF tree without ground truth


def test_error_bad_label_lines(raf_root):
    label_file = raf_root / "EmoLabel" / "list_patition_label.txt"
    lines = label_file.read_text().splitlines()
    label_file.write_text("\n".join(lines[:2] + ["train_00003.jpg"] + lines[3:]) + "\n")
    with pytest.raises(DatasetError, match=r"list_patition_label.txt:3: cannot parse"):
        load("raf", raf_root)
    label_file.write_text("\n".join(lines[:4] + ["train_00005.jpg 8"] + lines[5:]) + "\n")
    with pytest.raises(DatasetError, match=r"list_patition_label.txt:5: label 8 is out of range; expected an integer in 1..7"):
        load("raf", raf_root)
    label_file.write_text("\n".join(lines[:4] + ["train_00005.jpg 0"] + lines[5:]) + "\n")
    with pytest.raises(DatasetError, match=r":5: label 0 is out of range"):
        load("raf", raf_root)


def test_error_missing_and_corrupt_image(raf_root):
    img = raf_root / "Image" / "aligned" / "train_00002_aligned.jpg"
    img.write_bytes(img.read_bytes()[:40])                         # truncated
    with pytest.raises(DatasetError, match="train_00002_aligned.jpg"):
        load("raf", raf_root, cache="memory")
    with pytest.raises(DatasetError, match="cannot decode image .*train_00002_aligned.jpg"):
        load("raf", raf_root, cache="none")                        # at load, not mid-epoch
    img.unlink()
    with pytest.raises(DatasetNotFoundError, match=r"train_00002_aligned.jpg listed in .*list_patition_label.txt:2"):
        load("raf", raf_root)


def test_error_empty_class_and_split(sfew_root, tmp_path):
    for p in (sfew_root / "Train" / "Fear").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"Train/Fear is missing or holds no images"):
        load("sfew", sfew_root)
    (sfew_root / "Train" / "Bored").mkdir()
    with pytest.raises(DatasetError, match="unexpected class folder.*Bored"):
        load("sfew", sfew_root)
    raf = make_raf(tmp_path / "r", test_labels=())
    with pytest.raises(DatasetError, match="test split of raf .* holds no images"):
        load("raf", raf, "test")


def test_error_affectnet_annotations(affectnet_root):
    ann = affectnet_root / "train_set" / "annotations"
    np.save(ann / "t001_exp.npy", np.array("9"))
    with pytest.raises(DatasetError, match=r"t001_exp.npy: label 9 is out of range; expected an integer in 0..7"):
        load("affectnet8", affectnet_root)
    np.save(ann / "t001_exp.npy", np.array("happy"))
    with pytest.raises(DatasetError, match=r"t001_exp.npy: cannot read an integer"):
        load("affectnet8", affectnet_root)
    (ann / "t001_exp.npy").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"annotation .*t001_exp.npy for image .*t001.jpg not found"):
        load("affectnet8", affectnet_root)


def test_error_imagefolder_without_splits(tmp_path):
    save_image(tmp_path / "f" / "cat" / "a.jpg")
    with pytest.raises(DatasetNotFoundError, match="split 'train' not found.*train, Train"):
        load("imagefolder", tmp_path / "f")


def test_a_split_is_decoded_once_per_process_until_its_files_change(tmp_path, capsys):
    """A study loads the same split for every run: the second load shares the first one's read-only store
    (no decoding); a file rewritten since is decoded again and its new pixels are what the data set gives."""
    import os
    root = make_raf(tmp_path / "raf")
    first = load_split("raf", root, "train", image_size=24, recipe="none", progress=True)
    again = load_split("raf", root, "train", image_size=24, recipe="none", progress=True)
    out = capsys.readouterr().out
    assert "(decoded earlier in this process)" in out.splitlines()[-1] and out.count("decoded earlier") == 1
    assert again.store is first.store and not first.store.buffer.flags.writeable
    before = np.asarray(first.raw_image(0)).copy()
    path = first.paths[0]
    save_image(path, (24, 24), seed=999)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # a later mtime, however coarse the clock
    changed = load_split("raf", root, "train", image_size=24, recipe="none", progress=False)
    assert changed.store is not first.store
    assert not np.array_equal(np.asarray(changed.raw_image(0)), before)
    assert np.array_equal(np.asarray(changed.raw_image(1)), np.asarray(first.raw_image(1)))
