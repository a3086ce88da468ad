"""The data of one run: its splits and DataLoaders, built from a resolved ``TrainConfig``.

``load_splits`` gives ``train`` (the recipe transform, label noise), ``test`` and, for methods that track
samples, ``train_eval`` (the training split with the test transform). ``make_train_loader`` shuffles with
a generator seeded by ``cfg.seed`` (or uses AffectNet's balanced undersampler) and drops the last partial
batch, as the authors' code does; ``make_test_loader`` never shuffles.
"""
from __future__ import annotations

import functools
import os
import random
from typing import Optional

import numpy as np
import torch

from adadf_core.config import TrainConfig
from adadf_core.data import synthfer
from adadf_core.data.dataset import load_split, make_train_sampler
from adadf_core.data.gpu_augment import DeviceAugment
from adadf_core.runtime.distributed import SINGLE, Dist, GlobalBatchSampler, per_rank_batch, shard_batches


def resolve_data_root(cfg: TrainConfig) -> Optional[str]:
    """``cfg.data_root``, or the default generated SynthFER copy for ``dataset=synthfer``."""
    if cfg.data_root is None and cfg.dataset == "synthfer":
        return str(synthfer.ensure())
    if cfg.data_root is None:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_root (CLI: --data-root PATH)")
    return cfg.data_root


def load_splits(cfg: TrainConfig, with_train: bool = True, with_train_eval: bool = False) -> dict:
    """The data sets of a run: ``train`` (recipe transform, noise), ``test``, ``curve`` (the part of the test
    split evaluated every epoch, when ``cfg.curve_test_samples`` is smaller than it) and optionally
    ``train_eval`` (the training split with the test transform, for tracked samples)."""
    root = resolve_data_root(cfg)
    common = dict(image_size=cfg.image_size, recipe=cfg.recipe, cache=cfg.cache, progress=cfg.progress)
    out = {"test": load_split(cfg.dataset, root, "test", max_samples=cfg.max_test_samples, **common)}
    curve = getattr(cfg, "curve_test_samples", None)
    if curve is not None and curve < len(out["test"]):
        # the per-epoch curve's split: a stratified part of the test split (the same rule as max_test_samples)
        out["curve"] = load_split(cfg.dataset, root, "test", max_samples=curve, **common)
    if with_train:
        noise = dict(noise_rate=cfg.noise_rate, noise_seed=cfg.noise_seed, noise_file=cfg.noise_file)
        train_recipe = "uint8" if getattr(cfg, "augment_device", "cpu") == "cuda" else cfg.recipe
        out["train"] = load_split(cfg.dataset, root, "train", max_samples=cfg.max_train_samples,
                                  **noise, **dict(common, recipe=train_recipe))
        if with_train_eval:
            # recipe "none" on the training split = the test transform (resize, tensor, normalise)
            out["train_eval"] = load_split(cfg.dataset, root, "train", max_samples=cfg.max_train_samples,
                                           **noise, **dict(common, recipe="none", cache="none"),
                                           check_files=False)      # the train split just read these files
    return out


def device_augment(cfg: TrainConfig, device):
    """The run's device-side augmentation (``cfg.augment_device="cuda"``: ``gpu_augment.DeviceAugment``, which
    stands in for the official / paper recipe; the loader then only resizes), or None (augment in the loader)."""
    if getattr(cfg, "augment_device", "cpu") != "cuda":
        return None
    if torch.device(device).type != "cuda":
        raise ValueError(f"augment_device='cuda' is not valid on {torch.device(device)}; expected a CUDA device "
                         f"(or augment_device='cpu')")
    if cfg.recipe not in ("official", "paper") or cfg.dataset == "sfew":
        raise ValueError(f"augment_device='cuda' stands in for the official recipe on single-crop data sets; "
                         f"got recipe {cfg.recipe!r} on {cfg.dataset!r} (expected recipe official or paper, not sfew)")
    return DeviceAugment()


def default_num_workers(device, world: int = 1) -> int:
    """Worker processes when ``cfg.num_workers`` is None: 0 on the CPU (the augmentation runs in the training
    process, as before: the SynthFER numbers depend on it), and on CUDA up to 8 per process, at most the CPU
    cores divided among the processes (the authors use 16; a GPU must never wait for RandAugment)."""
    if torch.device(device).type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 1) // max(1, int(world))))


def loader_options(cfg: TrainConfig, device, world: int = 1) -> dict:
    """The DataLoader options shared by every loader of a run: workers (kept alive across epochs), pinned
    memory on CUDA, two batches prefetched per worker. The decoded-image cache (``cfg.cache``) lives in the
    data set, so forked workers share its pages without copies (``mmap`` shares them under spawn too)."""
    workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers(device, world)
    cuda = torch.device(device).type == "cuda"
    options = dict(num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    if workers > 0:
        options["prefetch_factor"] = 2 if not cuda else 4
    return options


def make_test_loader(cfg: TrainConfig, test_set, batch_size: int, device,
                     d: Dist = SINGLE) -> torch.utils.data.DataLoader:
    """The test loader: in file order, ``batch_size`` per batch (``Method.test_batch_size(cfg)``); with
    several processes each evaluates whole batches (``distributed.shard_batches``)."""
    sampler = shard_batches(len(test_set), batch_size, d) if d.active else None
    return torch.utils.data.DataLoader(test_set, batch_size=batch_size, shuffle=False, sampler=sampler,
                                       generator=torch.Generator().manual_seed(cfg.seed),
                                       **loader_options(cfg, device, d.world))


def make_train_loader(cfg: TrainConfig, train_set, device, d: Dist = SINGLE):
    """(loader, sampler or None, the loader's generator: saved in checkpoints for a bit-identical resume).

    With several processes the loader yields this process's B/N of every global batch of the single-process
    order (``distributed.GlobalBatchSampler``; the generator is shared, so the order is), and each process's
    augmentation draws its own random numbers (``seed_worker``)."""
    sampler = make_train_sampler(train_set, cfg.dataset, cfg.seed, redraw=cfg.mining_subset == "redraw")
    generator = torch.Generator().manual_seed(cfg.seed)
    options = loader_options(cfg, device, d.world)
    if d.active:
        base = sampler if sampler is not None else torch.utils.data.RandomSampler(train_set, generator=generator)
        sampler = GlobalBatchSampler(base, cfg.batch_size, d)
        if options["num_workers"] > 0:
            options["worker_init_fn"] = functools.partial(seed_worker, rank=d.rank)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=per_rank_batch(cfg.batch_size, d), shuffle=sampler is None, sampler=sampler,
        drop_last=True, generator=generator, **options)
    if len(loader) == 0:
        raise ValueError(f"the training split has {len(train_set)} samples (after sampling), fewer than "
                         f"batch_size={cfg.batch_size}: with drop_last there is not one full batch")
    return loader, sampler, generator


def seed_worker(worker_id: int, rank: int) -> None:
    """A data-loader worker of process ``rank`` > 0: offset its torch, python and numpy seeds by the rank so
    that the processes' augmentations differ (they share the loader's generator for the global order)."""
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**63
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
