"""Device-side augmentation (``cfg.augment_device="cuda"``): the training recipe on uint8 batches on the
GPU, with random parameters drawn per sample, so that RandAugment no longer runs in loader processes.

It follows the `official` recipe (docs/METHOD.md §6) in kind, **not pixel for pixel**: per sample n = 3
rounds, each picks one of ``OPS`` and applies it with probability 0.5 at magnitude m ~ N(5, 0.5) of 10
(timm's ``rand-m5-n3-mstd0.5`` levels: rotation up to 30°, shear 0.3, translation 0.45 of the side,
enhancement factors 1 ± 0.9·m/10, posterize to 8 − round(4·m/10) bits, solarize above 1 − m/10; geometric
ops fill with the authors' img_mean); then a horizontal flip (p 0.5), ImageNet normalisation and random
erasing (p 0.5, area 0.02–0.25 of the image, aspect 0.3–3.3, value 0; one attempt, clipped to the image,
where torchvision makes up to ten). Equalize is left out (identity); bilinear resampling instead of PIL's
nearest. Random numbers come from the device's global generator, which checkpoints save.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from adadf_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RANDAUG_HPARAMS

AUGMENT_DEVICES = ("cpu", "cuda")
COLOUR_OPS = ("identity", "auto_contrast", "invert", "posterize", "solarize", "colour", "contrast",
              "brightness", "sharpness")
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
OPS = COLOUR_OPS + GEOMETRIC_OPS


def _grey(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """PIL ImageEnhance: other + factor (x - other), clipped to [0, 1]."""
    return (other + factor.view(-1, 1, 1, 1) * (x - other)).clamp(0, 1)


def _colour(name: str, x: Tensor, level: Tensor) -> Tensor:
    """One colour op on x [b, 3, H, W] in [0, 1]; ``level`` [b] the signed magnitude m/10 in [-1, 1]."""
    if name == "identity":
        return x
    if name == "auto_contrast":
        lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    if name == "invert":
        return 1 - x
    if name == "posterize":
        bits = (8 - torch.round(4 * level.abs())).view(-1, 1, 1, 1)
        step = 2 ** (8 - bits)
        return torch.floor(x * 255 / step) * step / 255
    if name == "solarize":
        threshold = (1 - level.abs()).view(-1, 1, 1, 1)
        return torch.where(x >= threshold, 1 - x, x)
    factor = 1 + 0.9 * level
    if name == "colour":
        return _blend(x, _grey(x).expand_as(x), factor)
    if name == "contrast":
        return _blend(x, _grey(x).mean((1, 2, 3), keepdim=True).expand_as(x), factor)
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), factor)
    if name == "sharpness":
        kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
        smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3)
        return _blend(x, smooth, factor)
    raise ValueError(f"unknown colour op {name!r}; expected one of {', '.join(COLOUR_OPS)}")


def _affine(op: Tensor, level: Tensor, active: Tensor) -> Tensor:
    """Per-sample 2x3 matrices (normalised coordinates) of the geometric op chosen for each sample."""
    b = op.shape[0]
    theta = torch.eye(2, 3, device=op.device).repeat(b, 1, 1)
    angle = math.radians(30) * level

    def sel(name: str) -> Tensor:
        return active & (op == OPS.index(name))

    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                       torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
    theta = torch.where(sel("rotate").view(-1, 1, 1), rot, theta)
    theta[:, 0, 1] = torch.where(sel("shear_x"), 0.3 * level, theta[:, 0, 1])
    theta[:, 1, 0] = torch.where(sel("shear_y"), 0.3 * level, theta[:, 1, 0])
    theta[:, 0, 2] = torch.where(sel("translate_x"), 2 * 0.45 * level, theta[:, 0, 2])
    theta[:, 1, 2] = torch.where(sel("translate_y"), 2 * 0.45 * level, theta[:, 1, 2])
    return theta


def rand_augment(x: Tensor, n: int = 3, m: float = 5.0, mstd: float = 0.5, prob: float = 0.5) -> Tensor:
    """``n`` rounds of one random op per sample (x [B, 3, H, W] float in [0, 1])."""
    b, dev = x.shape[0], x.device
    fill = torch.tensor(RANDAUG_HPARAMS["img_mean"], dtype=x.dtype, device=dev).view(1, 3, 1, 1) / 255
    for _ in range(n):
        op = torch.randint(len(OPS), (b,), device=dev)
        active = torch.rand(b, device=dev) < prob
        sign = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
        level = ((m + mstd * torch.randn(b, device=dev)).clamp(0, 10) / 10 * sign).to(x.dtype)
        out = x.clone()
        for k, name in enumerate(COLOUR_OPS):
            rows = active & (op == k)
            if bool(rows.any()):
                out[rows] = _colour(name, x[rows], level[rows])
        geometric = active & (op >= len(COLOUR_OPS))
        if bool(geometric.any()):
            grid = F.affine_grid(_affine(op, level, active)[geometric], list(x[geometric].shape), align_corners=False)
            moved = F.grid_sample(x[geometric] - fill, grid, align_corners=False) + fill
            out[geometric] = moved
        x = out
    return x


def random_erasing(x: Tensor, p: float = 0.5, scale=(0.02, 0.25), ratio=(0.3, 3.3)) -> Tensor:
    """Per sample with probability ``p``: one rectangle of ``scale`` of the area and aspect in ``ratio`` set
    to 0 (one attempt; the rectangle is clipped to the image)."""
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(*scale) * h * w
    aspect = torch.exp(torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    eh = torch.sqrt(area * aspect).round().clamp(1, h).long()
    ew = torch.sqrt(area / aspect).round().clamp(1, w).long()
    top = (torch.rand(b, device=dev) * (h - eh + 1)).long()
    left = (torch.rand(b, device=dev) * (w - ew + 1)).long()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
           & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
    erase = (torch.rand(b, device=dev) < p).view(-1, 1, 1) & box
    return x.masked_fill(erase.unsqueeze(1), 0.0)


class DeviceAugment:
    """uint8 batches [B, 3, H, W] (already on the device) -> augmented, normalised float batches."""

    def __call__(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"device augmentation got a {images.dtype} batch of shape {tuple(images.shape)}; "
                             f"expected uint8 batches [B, 3, H, W]")
        x = rand_augment(images.float() / 255)
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return random_erasing((x - mean) / std)
