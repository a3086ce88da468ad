"""Transform recipes: output shapes, determinism of test transforms, picklability."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from adadf_core.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, RECIPES, FERTransform, build_transform,
                                        denormalise)


def face(w=30, h=24, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_and_pickle(recipe, split):
    t = build_transform("raf", split, 20, recipe)
    out = t(face())
    assert out.shape == (3, 20, 20) and out.dtype == torch.float32
    clone = pickle.loads(pickle.dumps(t))
    assert clone(face()).shape == (3, 20, 20)


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r not in ("scn", "slm")])   # single-crop recipes
@pytest.mark.parametrize("split", ["train", "test"])
def test_sfew_tencrop(recipe, split):
    t = build_transform("sfew", split, 16, recipe)
    assert t.pre.size == int(256 * 16 / 224) == 18
    out = t(face(40, 30))
    assert out.shape == (10, 3, 16, 16)
    assert pickle.loads(pickle.dumps(t))(face(40, 30)).shape == (10, 3, 16, 16)


def test_test_transform_is_resize_tensor_normalise():
    img = face()
    out = build_transform("raf", "test", 20, "official")(img)
    ref = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(img.resize((20, 20), Image.Resampling.BILINEAR)))
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(denormalise(out), T.ToTensor()(img.resize((20, 20), Image.Resampling.BILINEAR)), atol=1e-5)


def test_sfew_test_crops_are_the_ten_crops():
    img = face(40, 30)
    out = build_transform("sfew", "test", 16, "official")(img)
    resized = img.resize((24, 18), Image.Resampling.BILINEAR)       # shorter side 30 -> 18
    centre = T.CenterCrop(16)(resized)
    ref = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(centre))
    assert torch.allclose(out[4], ref, atol=1e-5)                    # TenCrop order: 4 corners, centre, flips
    assert torch.allclose(out[9], ref.flip(-1), atol=1e-5)


def test_official_train_is_random_and_has_the_spec_steps():
    t = build_transform("raf", "train", 24, "official")
    names = [type(s).__name__ for s in t.post.transforms]
    assert names == ["RandAugment", "RandomHorizontalFlip", "ToTensor", "Normalize", "RandomErasing"]
    ra = t.post.transforms[0]
    assert ra.num_layers == 3 and ra.ops[0].magnitude == 5 and ra.ops[0].magnitude_std == 0.5
    assert ra.ops[0].hparams["translate_const"] == 117 and ra.ops[0].hparams["img_mean"] == (124, 116, 104)
    er = t.post.transforms[-1]
    assert er.p == 0.5 and er.scale == (0.02, 0.25) and er.value == 0
    torch.manual_seed(0)
    outs = [t(face()) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    sfew = build_transform("sfew", "train", 16, "official").post.per_crop.transforms[0]
    assert sfew.num_layers == 5 and sfew.ops[0].magnitude == 3


def test_paper_recipe_equals_official():
    a, b = build_transform("raf", "train", 24, "official"), build_transform("raf", "train", 24, "paper")
    assert repr(a.post) == repr(b.post)


def test_pre_size_matches_resize():
    t = build_transform("sfew", "train", 100, "official")
    for w, h in [(40, 30), (30, 41), (257, 256), (720, 576)]:
        assert t.pre(Image.new("RGB", (w, h))).size == t.pre_size(w, h)
    assert build_transform("raf", "test", 32, "none").pre_size(100, 60) == (32, 32)


def test_bad_recipe_and_split():
    with pytest.raises(ValueError, match="unknown transform recipe 'fancy'"):
        build_transform("raf", "train", 32, "fancy")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        build_transform("raf", "val", 32, "none")


def test_accepts_uint8_arrays_and_grey():
    t = build_transform("raf", "test", 8, "none")
    assert isinstance(t, FERTransform)
    assert t(np.zeros((12, 12, 3), np.uint8)).shape == (3, 8, 8)
    assert t(Image.new("L", (12, 12))).shape == (3, 8, 8)


def test_native_recipes_of_the_comparison_methods():
    import pickle

    import numpy as np
    from PIL import Image

    from adadf_core.data.transforms import GaussianPixelNoise, build_transform

    img = Image.fromarray(np.full((100, 100, 3), 128, np.uint8))
    slm_train = build_transform("raf", "train", 64, "slm")
    assert slm_train.pre.size == (73, 73)                       # 256/224 of the size, then a 64 crop
    assert tuple(slm_train(img).shape) == (3, 64, 64)
    slm_test = build_transform("raf", "test", 64, "slm")
    assert tuple(slm_test(img).shape) == (3, 64, 64)
    scn_train = build_transform("raf", "train", 48, "scn")
    assert tuple(scn_train(img).shape) == (3, 48, 48)
    pickle.loads(pickle.dumps(scn_train)), pickle.loads(pickle.dumps(slm_train))
    # the pixel noise has the documented strength and stays in [0, 255]
    torch.manual_seed(0)
    noisy = np.asarray(GaussianPixelNoise()(img), dtype=np.float64)
    assert noisy.std() == pytest.approx(30 ** 0.5, rel=0.05) and noisy.min() >= 0 and noisy.max() <= 255
    with pytest.raises(ValueError, match="SFEW uses TenCrop"):
        build_transform("sfew", "train", 48, "scn")
