"""The data of one run: its splits and DataLoaders, built from a resolved ``TrainConfig``.

``load_splits`` gives ``train`` (the recipe transform, label noise), ``test`` and, for methods that track
samples, ``train_eval`` (the training split with the test transform). ``make_train_loader`` shuffles with
a generator seeded by ``cfg.seed`` (or uses AffectNet's balanced undersampler) and drops the last partial
batch, as the authors' code does; ``make_test_loader`` never shuffles.
"""
from __future__ import annotations

from typing import Optional

import torch

from .config import TrainConfig


def resolve_data_root(cfg: TrainConfig) -> Optional[str]:
    """``cfg.data_root``, or the default generated SynthFER copy for ``dataset=synthfer``."""
    if cfg.data_root is None and cfg.dataset == "synthfer":
        from . import synthfer
        return str(synthfer.ensure())
    if cfg.data_root is None:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_root (CLI: --data-root PATH)")
    return cfg.data_root


def load_splits(cfg: TrainConfig, with_train: bool = True, with_train_eval: bool = False) -> dict:
    """The data sets of a run: ``train`` (recipe transform, noise), ``test`` and optionally
    ``train_eval`` (the training split with the test transform, for tracked samples)."""
    from .datasets import load_split
    root = resolve_data_root(cfg)
    common = dict(image_size=cfg.image_size, recipe=cfg.recipe, cache=cfg.cache, progress=cfg.progress)
    out = {"test": load_split(cfg.dataset, root, "test", max_samples=cfg.max_test_samples, **common)}
    if with_train:
        noise = dict(noise_rate=cfg.noise_rate, noise_seed=cfg.noise_seed, noise_file=cfg.noise_file)
        out["train"] = load_split(cfg.dataset, root, "train", max_samples=cfg.max_train_samples,
                                  **noise, **common)
        if with_train_eval:
            # recipe "none" on the training split = the test transform (resize, tensor, normalise)
            out["train_eval"] = load_split(cfg.dataset, root, "train", max_samples=cfg.max_train_samples,
                                           **noise, **dict(common, recipe="none", cache="none"))
    return out


def make_test_loader(cfg: TrainConfig, test_set, batch_size: int, device) -> torch.utils.data.DataLoader:
    """The test loader: in file order, ``batch_size`` per batch (``Method.test_batch_size(cfg)``)."""
    return torch.utils.data.DataLoader(test_set, batch_size=batch_size, shuffle=False,
                                       num_workers=cfg.num_workers, pin_memory=torch.device(device).type == "cuda",
                                       persistent_workers=cfg.num_workers > 0,
                                       generator=torch.Generator().manual_seed(cfg.seed))


def make_train_loader(cfg: TrainConfig, train_set, device):
    """(loader, sampler or None, the loader's generator: saved in checkpoints for a bit-identical resume)."""
    from .datasets import make_train_sampler
    sampler = make_train_sampler(train_set, cfg.dataset, cfg.seed, redraw=cfg.mining_subset == "redraw")
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
        num_workers=cfg.num_workers, pin_memory=torch.device(device).type == "cuda",
        persistent_workers=cfg.num_workers > 0, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"the training split has {len(train_set)} samples (after sampling), fewer than "
                         f"batch_size={cfg.batch_size}: with drop_last there is not one full batch")
    return loader, sampler, generator
