"""SLM-AEA's pure tensor functions: Soft Label Mining (Ming, Lu, Zhang, ACCV 2022; docs/METHOD.md §11).

Every training sample i owns a logit vector z_i (an N x C table kept by the method on the model's device). The
network is trained with soft cross-entropy against softmax(z_i); after each optimizer step the z's of the batch
take one closed-form gradient step that pulls softmax(z_i) toward the (detached, pre-step) network prediction
(weight u) and toward the given hard label (weight d).

Functions: :func:`slm_ramps`, :func:`init_soft_logits`, :func:`slm_label_update`, :func:`soft_cross_entropy`. The
network with the AEA head is `models/aea.py`; the training method is ``methods/slm_aea.py``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- pure functions

def slm_ramps(eps: float, alpha: float = 1.6, beta: float = 7.0) -> tuple[float, float]:
    """Ramp weights (u on the prediction, d on the hard label) at fractional epoch ``eps`` = t / S.

    ``eps <= beta``: u = exp(-(alpha - eps/beta)^2), d = 1; afterwards u = 1, d = exp(-(alpha - beta/eps)^2).
    The jump at ``eps = beta`` is kept, as in the authors' code.
    """
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite fractional epoch >= 0, got {eps!r}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if eps <= beta:
        return math.exp(-(alpha - eps / beta) ** 2), 1.0
    return 1.0, math.exp(-(alpha - beta / eps) ** 2)


def init_soft_logits(labels: torch.Tensor, num_classes: int, k: float = 5.0, p: float = 0.97) -> torch.Tensor:
    """Initial soft-label logits [N, C]: k on the given label, k + ln((1-p) / (p (C-1))) elsewhere.

    softmax of each row is p on the label and (1-p)/(C-1) on every other class.
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} dtype {labels.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    other = k + math.log((1.0 - p) / (p * (num_classes - 1)))
    z = torch.full((labels.numel(), num_classes), other, dtype=torch.float32, device=labels.device)
    z.scatter_(1, labels.long().view(-1, 1), float(k))
    return z


def slm_label_update(z: torch.Tensor, pred_probs: torch.Tensor, labels: torch.Tensor, u: float, d: float,
                     step: float = 200.0, nominal_batch: int = 72) -> torch.Tensor:
    """One closed-form gradient step on the soft-label logits (returns a new tensor).

    z <- z - (step / nominal_batch) * [u (softmax(z) - pi) + d (softmax(z) - onehot(y))].
    ``pred_probs`` (pi) must be a detached probability vector per row; the update then sums to zero over
    classes, so sum_c z_c is preserved.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be [B, C], got shape {tuple(z.shape)}")
    if pred_probs.shape != z.shape:
        raise ValueError(f"pred_probs shape {tuple(pred_probs.shape)} != z shape {tuple(z.shape)}")
    if labels.dim() != 1 or labels.numel() != z.shape[0]:
        raise ValueError(f"labels must be [B] with B = {z.shape[0]}, got shape {tuple(labels.shape)}")
    if nominal_batch <= 0:
        raise ValueError(f"nominal_batch must be > 0, got {nominal_batch}")
    z32 = z.float()
    pi = pred_probs.detach().float()
    q = torch.softmax(z32, dim=1)
    onehot = F.one_hot(labels.long(), z.shape[1]).to(q.dtype)
    grad = u * (q - pi) + d * (q - onehot)
    return (z32 - (step / nominal_batch) * grad).to(z.dtype)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c q_c log softmax(logits)_c (the target gets no gradient)."""
    if logits.dim() != 2 or logits.shape != target_probs.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target_probs {tuple(target_probs.shape)} "
                         "must both be [B, C]")
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(target_probs.detach().float() * logp).sum(dim=1).mean()
