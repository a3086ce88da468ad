"""Pure tensor functions of Ada-DF (docs/METHOD.md §2–§5).

Everything here takes tensors and returns tensors: no globals, no device assumptions, batched over the
first dimension. Losses are computed in float32 even when the inputs come from a bf16/fp16 autocast
region. ``rank_regularization`` is shared with SCN (docs/METHOD.md §12.2).

Typical use inside one training step (``methods.py`` composes these)::

    out = model(x)                                   # logits, aux_logits, attention [B, 2]
    parts = adadf_loss(out, labels, class_dist, epoch, epoch_threshold=3)
    parts["loss"].backward()

and once per epoch::

    miner = ClassDistributionMiner(num_classes, device)
    for x, y, _ in loader: miner.update(torch.softmax(model(x)["aux_logits"], 1), y)
    class_dist = miner.compute(t=0.7, offdiag="code")   # miner.fallback: which rows fell back
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

VARIANTS = ("adadf", "ld_only", "cd_only")
# what ``variant_target`` returns for each variant, in the notation of docs/METHOD.md §2 (notebook 03 prints it)
TARGET_FORMULAS = {"adadf": "(1-ŵ)·d + ŵ·D[y]", "ld_only": "d", "cd_only": "D[y]"}
OFFDIAG_CHOICES = ("code", "paper")
RR_LOW_GROUPS = ("lowest", "rest")

__all__ = [
    "VARIANTS", "OFFDIAG_CHOICES", "RR_LOW_GROUPS", "loss_weights", "rank_regularization", "normalize_attention",
    "initial_class_distribution", "threshold_distribution", "fuse", "kl_target_loss",
    "ClassDistributionMiner", "kl_divergence", "js_divergence", "ambiguity_divergences",
    "variant_target", "adadf_targets", "adadf_loss",
]


# ----------------------------------------------------------------------------------------- helpers
def _check_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is not valid; expected an integer >= 2")
    return int(num_classes)


def _check_threshold(t: float) -> float:
    if not (0.0 < float(t) <= 1.0):
        raise ValueError(f"threshold t={t!r} is not valid; expected a value in (0, 1]")
    return float(t)


def _check_2d(name: str, x: Tensor, num_classes: Optional[int] = None) -> None:
    if x.dim() != 2 or (num_classes is not None and x.shape[1] != num_classes):
        want = f"[B, {num_classes}]" if num_classes is not None else "[B, C]"
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {want}")


# ------------------------------------------------------------------------------ §3: ramps
def loss_weights(epoch: float, epoch_threshold: float) -> tuple[float, float]:
    """Loss weights ``(w_ce, w_kl)`` at the 1-based ``epoch`` (docs/METHOD.md §3, code name ``beta``).

    e <= ê: w_KL = exp(-(1 - e/ê)^2), w_CE = 1;  e > ê: w_KL = 1, w_CE = exp(-(1 - ê/e)^2).
    Both ramps equal 1 at e = ê, so the weights are continuous. Fractional epochs are allowed.
    """
    e, beta = float(epoch), float(epoch_threshold)
    if not e > 0:
        raise ValueError(f"epoch={epoch!r} is not valid; expected a 1-based epoch > 0")
    if not beta > 0:
        raise ValueError(f"epoch_threshold={epoch_threshold!r} is not valid; expected a value > 0")
    if e <= beta:
        return 1.0, math.exp(-((1.0 - e / beta) ** 2))
    return math.exp(-((1.0 - beta / e) ** 2)), 1.0


# ------------------------------------------------------------- §2.2: rank regularisation
def rank_regularization(attention: Tensor, ratio: float = 0.7, margin: float = 0.07,
                        group_size: Optional[int] = None, low_group: str = "rest") -> Tensor:
    """SCN's rank regularisation ``max(0, margin - (mean_H - mean_L))`` on a batch of attentions [B].

    The values are sorted in descending order; the high group H is the top ``M`` values. ``M = floor(ratio
    * B)``, or ``floor(ratio * group_size)`` when ``group_size`` is given: with SFEW's ``crop_batch_quirk``
    the authors' code uses the configured batch (16 images) instead of the 160 crops actually in the batch.
    The low group L (``low_group``, docs/METHOD.md §6): ``"rest"`` every value outside H (149 of 160 crops);
    ``"lowest"`` the ``size - M`` lowest values, as the authors' code does (5 of 160 for 16 images). Without
    ``group_size`` both give the same L. Gradients flow into the selected values (the sort itself is not
    differentiated). Returns a float32 scalar.
    """
    if attention.dim() == 2 and attention.shape[1] == 1:
        attention = attention[:, 0]
    if attention.dim() != 1:
        raise ValueError(f"attention has shape {tuple(attention.shape)}; expected [B]")
    if not (0.0 < ratio < 1.0):
        raise ValueError(f"ratio={ratio!r} is not valid; expected a value in (0, 1)")
    if low_group not in RR_LOW_GROUPS:
        raise ValueError(f"low_group={low_group!r} is not valid; expected one of {', '.join(RR_LOW_GROUPS)}")
    n = attention.shape[0]
    size = n if group_size is None else int(group_size)
    high = int(math.floor(ratio * size))
    if high < 1 or high >= n or (low_group == "lowest" and size > n):
        raise ValueError(f"rank_regularization needs at least one value in each group: batch of {n}, "
                         f"group size {size}, ratio {ratio} gives {high} high values; expected 1 <= "
                         f"floor(ratio * group size) < batch size (low_group 'lowest': group size <= batch size)")
    values, _ = torch.sort(attention.float(), descending=True)
    low = values[high:] if low_group == "rest" else values[n - (size - high):]
    gap = values[:high].mean() - low.mean()
    return torch.clamp(margin - gap, min=0.0)


# ---------------------------------------------------------- §2.4: attention normalisation
def normalize_attention(a: Tensor, lam_min: float = 0.2, lam_max: float = 1.0,
                        eps: float = 1e-12) -> Tensor:
    """Min-max normalise a batch of attentions [B] to ``[lam_min, lam_max]`` (docs/METHOD.md §2.4).

    ``w = lam_min + (lam_max - lam_min) * (a - min a) / (max a - min a + eps)``. The ``eps`` (absent
    in the authors' code) makes an all-equal batch map to ``lam_min`` instead of NaN. Not detached:
    gradients reach the heads through a, min a and max a, as in the code. Returns float32.
    """
    if a.dim() != 1:
        raise ValueError(f"attention has shape {tuple(a.shape)}; expected [B]")
    if not (0.0 <= lam_min <= lam_max):
        raise ValueError(f"lam_min={lam_min!r}, lam_max={lam_max!r} are not valid; expected "
                         f"0 <= lam_min <= lam_max")
    a = a.float()
    lo, hi = a.min(), a.max()
    return lam_min + (lam_max - lam_min) * (a - lo) / (hi - lo + eps)


# ------------------------------------------------------------ §4: class distributions
def initial_class_distribution(num_classes: int, t: float, device=None) -> Tensor:
    """The initial D [C, C]: ``t`` on the diagonal, ``(1 - t) / (C - 1)`` elsewhere (rows sum to 1)."""
    c, t = _check_classes(num_classes), _check_threshold(t)
    d = torch.full((c, c), (1.0 - t) / (c - 1), dtype=torch.float32, device=device)
    d.fill_diagonal_(t)
    return d


def threshold_distribution(num_classes: int, t: float, offdiag: str = "code", device=None) -> Tensor:
    """The fallback D rows [C, C]: ``t`` on the diagonal; off the diagonal ``0.4/(C-1)`` for
    ``offdiag="code"`` (the authors' leftover: rows sum to t + 0.4) or ``(1-t)/(C-1)`` for ``"paper"``."""
    c, t = _check_classes(num_classes), _check_threshold(t)
    if offdiag == "code":
        off = 0.4 / (c - 1)
    elif offdiag == "paper":
        off = (1.0 - t) / (c - 1)
    else:
        raise ValueError(f"offdiag={offdiag!r} is not valid; expected one of {', '.join(OFFDIAG_CHOICES)}")
    d = torch.full((c, c), off, dtype=torch.float32, device=device)
    d.fill_diagonal_(t)
    return d


class ClassDistributionMiner:
    """Accumulates per-class sums of softmax(o_1) and counts on the model's device (docs/METHOD.md §4).

    ``update`` adds a batch with ``index_add_`` (no Python loop over samples or classes, no growing
    list); ``reduce`` applies an all-reduce hook to the sum and count tensors (distributed training);
    ``compute`` divides and applies the threshold rule. After ``compute``, ``fallback`` is a bool [C]
    mask of the rows that were replaced by the threshold distribution and ``means`` the raw class
    means (NaN rows for classes without samples).
    """

    def __init__(self, num_classes: int, device=None):
        self.num_classes = _check_classes(num_classes)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.sums = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float32, device=self.device)
        self.counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        self.fallback: Optional[Tensor] = None
        self.means: Optional[Tensor] = None

    def reset(self) -> None:
        """Zero the sums and counts (start of a mining pass)."""
        self.sums.zero_()
        self.counts.zero_()
        self.fallback = None
        self.means = None

    @torch.no_grad()
    def update(self, probs: Tensor, labels: Tensor) -> None:
        """Add a batch: ``probs`` [B, C] (softmax of o_1), ``labels`` [B] integer classes."""
        _check_2d("probs", probs, self.num_classes)
        if labels.dim() != 1 or labels.shape[0] != probs.shape[0]:
            raise ValueError(f"labels has shape {tuple(labels.shape)}; expected [{probs.shape[0]}] "
                             f"to match probs {tuple(probs.shape)}")
        labels = labels.to(device=self.device, dtype=torch.long)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]; got values from "
                             f"{int(labels.min())} to {int(labels.max())}")
        self.sums.index_add_(0, labels, probs.detach().to(device=self.device, dtype=torch.float32))
        self.counts.index_add_(0, labels, torch.ones_like(labels))

    def reduce(self, all_reduce_fn: Optional[Callable[[Tensor], object]] = None) -> None:
        """Apply ``all_reduce_fn`` in place to the sums and the counts (e.g.
        ``torch.distributed.all_reduce``) before ``compute``. ``None`` (single process) does nothing."""
        if all_reduce_fn is not None:
            all_reduce_fn(self.sums)
            all_reduce_fn(self.counts)

    @torch.no_grad()
    def compute(self, t: float, offdiag: str = "code") -> Tensor:
        """The mined D [C, C]: row c is the class mean M_c when M_c[c] >= t, otherwise the threshold
        distribution (``offdiag`` as in ``threshold_distribution``). Classes are checked independently;
        a class with no samples in the pass also gets the threshold distribution."""
        fallback_rows = threshold_distribution(self.num_classes, t, offdiag, device=self.device)
        counts = self.counts.to(torch.float32)[:, None]
        means = torch.where(counts > 0, self.sums / counts.clamp_min(1.0),
                            torch.full_like(self.sums, float("nan")))
        diag = torch.diagonal(means)
        ok = (self.counts > 0) & (diag >= t)
        self.means = means
        self.fallback = ~ok
        return torch.where(ok[:, None], means, fallback_rows)


# --------------------------------------------------------------------- §2.6–§2.7: targets
def fuse(label_dist: Tensor, class_rows: Tensor, weight: Tensor) -> Tensor:
    """Fusion ``f_i = (1 - w_i) d_i + w_i D[y_i]`` for ``label_dist`` [B, C], ``class_rows`` [B, C]
    (the rows D[y_i]) and ``weight`` [B]."""
    _check_2d("label_dist", label_dist)
    if class_rows.shape != label_dist.shape:
        raise ValueError(f"class_rows has shape {tuple(class_rows.shape)}; expected "
                         f"{tuple(label_dist.shape)} like label_dist")
    if weight.dim() != 1 or weight.shape[0] != label_dist.shape[0]:
        raise ValueError(f"weight has shape {tuple(weight.shape)}; expected [{label_dist.shape[0]}]")
    w = weight[:, None]
    return (1.0 - w) * label_dist + w * class_rows


def kl_target_loss(fused: Tensor, target_logits: Tensor, divisor: Optional[int] = None) -> Tensor:
    """``sum_i sum_j f_ij (log f_ij - log_softmax(o_2)_ij) / divisor`` (docs/METHOD.md §2.7), a float32 scalar.

    ``divisor`` defaults to the batch size B (``crop_batch_quirk`` passes the configured batch instead).
    0 * log 0 is taken as 0, with a finite gradient there too (``torch.xlogy`` would give 0/0 = NaN in
    the backward pass where f underflows to exactly 0); inputs are cast to float32 first.
    """
    _check_2d("fused", fused)
    if target_logits.shape != fused.shape:
        raise ValueError(f"target_logits has shape {tuple(target_logits.shape)}; expected "
                         f"{tuple(fused.shape)} like fused")
    n = fused.shape[0] if divisor is None else int(divisor)
    if n < 1:
        raise ValueError(f"divisor={divisor!r} is not valid; expected a positive integer")
    f = fused.float()
    log_p = F.log_softmax(target_logits.float(), dim=1)
    log_f = torch.log(f.clamp_min(torch.finfo(torch.float32).tiny))
    return (f * (log_f - log_p)).sum() / n


def variant_target(variant: str, label_dist: Tensor, class_rows: Tensor, weight: Tensor) -> Tensor:
    """The target branch's target for a Table 2 variant: ``adadf`` the fusion (1-w)d + wD[y],
    ``ld_only`` the label distribution d, ``cd_only`` the class rows D[y]."""
    if variant == "adadf":
        return fuse(label_dist, class_rows, weight)
    if variant == "ld_only":
        return label_dist
    if variant == "cd_only":
        return class_rows
    raise ValueError(f"variant={variant!r} is not valid; expected one of {', '.join(VARIANTS)}")


def adadf_targets(aux_logits: Tensor, attention_pair: Tensor, labels: Tensor, class_dist: Tensor,
                  variant: str = "adadf", lam_min: float = 0.2, lam_max: float = 1.0,
                  detach_target: bool = False, gather: Optional[Callable[[Tensor], tuple[Tensor, int]]] = None
                  ) -> dict[str, Tensor]:
    """Targets of the target branch for one batch (docs/METHOD.md §2.4–§2.6 and the Table 2 variants).

    ``aux_logits`` o_1 [B, C], ``attention_pair`` raw (a_1, a_2) [B, 2], ``labels`` [B], ``class_dist``
    D [C, C] (always treated as a constant). Returns float32 tensors: ``label_dist`` d = softmax(o_1),
    ``class_rows`` D[y], ``attention`` the averaged ā [B], ``weight`` the normalised ŵ [B] and ``fused``:
    ``adadf`` (1-ŵ)d + ŵD[y], ``ld_only`` d, ``cd_only`` D[y]. Nothing is detached except D, unless
    ``detach_target`` (then ``fused`` is detached, so the KL loss no longer reaches branch 1 or the heads
    through the target). ``gather`` (several processes): returns every process's ā in rank order, with
    gradients, and where this process's rows start; ŵ is then normalised over that global batch (this
    process's slice is returned) and ``attention_all`` holds the global ā for the rank regularisation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not valid; expected one of {', '.join(VARIANTS)}")
    _check_2d("aux_logits", aux_logits)
    c = aux_logits.shape[1]
    if class_dist.shape != (c, c):
        raise ValueError(f"class_dist has shape {tuple(class_dist.shape)}; expected [{c}, {c}]")
    if attention_pair.dim() != 2 or attention_pair.shape != (aux_logits.shape[0], 2):
        raise ValueError(f"attention_pair has shape {tuple(attention_pair.shape)}; expected "
                         f"[{aux_logits.shape[0]}, 2]")
    label_dist = F.softmax(aux_logits.float(), dim=1)
    class_rows = class_dist.detach().float()[labels.to(device=class_dist.device, dtype=torch.long)]
    class_rows = class_rows.to(label_dist.device)
    attention = attention_pair.float().mean(dim=1)
    attention_all, start = (attention, 0) if gather is None else gather(attention)
    weight = normalize_attention(attention_all, lam_min, lam_max)[start:start + attention.shape[0]]
    fused = variant_target(variant, label_dist, class_rows, weight)
    if detach_target:
        fused = fused.detach()
    return dict(label_dist=label_dist, class_rows=class_rows, attention=attention, weight=weight,
                fused=fused, attention_all=attention_all)


def adadf_loss(out: dict, labels: Tensor, class_dist: Tensor, epoch: float, *,
               variant: str = "adadf", epoch_threshold: float = 3, lam_min: float = 0.2,
               lam_max: float = 1.0, rr_ratio: float = 0.7, rr_margin: float = 0.07,
               group_size: Optional[int] = None, kl_divisor: Optional[int] = None,
               detach_target: bool = False, rr_low_group: str = "rest",
               gather: Optional[Callable[[Tensor], tuple[Tensor, int]]] = None) -> dict:
    """The full Ada-DF step loss ``w_CE L_CE + w_KL L_KL + L_RR`` (docs/METHOD.md §2.9) from a model output dict.

    ``out`` holds ``logits`` (o_2), ``aux_logits`` (o_1) and ``attention`` [B, 2]. RR acts on the raw
    averaged attention ā in every variant. ``group_size`` / ``kl_divisor``: the configured batch under
    SFEW's ``crop_batch_quirk`` (None = the actual batch); ``rr_low_group`` as ``low_group`` of
    ``rank_regularization``; ``gather`` as in ``adadf_targets`` (RR then acts on the global batch, whose
    ``group_size`` is the global one). Returns ``loss``, ``loss_ce``, ``loss_kl``,
    ``loss_rr`` (float32 tensors), ``w_ce``, ``w_kl`` (floats) and everything ``adadf_targets`` returns.
    """
    labels = labels.to(device=out["aux_logits"].device, dtype=torch.long)
    w_ce, w_kl = loss_weights(epoch, epoch_threshold)
    targets = adadf_targets(out["aux_logits"], out["attention"], labels, class_dist, variant,
                            lam_min, lam_max, detach_target, gather)
    loss_ce = F.cross_entropy(out["aux_logits"].float(), labels)
    loss_kl = kl_target_loss(targets["fused"], out["logits"], kl_divisor)
    loss_rr = rank_regularization(targets["attention_all"], rr_ratio, rr_margin, group_size, rr_low_group)
    loss = w_ce * loss_ce + w_kl * loss_kl + loss_rr
    return dict(loss=loss, loss_ce=loss_ce, loss_kl=loss_kl, loss_rr=loss_rr, w_ce=w_ce, w_kl=w_kl,
                **targets)


# ------------------------------------------------------------------ SynthFER ambiguity logging
def kl_divergence(p: Tensor, q: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-row KL(p || q) for [B, C] distributions, float32 [B]; 0 log 0 = 0, q clamped at ``eps``."""
    _check_2d("p", p)
    if q.shape != p.shape:
        raise ValueError(f"q has shape {tuple(q.shape)}; expected {tuple(p.shape)} like p")
    p, q = p.float(), q.float()
    return (torch.xlogy(p, p) - p * torch.log(q.clamp_min(eps))).sum(dim=1)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Per-row Jensen-Shannon divergence (natural log, at most log 2) for [B, C] distributions, [B]."""
    _check_2d("p", p)
    if q.shape != p.shape:
        raise ValueError(f"q has shape {tuple(q.shape)}; expected {tuple(p.shape)} like p")
    p, q = p.float(), q.float()
    m = 0.5 * (p + q)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return 0.5 * (kl_pm + kl_qm)


def ambiguity_divergences(gt: Tensor, label_dist: Tensor, class_rows: Tensor, fused: Tensor,
                          eps: float = 1e-12) -> dict[str, Tensor]:
    """Per-sample divergences between ground-truth vote distributions ``gt`` [B, C] and the label,
    class and fused distributions: keys ``kl_gt_label``, ``kl_gt_class``, ``kl_gt_fused``,
    ``js_gt_label``, ``js_gt_class``, ``js_gt_fused`` (the metrics.csv columns), each float32 [B],
    detached. KL is KL(gt || other). Class rows under the ``code`` fallback do not sum to 1; they are
    renormalised here so the divergences stay comparable."""
    others = dict(label=label_dist, class_=class_rows / class_rows.sum(dim=1, keepdim=True),
                  fused=fused / fused.sum(dim=1, keepdim=True))
    result = {}
    with torch.no_grad():
        for name, other in others.items():
            key = name.rstrip("_")
            other = other.to(gt.device)
            result[f"kl_gt_{key}"] = kl_divergence(gt, other, eps)
            result[f"js_gt_{key}"] = js_divergence(gt, other)
    return {k: result[k] for k in ("kl_gt_label", "kl_gt_class", "kl_gt_fused",
                                   "js_gt_label", "js_gt_class", "js_gt_fused")}
