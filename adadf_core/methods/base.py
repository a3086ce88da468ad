"""The method protocol: what the trainer (``train.fit``) calls on every training method.

Per epoch e (1-based) the trainer does::

    for step, (images, labels, indices) in enumerate(train_loader):      # already on the device
        loss, logs = method.training_step(model, images, labels, indices, e, step, steps_per_epoch)
        loss.backward(); optimizer.step()                                   # (+ grad scaler under fp16)
        method.after_optimizer_step(model)
        if interval == "step": scheduler.step()
    record = method.end_epoch(model, e, train_loader)                      # EpochRecord
    if interval == "epoch": scheduler.step()
    evaluate(model, test_loader)                                           # model.forward_target

A method is built once per run with ``(cfg, num_classes, train_set, run)``: ``run`` is the explicit
``RunContext`` (device, mixed precision, memory format, the training split with the test transform);
nothing is set on a method from outside. Per-sample state (SCN's current labels, SLM's logit table) lives
on the method, on ``run.device``, indexed by the ``indices`` the data set returns. ``build_model`` and
``test_batch_size`` are class methods: evaluating a saved run needs no training method.

Log values may be floats or 0-dim tensors (tensors avoid a GPU sync per step); ``loss``, ``loss_ce``,
``loss_kl``, ``loss_rr``, ``w_ce``, ``w_kl`` and ``train_acc`` fill the metrics.csv columns of those names,
other keys become extra columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adadf_core.models.networks import build_model
from adadf_core.runtime import device as devmod
from adadf_core.runtime.distributed import SINGLE, Dist


@dataclass(frozen=True)
class RunContext:
    """Where and how a run computes: what the trainer tells a method, once, at construction."""
    device: torch.device = torch.device("cpu")
    amp: str = "off"                 # resolved precision: "off" on the CPU (device.amp_dtype)
    channels_last: bool = False
    train_eval_set: Any = None       # the training split with the test transform (tracked samples)
    dist: Dist = SINGLE              # this process's rank among the run's processes (torchrun)
    augment: Any = None              # device-side augmentation of training batches (gpu_augment.DeviceAugment)

    def autocast(self):
        """The autocast context of this run (a no-op on the CPU or with amp off)."""
        return devmod.autocast_context(self.device, self.amp)

    def train_images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of the training loader on the device, augmented there when the run augments on the device
        (``cfg.augment_device``); the training steps and the mining pass both read it."""
        if self.augment is None:
            return self.to_device(images)
        return self.to_device(self.augment(images.to(self.device, non_blocking=True)))

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch [B, 3, H, W] (or SFEW crops [B, n, 3, H, W]) to the device in the run's memory format."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        elif self.channels_last and images.dim() == 5:   # crops: channels_last once flattened
            b, n = images.shape[:2]
            images = images.flatten(0, 1).contiguous(memory_format=torch.channels_last)
            images = images.view(b, n, *images.shape[1:])
        return images


@dataclass
class EpochRecord:
    """What a method reports after an epoch (or, from ``initial_record``, before the first one)."""
    metrics: dict[str, float] = field(default_factory=dict)       # extra metrics.csv columns
    class_distribution: Optional[np.ndarray] = None               # D [C, C]
    attention_rows: list[dict] = field(default_factory=list)      # attention_by_class.csv rows
    tracked: Optional[dict] = None     # per-epoch arrays of the tracked samples (initial: their static arrays)


def split_crops(images: torch.Tensor) -> tuple[torch.Tensor, Optional[int]]:
    """SFEW TenCrop batches [B, n, 3, H, W] -> ([B*n, 3, H, W], n), sample-major; other batches -> (images, None).
    ``per_image`` averages the results back to one row per image."""
    return (images.flatten(0, 1), images.shape[1]) if images.dim() == 5 else (images, None)


def flatten_crops(images, labels, indices):
    """``split_crops`` with labels and indices repeated per crop. Returns (images, labels, indices, n_crops or None)."""
    images, n = split_crops(images)
    if n is None:
        return images, labels, indices, None
    return images, labels.repeat_interleave(n), indices.repeat_interleave(n), n


def per_image(values: torch.Tensor, n_crops: Optional[int]) -> torch.Tensor:
    """Average per-crop rows back to one row per image ([B*n, ...] -> [B, ...]); identity without crops."""
    if n_crops is None:
        return values
    return values.view(-1, n_crops, *values.shape[1:]).mean(1)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (the model itself otherwise): for the passes
    without gradients, which call its own methods (``forward_aux``, ``forward_target``)."""
    return getattr(model, "module", model)


def first_of_crops(values: torch.Tensor, n_crops: Optional[int]) -> torch.Tensor:
    """The first crop's entry of each image ([B*n] -> [B]): for per-image ids repeated over crops."""
    return values if n_crops is None else values.view(-1, n_crops)[:, 0]


class Method:
    """Base class: cross-entropy on a single network. Subclasses override what they change."""
    name = "base"                    # set by @register_method
    needs_train_eval_set = False     # wants ``run.train_eval_set`` (training split, test transform)

    def __init__(self, cfg, num_classes: int, train_set=None, run: Optional[RunContext] = None):
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.train_set = train_set
        self.run = run if run is not None else RunContext()
        self.device = self.run.device

    @classmethod
    def describe(cls) -> str:
        """One line: the network, the losses and the targets (notebook 03 prints one per variant)."""
        return "one network; loss CE(o, y) on the given labels"

    # --- construction (class methods: evaluation builds the model without a training method) ------
    @classmethod
    def build_model(cls, cfg, num_classes: int, pretrained: Optional[str] = None) -> nn.Module:
        """The network on the CPU (the trainer moves it); ``pretrained`` a local weights file or None."""
        return build_model("single", num_classes, backbone=cfg.backbone, attention_on=cfg.attention_on,
                           pretrained=pretrained, trust_pickle=cfg.trust_pickle)

    @classmethod
    def test_batch_size(cls, cfg) -> int:
        """Batch size of the test loader (SLM-AEA's faithful test-batch mean needs its own)."""
        return int(cfg.batch_size)

    def make_scheduler(self, optimizer, steps_per_epoch: int):
        """Returns ``(scheduler, interval)``; interval ``"epoch"`` (stepped after each epoch) or
        ``"step"`` (after each optimiser step, e.g. SLM's cosine). Default ExponentialLR(lr_gamma)."""
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.cfg.lr_gamma), "epoch"

    # --- hooks -----------------------------------------------------------------------------------
    def training_step(self, model, images, labels, indices, epoch: int, step: int,
                      steps_per_epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """One step's loss and its logged parts. ``labels`` are the loader's labels."""
        images, labels, indices, _ = flatten_crops(images, labels, indices)
        out = model(images)
        loss = F.cross_entropy(out["logits"].float(), labels)
        acc = (out["logits"].argmax(1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "loss_ce": loss.detach(), "train_acc": acc}

    def after_optimizer_step(self, model) -> None:
        """Called after ``optimizer.step()``: per-sample state updates from the step's (pre-step) outputs,
        which ``training_step`` kept on the method."""

    def end_epoch(self, model, epoch: int, train_loader) -> EpochRecord:
        """Called after the last step of ``epoch``."""
        return EpochRecord()

    def initial_record(self) -> EpochRecord:
        """What is known before epoch 1: the initial D, the tracked samples' static arrays."""
        return EpochRecord()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # --- helpers for subclasses ------------------------------------------------------------------
    def _group(self, n_crops, global_batch: bool = False) -> Optional[int]:
        """RR group size and KL divisor: the configured batch under SFEW's crop quirk, else the rows. With
        several processes a process holds batch_size / N images: the KL divisor is that share (the gradient
        average over processes then divides by batch_size), the RR group of a gathered batch the whole."""
        if n_crops is None or not self.cfg.crop_batch_quirk:
            return None
        return self.cfg.batch_size if global_batch else self.cfg.batch_size // self.run.dist.world

    def _attention_gather(self):
        """The all-gather for the rank regularisation and the attention normalisation over the global batch
        (several processes, ``cfg.ddp_attention_batch="global"``); None: this process's batch."""
        d = self.run.dist
        return d.gather_batch if d.active and self.cfg.ddp_attention_batch == "global" else None

    def _share_rows(self, *tensors):
        """Every process's rows of ``tensors`` (per-sample state updates, e.g. SCN's relabels), concatenated
        in rank order; this process's own in one process."""
        d = self.run.dist
        if not d.active:
            return tensors
        return tuple(d.gather_rows(t.detach()) for t in tensors)
