"""What Ada-DF and SCN record for notebooks 05-07 while they train: not part of the method.

* ``AttentionStats``: attention values of one epoch's training steps, per class (the
  ``attention_by_class.csv`` rows) and, in noise runs, clean vs flipped samples.
* ``AdaDFDiagnostics``: Ada-DF's per-sample record of a mining pass and what notebooks 05-07 read from it:
  the divergences to SynthFER's ground-truth votes, the share of flipped labels the fused target recovers,
  and the tracked samples' d / D[y] / f / ā / ŵ after each epoch.
* ``choose_tracked``: which training samples are tracked.

None of this changes a number the method computes: the recorder only reads detached tensors, and its
forward pass over the tracked samples runs in eval mode without grad.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from adadf_core.methods.base import EpochRecord, per_image, RunContext, split_crops, unwrap
from adadf_core.ops import adadf_ops as A


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

    def reduce(self, d) -> None:
        """Sum the statistics of every process (``distributed.Dist``; nothing in one process)."""
        d.all_reduce_sum(self.per_class)
        d.all_reduce_sum(self.noise)

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


class AdaDFDiagnostics:
    """Ada-DF's records for the notebooks (docs/METHOD.md §10), fed by ``AdaDFMethod``.

    * ``observe_step``: the raw averaged attention ā of every training step (per class; clean vs flipped).
    * ``observe_pass``: d, ŵ and ā of every sample seen in the mining pass (SFEW crops: summed over crops,
      divided by the count), and the pass's ā range.
    * ``record``: after D was mined: the attention rows; on SynthFER the mean KL and JS between the votes and
      d, D[y], f over the pass (d and ŵ per sample from the pass, D the new one, ŵ normalised within each
      batch); with synthetic noise the mean ā of flipped / clean samples and the share of flipped samples
      (seen in the pass) whose fused argmax is the clean label; the tracked samples, computed from a no-grad
      eval-mode forward of their *test-transform* images with the new D (ŵ normalised with the pass's ā
      range: a batch-free version of §2.4, so one sample's values are comparable across epochs).
    """

    def __init__(self, cfg, num_classes: int, train_set, run: RunContext, variant: str):
        C, dev = int(num_classes), run.device
        self.cfg, self.num_classes, self.run, self.variant = cfg, C, run, variant
        self.attn = AttentionStats(C, dev)
        self.tracked_indices = torch.zeros(0, dtype=torch.long)
        self.train_set, self.has_noise, self.gt = train_set, False, None
        if train_set is None:
            return
        n = len(train_set)
        self.labels_all = train_set.labels.to(dev).long()
        self.clean_all = train_set.clean_labels.to(dev).long()
        self.flipped = train_set.flipped.to(dev).bool()
        self.has_noise = bool(self.flipped.any())
        gt = getattr(train_set, "gt_distribution", None)
        self.gt = gt.to(dev).float() if gt is not None else None
        self._pass_d = torch.zeros(n, C, device=dev)
        self._pass_w = torch.zeros(n, device=dev)
        self._pass_n = torch.zeros(n, device=dev)
        self._pass_range = torch.tensor([float("inf"), float("-inf")], device=dev)
        self.tracked_indices = choose_tracked(train_set.labels, cfg.track_samples, cfg.seed)

    @property
    def wants_pass(self) -> bool:
        """Whether the mining pass must also give d, ŵ and ā of every sample (both branches): the
        ``pass_diagnostics`` switch, or by default where there are vote distributions (SynthFER) or
        synthetic label noise, whose metrics notebooks 06-07 read. Without it the tracked samples' ŵ is
        normalised over their own ā range (no pass range)."""
        choice = getattr(self.cfg, "pass_diagnostics", None)
        if choice is not None:
            return bool(choice) and self.train_set is not None
        return self.gt is not None or self.has_noise

    # --- observing -------------------------------------------------------------------------------
    @torch.no_grad()
    def observe_step(self, attention: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        self.attn.add(attention, labels, self.flipped[indices] if self.has_noise else None)

    def start_pass(self) -> None:
        if self.train_set is not None:
            self._pass_d.zero_(); self._pass_w.zero_(); self._pass_n.zero_()
            self._pass_range.copy_(torch.tensor([float("inf"), float("-inf")]))

    @torch.no_grad()
    def observe_pass(self, label_dist, weight, attention, indices) -> None:
        if self.train_set is None:
            return
        self._pass_d.index_add_(0, indices, label_dist.float())
        self._pass_w.index_add_(0, indices, weight.float())
        self._pass_n.index_add_(0, indices, torch.ones_like(weight, dtype=torch.float32))
        self._pass_range[0] = torch.minimum(self._pass_range[0], attention.min())
        self._pass_range[1] = torch.maximum(self._pass_range[1], attention.max())

    def reduce(self, d) -> None:
        """Combine every process's share of the pass and of the steps (``distributed.Dist``), so that each
        process records what one process would have."""
        if not d.active:
            return
        self.attn.reduce(d)
        if self.train_set is not None:
            for t in (self._pass_d, self._pass_w, self._pass_n):
                d.all_reduce_sum(t)
            d.all_reduce_min(self._pass_range[:1])
            d.all_reduce_max(self._pass_range[1:])

    # --- records ---------------------------------------------------------------------------------
    def static_info(self) -> Optional[dict]:
        """Arrays of the tracked samples that do not change over epochs (indices, labels, votes)."""
        if self.train_set is None or len(self.tracked_indices) == 0:
            return None
        idx = self.tracked_indices
        info = {"indices": idx.numpy(), "labels": self.train_set.labels[idx].numpy(),
                "clean_labels": self.train_set.clean_labels[idx].numpy(),
                "flipped": self.train_set.flipped[idx].numpy()}
        if self.gt is not None:
            info["gt"] = self.gt[idx.to(self.run.device)].cpu().numpy()
        return info

    @torch.no_grad()
    def record(self, model, epoch: int, D: torch.Tensor, fallback: torch.Tensor) -> EpochRecord:
        """The epoch's records after D was mined; then resets the step statistics."""
        metrics = {"fallback_classes": float(fallback.sum())}
        if self.train_set is not None:
            metrics.update(self._pass_metrics(D))
        names = list(getattr(self.train_set, "class_names", None) or range(self.num_classes))
        record = EpochRecord(metrics=metrics, class_distribution=D.detach().cpu().numpy().astype(np.float32),
                             attention_rows=self.attn.rows(epoch, names), tracked=self._tracked_forward(model, D))
        self.attn.reset()
        return record

    def _pass_metrics(self, D) -> dict[str, float]:
        out: dict[str, float] = {}
        seen = self._pass_n > 0
        if self.has_noise:
            out.update(self.attn.noise_metrics())
        if not bool(seen.any()) or (self.gt is None and not self.has_noise):
            return out
        n = self._pass_n[seen][:, None]
        d = self._pass_d[seen] / n
        w = self._pass_w[seen] / n[:, 0]
        rows = D[self.labels_all[seen]]
        fused = A.variant_target(self.variant, d, rows, w)
        if self.gt is not None:
            div = A.ambiguity_divergences(self.gt[seen], d, rows, fused)
            out.update({k: float(v.mean()) for k, v in div.items()})
        if self.has_noise:
            flipped = self.flipped[seen]
            if bool(flipped.any()):
                hit = fused[flipped].argmax(1) == self.clean_all[seen][flipped]
                out["recovered_flipped"] = float(hit.float().mean())
        return out

    def _tracked_forward(self, model, D) -> Optional[dict]:
        ds = self.run.train_eval_set
        if ds is None or len(self.tracked_indices) == 0:
            return None
        cfg = self.cfg
        images = self.run.to_device(torch.stack([ds[int(i)][0] for i in self.tracked_indices]))
        images, n_crops = split_crops(images)
        net = unwrap(model)
        was_training = net.training
        net.eval()
        try:
            with self.run.autocast():
                out = net(images)
        finally:
            net.train(was_training)
        d = per_image(F.softmax(out["aux_logits"].float(), 1), n_crops)
        abar = per_image(out["attention"].float().mean(1), n_crops)
        lo, hi = self._pass_range.tolist() if self.train_set is not None else (float("nan"),) * 2
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = float(abar.min()), float(abar.max())
        w = cfg.lambda_min + (cfg.lambda_max - cfg.lambda_min) * (abar - lo) / (hi - lo + 1e-12)
        w = w.clamp(cfg.lambda_min, cfg.lambda_max)
        rows = D[self.train_set.labels[self.tracked_indices].to(self.run.device)]
        fused = A.variant_target(self.variant, d, rows, w)
        return {key: v.cpu().numpy().astype(np.float32) for key, v in
                dict(label_dist=d, class_dist=rows, fused=fused, attention_raw=abar,
                     attention_weight=w).items()}
