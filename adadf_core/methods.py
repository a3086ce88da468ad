"""Training methods: one ``Method`` object per run owns the model, the per-step loss and the hooks.

The trainer (``train.fit``) knows nothing about any one method. Per epoch e (1-based) it calls::

    method.on_epoch_start(e)
    for step, (images, labels, indices) in enumerate(train_loader):     # images already on the device
        method.step_ctx = {}
        loss, logs = method.training_step(model, images, labels, indices, e, step, steps_per_epoch)
        loss.backward(); optimizer.step()                                # (+ grad scaler under fp16)
        method.after_optimizer_step(model, method.step_ctx)
        if interval == "step": scheduler.step()
    extra = method.on_epoch_end(model, e, train_loader)                 # extra metrics.csv columns
    record = method.epoch_record(e)                                     # D, attention stats, tracked
    if interval == "epoch": scheduler.step()
    evaluate(model, test_loader, method)                                 # uses method.eval_forward

``training_step`` stores whatever ``after_optimizer_step`` needs (pre-step outputs, detached) in the
dict ``self.step_ctx``, which the trainer resets before every step and hands back after the optimiser
step. Per-sample state (relabelled labels, soft-label tables) lives on the method, on the model's
device, indexed by the ``indices`` the data set returns. Log values may be floats or 0-dim tensors
(tensors avoid a GPU sync per step); ``loss``, ``loss_ce``, ``loss_kl``, ``loss_rr``, ``w_ce``, ``w_kl``
and ``train_acc`` fill the metrics.csv columns of those names, other keys become extra columns.

Other hooks: ``param_groups(model)`` (optimiser groups), ``make_scheduler(optimizer, steps_per_epoch)``
-> ``(scheduler, "epoch" | "step")`` (per-iteration schedules such as SLM's cosine), ``eval_forward``,
``state_dict`` / ``load_state_dict`` (saved in every checkpoint), ``initial_record`` / ``tracked_info``.
Optional class attributes: ``eval_batch_size`` (test loader batch, e.g. SLM's 72) and
``needs_train_eval_set``. The trainer sets ``amp_context`` (a callable giving the autocast context),
``channels_last`` and ``train_eval_set`` (training split with the test transform) on the instance.
A method must also build with ``train_set=None`` (``Run.load_model`` and ``adadf evaluate`` do that).

Registry: ``METHODS`` maps a name to ``"module:Class"``; ``get_method(name)`` imports it lazily.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import adadf as A

METHODS = {
    "baseline": "adadf_core.methods:BaselineMethod",
    "ld_only": "adadf_core.methods:LDOnlyMethod",
    "cd_only": "adadf_core.methods:CDOnlyMethod",
    "adadf": "adadf_core.methods:AdaDFMethod",
    "scn": "adadf_core.scn:SCNMethod",
    "slm_aea": "adadf_core.slm_aea:SLMAEAMethod",
}


def get_method(name: str) -> type:
    """The ``Method`` class registered under ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    module_name, class_name = METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def flatten_crops(images, labels, indices):
    """SFEW TenCrop batches [B, n, 3, H, W] -> [B*n, 3, H, W] with labels and indices repeated
    (sample-major, matching ``view(-1, 3, H, W)``). Returns (images, labels, indices, n_crops or None)."""
    if images.dim() == 5:
        n = images.shape[1]
        return (images.flatten(0, 1), labels.repeat_interleave(n), indices.repeat_interleave(n), n)
    return images, labels, indices, None


class Method:
    """Base class: cross-entropy on a single network. Subclasses override what they change."""

    name = "base"
    arch = "single"            # build_model arch
    uses_attention = False     # does the model output an attention the trainer can log?
    attention_head = False     # single-branch model with an SCN attention head
    needs_train_eval_set = False   # wants ``train_eval_set`` (training split, test transform)

    def __init__(self, cfg, num_classes: int, train_set, device):
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.train_set = train_set            # None when only rebuilding a model (Run.load_model)
        self.device = torch.device(device)
        self.step_ctx: dict = {}
        self.amp_context = contextlib.nullcontext   # trainer sets: () -> autocast context
        self.channels_last = False                  # trainer sets
        self.train_eval_set = None                  # trainer sets: training split, test transform

    # --- construction ----------------------------------------------------------------------------
    def build_model(self, pretrained: bool = True) -> nn.Module:
        """The network, on CPU (the trainer moves it). ``pretrained=False`` skips loading
        ``cfg.pretrained`` (used when weights come from a checkpoint anyway)."""
        from .model import build_model
        cfg = self.cfg
        return build_model(self.arch, self.num_classes, backbone=cfg.backbone,
                           attention_on=cfg.attention_on,
                           pretrained=cfg.pretrained if pretrained else None,
                           attention_head=self.attention_head, freeze_trunk_bn=cfg.freeze_trunk_bn)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimiser parameter groups (default: every parameter that requires grad)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def make_scheduler(self, optimizer, steps_per_epoch: int):
        """Returns ``(scheduler, interval)``; interval ``"epoch"`` (stepped after each epoch) or
        ``"step"`` (after each optimiser step, e.g. SLM's cosine). Default ExponentialLR(lr_gamma)."""
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.cfg.lr_gamma), "epoch"

    # --- hooks -----------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of ``epoch`` (1-based)."""

    def training_step(self, model, images, labels, indices, epoch: int, step: int,
                      steps_per_epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """One step's loss and its logged parts. ``labels`` are the loader's labels."""
        images, labels, indices, _ = flatten_crops(images, labels, indices)
        out = model(images)
        loss = F.cross_entropy(out["logits"].float(), labels)
        acc = (out["logits"].argmax(1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "loss_ce": loss.detach(), "train_acc": acc}

    def after_optimizer_step(self, model, ctx: dict) -> None:
        """Called after ``optimizer.step()`` with the ``step_ctx`` that ``training_step`` filled."""

    def on_epoch_end(self, model, epoch: int, train_loader) -> dict[str, float]:
        """Called after the last step of ``epoch``; returns extra metrics (metrics.csv columns)."""
        return {}

    def epoch_record(self, epoch: int) -> dict:
        """Per-epoch records for the run folder, any of: ``class_distribution`` [C, C],
        ``attention_by_class`` (list of dict rows), ``tracked`` (dict of [K, ...] arrays)."""
        return {}

    def initial_record(self) -> dict:
        """Records before epoch 1 (``class_distribution``: the initial D)."""
        return {}

    def tracked_info(self) -> Optional[dict]:
        """Static arrays of the tracked samples (indices, labels, ...) or None."""
        return None

    @torch.no_grad()
    def eval_forward(self, model, images) -> dict:
        """Test-time outputs (``logits``, ``features``) of a batch [B, 3, H, W]."""
        forward = getattr(model, "forward_target", None)
        return forward(images) if forward is not None else model(images)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # --- helpers for subclasses ------------------------------------------------------------------
    def _group(self, n_crops) -> Optional[int]:
        """RR group size and KL divisor: the configured batch under SFEW's crop quirk, else the rows."""
        return self.cfg.batch_size if (n_crops is not None and self.cfg.crop_batch_quirk) else None

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        elif self.channels_last and images.dim() == 5:   # crops: channels_last once flattened
            b, n = images.shape[:2]
            images = images.flatten(0, 1).contiguous(memory_format=torch.channels_last)
            images = images.view(b, n, *images.shape[1:])
        return images


class AttentionStats:
    """Attention values seen in one epoch's training steps: per-class mean / std / count (the
    ``attention_by_class`` rows) and, in noise runs, the mean over clean vs flipped samples. float64 sums
    on the model's device, filled with ``index_add_``."""

    def __init__(self, num_classes: int, device):
        self.num_classes = num_classes
        self.per_class = torch.zeros(3, num_classes, dtype=torch.float64, device=device)  # sum, sq, n
        self.noise = torch.zeros(2, 2, dtype=torch.float64, device=device)   # [clean, flipped] x [sum, n]

    def reset(self) -> None:
        self.per_class.zero_()
        self.noise.zero_()

    @torch.no_grad()
    def add(self, values: torch.Tensor, labels: torch.Tensor, flipped: Optional[torch.Tensor] = None) -> None:
        """``values`` [B] attentions, ``labels`` [B] classes, ``flipped`` [B] bool (noise runs) or None."""
        a = values.detach().to(self.per_class.device, torch.float64)
        y = labels.to(self.per_class.device).long()
        ones = torch.ones_like(a)
        self.per_class[0].index_add_(0, y, a)
        self.per_class[1].index_add_(0, y, a * a)
        self.per_class[2].index_add_(0, y, ones)
        if flipped is not None:
            fl = flipped.to(self.noise.device).long()
            self.noise[:, 0].index_add_(0, fl, a)
            self.noise[:, 1].index_add_(0, fl, ones)

    def noise_metrics(self) -> dict[str, float]:
        """``attn_clean`` and ``attn_flipped``: mean attention of clean and flipped samples."""
        n = self.noise[:, 1].clamp_min(1)
        return {"attn_clean": float(self.noise[0, 0] / n[0]), "attn_flipped": float(self.noise[1, 0] / n[1])}

    def rows(self, epoch: int, class_names) -> list[dict]:
        """One ``attention_by_class`` row per class (mean and std NaN for a class not seen)."""
        s, sq, n = self.per_class
        rows = []
        for c in range(self.num_classes):
            k = float(n[c])
            mean = float(s[c]) / k if k else float("nan")
            std = max(float(sq[c]) / k - mean * mean, 0.0) ** 0.5 if k else float("nan")
            rows.append({"epoch": epoch, "class": c, "mean": mean, "std": std, "count": int(k),
                         "class_name": str(class_names[c])})
        return rows


class BaselineMethod(Method):
    """A single ResNet trained with cross-entropy on the hard labels (spec 5, ``baseline``)."""

    name = "baseline"


class AdaDFMethod(Method):
    """Ada-DF and its ablation variants (spec sections 2-5). ``variant``: adadf | ld_only | cd_only.

    State: the class-distribution matrix ``D`` [C, C] on the model's device; D mined after epoch e is
    used throughout epoch e + 1. Mining (``cfg.cd_source``): ``eval_pass`` runs one more pass over the
    training loader in eval mode without grad after the epoch (the authors' code); ``train_pass``
    accumulates softmax(o_1) during the training steps.

    Records per epoch:
    * ``class_distribution``: the newly mined D;
    * ``attention_by_class``: mean / std / count of the raw averaged attention ā of the training steps;
    * ``tracked``: for ``cfg.track_samples`` training samples (stratified by label, chosen with
      ``cfg.seed``), computed at the end of the epoch from a no-grad eval-mode forward of their
      *test-transform* images with the newly mined D: d = softmax(o_1), D[y], fused f, ā and ŵ. ŵ is
      normalised with the min / max of ā over the mining pass (a batch-free version of spec 2.4, so
      values of one sample are comparable across epochs).
    * SynthFER (ground-truth votes): mean KL and JS between the votes and d, D[y], f over the mining
      pass (d and ŵ per sample from the pass, D the newly mined one; ŵ normalised within each batch).
    * Synthetic noise: mean ā of flipped / clean samples over the training steps, and the share of
      flipped samples (seen in the mining pass) whose fused argmax is the clean label.
    """

    name = "adadf"
    arch = "adadf"
    uses_attention = True
    needs_train_eval_set = True
    variant = "adadf"

    def __init__(self, cfg, num_classes, train_set, device):
        super().__init__(cfg, num_classes, train_set, device)
        C, dev = self.num_classes, self.device
        self.D = A.initial_class_distribution(C, cfg.threshold, device=dev)
        self.miner = A.ClassDistributionMiner(C, dev)
        self.fallback = torch.zeros(C, dtype=torch.bool, device=dev)
        # training-step attention statistics (reset each epoch)
        self.attn_stats = AttentionStats(C, dev)
        self._last_record: dict = {}
        self._last_metrics: dict = {}
        self.tracked_indices = torch.zeros(0, dtype=torch.long)
        self.has_noise = False
        self.gt = None
        if train_set is not None:
            n = len(train_set)
            self.labels_all = train_set.labels.to(dev).long()
            self.clean_all = train_set.clean_labels.to(dev).long()
            self.flipped = train_set.flipped.to(dev).bool()
            self.has_noise = bool(self.flipped.any())
            gt = getattr(train_set, "gt_distribution", None)
            self.gt = gt.to(dev).float() if gt is not None else None
            # per-sample sums over the mining pass (SFEW crops: summed over crops, divided by count)
            self._pass_d = torch.zeros(n, C, device=dev)
            self._pass_w = torch.zeros(n, device=dev)
            self._pass_n = torch.zeros(n, device=dev)
            self._pass_range = torch.tensor([float("inf"), float("-inf")], device=dev)
            self.tracked_indices = choose_tracked(train_set.labels, cfg.track_samples, cfg.seed)

    # --- step --------------------------------------------------------------------------------------
    def _loss(self, out, labels, epoch, group):
        cfg = self.cfg
        return A.adadf_loss(out, labels, self.D, epoch, variant=self.variant,
                            epoch_threshold=cfg.epoch_threshold, lam_min=cfg.lambda_min,
                            lam_max=cfg.lambda_max, rr_ratio=cfg.rr_ratio, rr_margin=cfg.rr_margin,
                            group_size=group, kl_divisor=group, detach_target=cfg.detach_target)

    def on_epoch_start(self, epoch):
        self.attn_stats.reset()
        if self.cfg.cd_source == "train_pass":
            self._start_pass()

    def training_step(self, model, images, labels, indices, epoch, step, steps_per_epoch):
        images, labels, indices, n_crops = flatten_crops(images, labels, indices)
        out = model(images)
        parts = self._loss(out, labels, epoch, self._group(n_crops))
        with torch.no_grad():
            self.attn_stats.add(parts["attention"], labels, self.flipped[indices] if self.has_noise else None)
            if self.cfg.cd_source == "train_pass":
                self._observe(parts["label_dist"].detach(), parts["weight"].detach(),
                              parts["attention"].detach(), labels, indices)
            acc = (out["logits"].argmax(1) == labels).float().mean()
        logs = {k: parts[k].detach() for k in ("loss", "loss_ce", "loss_kl", "loss_rr")}
        logs.update(w_ce=parts["w_ce"], w_kl=parts["w_kl"], train_acc=acc)
        return parts["loss"], logs

    # --- mining --------------------------------------------------------------------------------
    def _start_pass(self):
        self.miner.reset()
        if self.train_set is not None:
            self._pass_d.zero_(); self._pass_w.zero_(); self._pass_n.zero_()
            self._pass_range.copy_(torch.tensor([float("inf"), float("-inf")]))

    def _observe(self, label_dist, weight, attention, labels, indices):
        """Add one batch of the mining pass (detached tensors)."""
        self.miner.update(label_dist, labels)
        if self.train_set is not None:
            self._pass_d.index_add_(0, indices, label_dist.float())
            self._pass_w.index_add_(0, indices, weight.float())
            self._pass_n.index_add_(0, indices, torch.ones_like(weight, dtype=torch.float32))
            self._pass_range[0] = torch.minimum(self._pass_range[0], attention.min())
            self._pass_range[1] = torch.maximum(self._pass_range[1], attention.max())

    @torch.no_grad()
    def _eval_pass(self, model, train_loader):
        """One more full pass over the training loader, eval mode, no grad (spec 4, official)."""
        self._start_pass()
        was_training = model.training
        model.eval()
        cfg = self.cfg
        try:
            for images, labels, indices in train_loader:
                images = self.to_device(images)
                labels = labels.to(self.device).long()
                indices = indices.to(self.device).long()
                images, labels, indices, _ = flatten_crops(images, labels, indices)
                with self.amp_context():
                    out = model(images)
                t = A.adadf_targets(out["aux_logits"], out["attention"], labels, self.D, self.variant,
                                    cfg.lambda_min, cfg.lambda_max)
                self._observe(t["label_dist"], t["weight"], t["attention"], labels, indices)
        finally:
            model.train(was_training)

    def on_epoch_end(self, model, epoch, train_loader):
        cfg = self.cfg
        if cfg.cd_source == "eval_pass":
            self._eval_pass(model, train_loader)
        self.miner.reduce(None)
        self.D = self.miner.compute(cfg.threshold, cfg.fallback_offdiag).to(self.device)
        self.fallback = self.miner.fallback.clone()
        metrics = {"fallback_classes": float(self.fallback.sum())}
        if self.train_set is not None:
            metrics.update(self._pass_metrics())
        self._last_record = self._make_record(model, epoch)
        return metrics

    @torch.no_grad()
    def _pass_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        seen = self._pass_n > 0
        if self.has_noise:
            out.update(self.attn_stats.noise_metrics())
        if not bool(seen.any()) or (self.gt is None and not self.has_noise):
            return out
        n = self._pass_n[seen][:, None]
        d = self._pass_d[seen] / n
        w = self._pass_w[seen] / n[:, 0]
        y = self.labels_all[seen]
        rows = self.D[y]
        fused = self._fuse(d, rows, w)
        if self.gt is not None:
            div = A.ambiguity_divergences(self.gt[seen], d, rows, fused)
            out.update({k: float(v.mean()) for k, v in div.items()})
        if self.has_noise:
            flipped = self.flipped[seen]
            if bool(flipped.any()):
                hit = fused[flipped].argmax(1) == self.clean_all[seen][flipped]
                out["recovered_flipped"] = float(hit.float().mean())
        return out

    def _fuse(self, d, rows, w):
        return A.variant_target(self.variant, d, rows, w)

    # --- records -------------------------------------------------------------------------------
    def initial_record(self) -> dict:
        return {"class_distribution": self.D.detach().cpu().numpy().astype(np.float32)}

    def tracked_info(self) -> Optional[dict]:
        if self.train_set is None or len(self.tracked_indices) == 0:
            return None
        idx = self.tracked_indices
        info = {"indices": idx.numpy(), "labels": self.train_set.labels[idx].numpy(),
                "clean_labels": self.train_set.clean_labels[idx].numpy(),
                "flipped": self.train_set.flipped[idx].numpy()}
        if self.gt is not None:
            info["gt"] = self.gt[idx.to(self.device)].cpu().numpy()
        return info

    def epoch_record(self, epoch: int) -> dict:
        return self._last_record

    @torch.no_grad()
    def _make_record(self, model, epoch) -> dict:
        names = list(getattr(self.train_set, "class_names", None) or range(self.num_classes))
        rows = self.attn_stats.rows(epoch, names)
        record = {"class_distribution": self.D.detach().cpu().numpy().astype(np.float32),
                  "attention_by_class": rows}
        tracked = self._tracked_forward(model)
        if tracked is not None:
            record["tracked"] = tracked
        return record

    @torch.no_grad()
    def _tracked_forward(self, model) -> Optional[dict]:
        ds = self.train_eval_set
        if ds is None or len(self.tracked_indices) == 0:
            return None
        cfg = self.cfg
        images = torch.stack([ds[int(i)][0] for i in self.tracked_indices])
        images = self.to_device(images)
        k = images.shape[0]
        n_crops = images.shape[1] if images.dim() == 5 else 1
        if images.dim() == 5:
            images = images.flatten(0, 1)
        was_training = model.training
        model.eval()
        try:
            with self.amp_context():
                out = model(images)
        finally:
            model.train(was_training)
        d = F.softmax(out["aux_logits"].float(), 1).view(k, n_crops, -1).mean(1)
        abar = out["attention"].float().mean(1).view(k, n_crops).mean(1)
        lo, hi = self._pass_range.tolist() if self.train_set is not None else (float("nan"),) * 2
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = float(abar.min()), float(abar.max())
        w = cfg.lambda_min + (cfg.lambda_max - cfg.lambda_min) * (abar - lo) / (hi - lo + 1e-12)
        w = w.clamp(cfg.lambda_min, cfg.lambda_max)
        y = self.train_set.labels[self.tracked_indices].to(self.device)
        rows = self.D[y]
        fused = self._fuse(d, rows, w)
        return {k_: v.cpu().numpy().astype(np.float32) for k_, v in
                dict(label_dist=d, class_dist=rows, fused=fused, attention_raw=abar,
                     attention_weight=w).items()}

    # --- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"D": self.D.detach().cpu(), "fallback": self.fallback.cpu(),
                "tracked_indices": self.tracked_indices.clone()}

    def load_state_dict(self, state: dict) -> None:
        D = state["D"]
        if tuple(D.shape) != (self.num_classes, self.num_classes):
            raise ValueError(f"method state has D of shape {tuple(D.shape)}; expected "
                             f"[{self.num_classes}, {self.num_classes}]")
        self.D = D.to(self.device).float()
        self.fallback = state.get("fallback", self.fallback).to(self.device)
        if "tracked_indices" in state:
            self.tracked_indices = state["tracked_indices"].clone()


class LDOnlyMethod(AdaDFMethod):
    """Ablation: the target branch learns from the label distributions alone (f = d)."""
    name = variant = "ld_only"


class CDOnlyMethod(AdaDFMethod):
    """Ablation: the target branch learns from the class distributions alone (f = D[y])."""
    name = variant = "cd_only"


def choose_tracked(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """``k`` training indices, stratified by label (round-robin over classes, each class in a seeded
    random order), sorted. Deterministic given ``labels``, ``k`` and ``seed``; uses its own generator."""
    labels = torch.as_tensor(labels).long().cpu()
    k = min(int(k), len(labels))
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(labels), generator=gen)
    queues = [order[labels[order] == c].tolist() for c in range(int(labels.max()) + 1)]
    chosen: list[int] = []
    while len(chosen) < k:
        for q in queues:
            if q and len(chosen) < k:
                chosen.append(q.pop(0))
    return torch.tensor(sorted(chosen), dtype=torch.long)
