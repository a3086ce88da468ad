"""Train and test transforms (docs/METHOD.md §6). Every callable here is picklable (no lambdas).

Recipes:
  ``official`` resize -> timm RandAugment ``rand-m5-n3-mstd0.5`` (translate_const 117, img_mean
               (124, 116, 104)) -> horizontal flip 0.5 -> tensor -> ImageNet normalise ->
               RandomErasing(p 0.5, scale (0.02, 0.25), value 0); test: resize -> tensor -> normalise.
               SFEW: resize the shorter side to 256*image_size/224 -> TenCrop(image_size) -> per crop
               ``rand-m3-n5-mstd0.5``, flip, tensor, normalise, erasing -> [10, 3, H, W] (test: no
               augmentation, also [10, 3, H, W]).
  ``paper``    the same recipe (the paper's image size comes from the profile, not from here).
  ``light``    resize, flip, tensor, normalise (quick CPU runs).
  ``none``     resize, tensor, normalise.
  ``uint8``    resize, uint8 tensor (the loader's part with ``augment_device="cuda"``: the rest of the
               training recipe runs on the GPU, ``gpu_augment.DeviceAugment``; test: as ``none``).
  ``scn``      SCN's native recipe (docs/METHOD.md §12.4): with p 0.5 one of {horizontal flip, Gaussian
               pixel noise sigma sqrt(30)}, chosen 50/50 -> resize -> tensor -> normalise -> RandomErasing.
  ``slm``      SLM-AEA's native recipe (docs/METHOD.md §11.6): Gaussian pixel noise with p 0.5 -> resize
               to 256/224 of the size -> random crop -> flip -> tensor -> normalise; test: centre crop.
               Both native recipes normalise with ImageNet statistics (the statistics of the weights we
               load; SLM-AEA's script uses 0.5/0.5) and add the noise after the cached resize.

A built transform is a :class:`FERTransform` with a deterministic first stage ``pre`` (the resize) and
the rest ``post``; the decoded-image cache (data/cache.py) may store images after ``pre``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from torchvision import transforms as T

RECIPES = ("official", "paper", "light", "none", "scn", "slm")   # cfg.recipe
LOADER_RECIPES = RECIPES + ("uint8",)                            # uint8: set by the loader, not a cfg.recipe
PIXEL_NOISE_SIGMA = 30 ** 0.5   # grey levels (SCN and SLM-AEA)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDAUG_HPARAMS = dict(translate_const=117, img_mean=(124, 116, 104))
RANDAUG_TRAIN = "rand-m5-n3-mstd0.5"
RANDAUG_SFEW = "rand-m3-n5-mstd0.5"
ERASING = dict(p=0.5, scale=(0.02, 0.25), value=0)


def randaugment(config: str = RANDAUG_TRAIN) -> Callable:
    """timm's RandAugment with the authors' hparams (operates on PIL images)."""
    return rand_augment_transform(config, dict(RANDAUG_HPARAMS))


def _normalise() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


class ToPIL:
    """uint8 numpy HWC / PIL image -> RGB PIL image (no-op for RGB PIL)."""

    def __call__(self, img):
        if isinstance(img, Image.Image):
            return img if img.mode == "RGB" else img.convert("RGB")
        return Image.fromarray(img).convert("RGB")

    def __repr__(self) -> str:
        return "ToPIL()"


class GaussianPixelNoise:
    """Add N(0, sigma^2) noise (grey levels) to an RGB PIL image, clipped to [0, 255]."""

    def __init__(self, sigma: float = PIXEL_NOISE_SIGMA):
        self.sigma = float(sigma)

    def __call__(self, img: Image.Image) -> Image.Image:
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())
        arr += torch.randn(arr.shape) * self.sigma
        return Image.fromarray(arr.clamp_(0, 255).round_().to(torch.uint8).numpy())

    def __repr__(self) -> str:
        return f"GaussianPixelNoise(sigma={self.sigma:.3f})"


class TenCropStack:
    """TenCrop(size) then ``per_crop`` on every crop, stacked to a tensor [10, 3, size, size]."""

    def __init__(self, size: int, per_crop: Callable):
        self.size = size
        self.ten_crop = T.TenCrop(size)
        self.per_crop = per_crop

    def __call__(self, img) -> torch.Tensor:
        return torch.stack([self.per_crop(c) for c in self.ten_crop(img)])

    def __repr__(self) -> str:
        return f"TenCropStack(size={self.size}, per_crop={self.per_crop!r})"


class FERTransform:
    """``post(pre(img))``: ``pre`` is the deterministic resize, ``post`` the (random) rest."""

    def __init__(self, pre: Callable, post: Callable, recipe: str, split: str, dataset: str, image_size: int):
        self.pre, self.post = pre, post
        self.recipe, self.split, self.dataset, self.image_size = recipe, split, dataset, image_size
        self.to_pil = ToPIL()

    def __call__(self, img):
        return self.post(self.pre(self.to_pil(img)))

    def pre_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of an image of the given size after ``pre``."""
        size = self.pre.size
        if isinstance(size, int) or len(size) == 1:      # shorter side -> size
            s = size if isinstance(size, int) else size[0]
            if width <= height:
                return s, int(s * height / width)
            return int(s * width / height), s
        return size[1], size[0]

    def __repr__(self) -> str:
        return (f"FERTransform(dataset={self.dataset!r}, split={self.split!r}, recipe={self.recipe!r}, "
                f"image_size={self.image_size},\n  pre={self.pre!r},\n  post={self.post!r})")


def _recipe_steps(train: bool, recipe: str, randaug_config: str) -> T.Compose:
    """The steps after the resize (per crop on SFEW) for official / paper / light / none: RandAugment
    and flip, to tensor, normalise, RandomErasing (official and paper); flip only (light); none."""
    full = train and recipe in ("official", "paper")
    if train and recipe == "uint8":
        return T.Compose([T.PILToTensor()])
    steps: list = []
    if full:
        steps = [randaugment(randaug_config), T.RandomHorizontalFlip(0.5)]
    elif train and recipe == "light":
        steps = [T.RandomHorizontalFlip(0.5)]
    steps += _normalise()
    if full:
        steps.append(T.RandomErasing(**ERASING))
    return T.Compose(steps)


def build_transform(dataset: str, split: str, image_size: int, recipe: str = "official") -> FERTransform:
    """The transform for ``dataset`` ("sfew" uses TenCrop) and ``split`` ("train" | "test")."""
    if recipe not in LOADER_RECIPES:
        raise ValueError(f"unknown transform recipe {recipe!r}; expected one of {', '.join(LOADER_RECIPES)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    image_size = int(image_size)
    if image_size < 8:
        raise ValueError(f"image_size={image_size} is too small; expected at least 8 pixels")
    train = split == "train"
    if dataset == "sfew" and recipe in ("scn", "slm"):
        raise ValueError(f"recipe {recipe!r} is defined for single-crop data sets; SFEW uses TenCrop "
                         "(recipes official, paper, light, none)")
    if dataset == "sfew":
        pre = T.Resize(int(256 * image_size / 224), antialias=True)
        post = TenCropStack(image_size, _recipe_steps(train, recipe, RANDAUG_SFEW))
    elif recipe == "slm":
        big = int(256 * image_size / 224)
        pre = T.Resize((big, big), antialias=True)
        steps = ([T.RandomApply([GaussianPixelNoise()], p=0.5), T.RandomCrop(image_size),
                  T.RandomHorizontalFlip(0.5)] if train else [T.CenterCrop(image_size)])
        post = T.Compose(steps + _normalise())
    elif recipe == "scn":
        pre = T.Resize((image_size, image_size), antialias=True)
        steps = []
        if train:
            one_of = T.RandomChoice([T.RandomHorizontalFlip(1.0), GaussianPixelNoise()])
            steps = [T.RandomApply([one_of], p=0.5)]
        steps += _normalise()
        if train:
            steps.append(T.RandomErasing(**ERASING))
        post = T.Compose(steps)
    else:
        pre = T.Resize((image_size, image_size), antialias=True)
        post = _recipe_steps(train, recipe, RANDAUG_TRAIN)
    return FERTransform(pre, post, recipe, split, dataset, image_size)


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation (for showing images): [..., 3, H, W] -> values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)

