"""SLM-AEA: Soft Label Mining + Average Expression Anchoring (Ming, Lu, Zhang, ACCV 2022).

Re-implemented from docs/METHOD.md §11 on the shared ResNet-18 trainer.

* **SLM**: every training sample i owns a logit vector z_i (an N x C table kept by the method on the
  model's device). The network is trained with soft cross-entropy against softmax(z_i); after each
  optimizer step the z's of the batch take one closed-form gradient step that pulls softmax(z_i) toward
  the (detached, pre-step) network prediction (weight u) and toward the given hard label (weight d).
* **AEA**: the pooled feature f_i becomes g_i = f_i + w * mean_batch(f) before the classifier, with a
  learnable w initialised to ones. In the faithful mode (``eval_mean="batch"``) the *test* batch mean is
  used at evaluation, so predictions depend on the batch composition: the test loader must **not
  shuffle** and should use fixed batches (72 in the original). ``eval_mean="running"`` is the
  non-transductive variant: a running mean of the training batch means is used at evaluation.

Pure tensor functions: :func:`slm_ramps`, :func:`init_soft_logits`, :func:`slm_label_update`,
:func:`soft_cross_entropy`. Modules: :class:`AEAHead`, :class:`AEANet`. The training method is
``methods/slm_aea.py``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


EVAL_MEANS = ("batch", "running")


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


# ----------------------------------------------------------------------------- AEA modules

class AEAHead(nn.Module):
    """Average expression anchoring + classifier: g = f + w * mean_batch(f); logits = fc(g).

    ``eval_mean``: ``"batch"`` (faithful: the evaluation batch's own mean; do not shuffle the test
    loader) or ``"running"`` (a running mean of the training batch means, momentum ``momentum``).
    The running mean is tracked in both modes, so a model trained in one mode can be evaluated in the other
    by setting ``head.eval_mean``.
    """

    def __init__(self, in_features: int, num_classes: int, eval_mean: str = "batch", momentum: float = 0.1):
        super().__init__()
        if eval_mean not in EVAL_MEANS:
            raise ValueError(f"eval_mean must be one of {EVAL_MEANS}, got {eval_mean!r}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.eval_mean = eval_mean
        self.momentum = momentum
        self.w = nn.Parameter(torch.ones(in_features))
        self.fc = nn.Linear(in_features, num_classes)
        self.register_buffer("running_mean", torch.zeros(in_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))
        # several processes: the global batch's rows of f (an autograd all-gather) for the training anchor,
        # so that N processes with B/N images anchor on the mean one process with B would; None: this batch
        self.gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def anchor(self, f: torch.Tensor) -> torch.Tensor:
        """The anchor m used for this forward pass (with gradient in training / batch mode)."""
        if f.dim() != 2 or f.shape[1] != self.w.numel():
            raise ValueError(f"features must be [B, {self.w.numel()}], got {tuple(f.shape)}")
        if self.training:
            gather = getattr(self, "gather", None)       # absent in heads pickled before it existed
            m = (gather(f) if gather is not None else f).mean(dim=0)
            with torch.no_grad():
                mb = m.detach().float()
                if int(self.num_batches_tracked) == 0:
                    self.running_mean.copy_(mb)
                else:
                    self.running_mean.lerp_(mb, self.momentum)
                self.num_batches_tracked += 1
            return m
        if self.eval_mean == "batch":
            return f.mean(dim=0)
        return self.running_mean.to(f.dtype)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        g = f + self.w.to(f.dtype) * self.anchor(f)
        return self.fc(g)


class AEANet(nn.Module):
    """A feature trunk (images -> pooled features [B, F]) followed by :class:`AEAHead`.

    ``forward`` returns ``dict(logits=[B, C], features=[B, F])`` where ``features`` are the pooled
    (un-anchored) trunk features. ``pretrained_source`` / ``load_report`` record the weights, as in
    ``model.SingleNet``.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, num_classes: int, eval_mean: str = "batch"):
        super().__init__()
        self.trunk = trunk
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.head = AEAHead(feature_dim, num_classes, eval_mean=eval_mean)
        self.pretrained_source = "scratch"
        self.load_report = None

    def forward(self, x: torch.Tensor) -> dict:
        f = self.trunk(x)
        if f.dim() != 2:
            f = torch.flatten(f, 1)
        return {"logits": self.head(f), "features": f}

    def forward_target(self, x: torch.Tensor) -> dict:
        """Same as ``forward`` (one branch), for evaluation code that calls ``forward_target``."""
        return self.forward(x)


def build_aea_model(num_classes: int, backbone: str = "resnet18", eval_mean: str = "batch",
                    pretrained: Optional[str] = None, trust_pickle: bool = False) -> AEANet:
    """The SLM-AEA network: a torchvision ResNet (fc replaced by Identity; optional local weights loaded
    with ``model.load_pretrained``) followed by a fresh AEA head (w = 1, new Linear(F, C))."""
    from adadf_core.model import load_pretrained, make_resnet

    trunk = make_resnet(backbone)
    report = load_pretrained(trunk, pretrained, trust_pickle) if pretrained else None
    dim = trunk.fc.in_features
    trunk.fc = nn.Identity()
    net = AEANet(trunk, dim, num_classes, eval_mean=eval_mean)
    if pretrained:
        net.pretrained_source, net.load_report = str(pretrained), report
    return net
