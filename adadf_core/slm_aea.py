"""SLM-AEA: Soft Label Mining + Average Expression Anchoring (Ming, Lu, Zhang, ACCV 2022).

Re-implemented from ``shared/docs/peer_methods.md`` section 2 on the shared ResNet-18 trainer.

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
:func:`soft_cross_entropy`. Modules: :class:`AEAHead`, :class:`AEANet`. Method: :class:`SLMAEAMethod`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .methods import Method, flatten_crops

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

    def anchor(self, f: torch.Tensor) -> torch.Tensor:
        """The anchor m used for this forward pass (with gradient in training / batch mode)."""
        if f.dim() != 2 or f.shape[1] != self.w.numel():
            raise ValueError(f"features must be [B, {self.w.numel()}], got {tuple(f.shape)}")
        if self.training:
            m = f.mean(dim=0)
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
                    pretrained: Optional[str] = None) -> AEANet:
    """The SLM-AEA network: a torchvision ResNet (fc replaced by Identity; optional local weights loaded
    with ``model.load_pretrained``) followed by a fresh AEA head (w = 1, new Linear(F, C))."""
    from adadf_core.model import load_pretrained, make_resnet

    trunk = make_resnet(backbone)
    report = load_pretrained(trunk, pretrained) if pretrained else None
    dim = trunk.fc.in_features
    trunk.fc = nn.Identity()
    net = AEANet(trunk, dim, num_classes, eval_mean=eval_mean)
    if pretrained:
        net.pretrained_source, net.load_report = str(pretrained), report
    return net


# ----------------------------------------------------------------------------- method

SCHEDULES = ("exponential", "cosine")


class SLMAEAMethod(Method):
    """SLM-AEA on the shared trainer.

    State: the soft-label logit table ``Z`` [N, C] (float32, model's device), initialised from the data
    set's (possibly noisy) labels with ``init_soft_logits(k=cfg.slm_k, p=cfg.slm_p)``. Per step: soft CE of
    the AEA network against softmax(Z[idx]) (a constant); after the optimizer step, ``slm_label_update``
    with the pre-step predictions and the ramps at the fractional epoch eps = t / S (t = global iteration,
    0-based; S = steps per epoch), step ``cfg.slm_step`` over the nominal batch ``cfg.slm_nominal_batch``.

    Schedule: ``cfg.slm_schedule``: ``"exponential"`` (default, the shared
    harmonised ExponentialLR(lr_gamma) per epoch) or ``"cosine"`` (SLM-AEA's native per-iteration cosine
    from ``cfg.lr`` down to 1e-6 over the whole run).

    Evaluation: ``cfg.slm_eval_mean`` ``"batch"`` uses the test batch's own mean feature (faithful; the
    test loader must not shuffle, batches fixed) or ``"running"`` (a running mean of training batch means).

    Extra metrics.csv columns per epoch: ``soft_max_mean`` (mean over the N samples of max_c softmax(z_i)),
    ``soft_disagree`` (share of samples whose soft-label argmax differs from the given label), ``slm_u`` /
    ``slm_d`` (ramps at the epoch's last update); with synthetic noise ``recovered_flipped`` (share of
    flipped samples whose soft-label argmax is the clean label).
    """

    name = "slm_aea"
    arch = "single"
    uses_attention = False
    lr_min = 1e-6

    def __init__(self, cfg, num_classes, train_set, device):
        super().__init__(cfg, num_classes, train_set, device)
        if cfg.slm_eval_mean not in EVAL_MEANS:
            raise ValueError(f"slm_eval_mean={cfg.slm_eval_mean!r} is not valid; expected one of "
                             f"{', '.join(EVAL_MEANS)}")
        self.schedule = cfg.slm_schedule
        if self.schedule not in SCHEDULES:
            raise ValueError(f"slm_schedule={self.schedule!r} is not valid; expected one of {', '.join(SCHEDULES)}")
        if cfg.slm_nominal_batch <= 0:
            raise ValueError(f"slm_nominal_batch must be > 0, got {cfg.slm_nominal_batch}")
        dev = self.device
        self.has_noise = False
        self.Z = torch.zeros(0, self.num_classes, device=dev)
        if train_set is not None:
            self.y_given = torch.as_tensor(train_set.labels).to(dev).long()
            self.clean = torch.as_tensor(train_set.clean_labels).to(dev).long()
            self.flipped = torch.as_tensor(train_set.flipped).to(dev).bool()
            self.has_noise = bool(self.flipped.any())
            self.Z = init_soft_logits(self.y_given, self.num_classes, k=cfg.slm_k, p=cfg.slm_p)
        self.last_ramps = (float("nan"), float("nan"))
        # faithful AEA evaluates with the test batch's own mean: fixed, unshuffled test batches of the
        # original size (the trainer's test loader does not shuffle and uses this batch size)
        self.eval_batch_size = int(cfg.slm_nominal_batch) if cfg.slm_eval_mean == "batch" else None

    # --- construction ----------------------------------------------------------------------------
    def build_model(self, pretrained: bool = True) -> nn.Module:
        cfg = self.cfg
        return build_aea_model(self.num_classes, cfg.backbone, eval_mean=cfg.slm_eval_mean,
                               pretrained=cfg.pretrained if pretrained else None)

    def make_scheduler(self, optimizer, steps_per_epoch: int):
        if self.schedule == "cosine":
            total = max(int(self.cfg.epochs) * int(steps_per_epoch), 1)
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=self.lr_min), "step"
        return super().make_scheduler(optimizer, steps_per_epoch)

    # --- step --------------------------------------------------------------------------------------
    def training_step(self, model, images, labels, indices, epoch, step, steps_per_epoch):
        images, labels, indices, n_crops = flatten_crops(images, labels, indices)
        indices = indices.to(self.device).long()
        labels = labels.to(self.device).long()
        out = model(images)
        logits = out["logits"].float()
        target = torch.softmax(self.Z[indices], dim=1)
        loss = soft_cross_entropy(logits, target)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean()
            self.step_ctx.update(probs=torch.softmax(logits.detach(), 1), indices=indices, labels=labels,
                                 n_crops=n_crops, eps=((int(epoch) - 1) * steps_per_epoch + step) / steps_per_epoch)
        return loss, {"loss": loss.detach(), "loss_ce": loss.detach(), "train_acc": acc}

    @torch.no_grad()
    def after_optimizer_step(self, model, ctx: dict) -> None:
        if "probs" not in ctx:
            return
        probs, idx, y, n = ctx["probs"], ctx["indices"], ctx["labels"], ctx["n_crops"]
        if n is not None:                          # crops: one update per image from the mean prediction
            probs = probs.view(-1, n, probs.shape[1]).mean(1)
            idx, y = idx.view(-1, n)[:, 0], y.view(-1, n)[:, 0]
        cfg = self.cfg
        u, d = slm_ramps(ctx["eps"], cfg.slm_alpha, cfg.slm_beta)
        self.last_ramps = (u, d)
        self.Z[idx] = slm_label_update(self.Z[idx], probs, y, u, d, step=cfg.slm_step,
                                       nominal_batch=cfg.slm_nominal_batch)

    @torch.no_grad()
    def on_epoch_end(self, model, epoch, train_loader) -> dict[str, float]:
        out = {"slm_u": self.last_ramps[0], "slm_d": self.last_ramps[1]}
        if self.Z.numel():
            q = torch.softmax(self.Z, dim=1)
            top = q.argmax(1)
            out["soft_max_mean"] = float(q.max(1).values.mean())
            out["soft_disagree"] = float((top != self.y_given).float().mean())
            if self.has_noise:
                out["recovered_flipped"] = float((top[self.flipped] == self.clean[self.flipped]).float().mean())
        return out

    def soft_labels(self) -> torch.Tensor:
        """The current soft labels softmax(Z) [N, C] (CPU)."""
        return torch.softmax(self.Z, dim=1).cpu()

    # --- checkpoint --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"Z": self.Z.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        Z = torch.as_tensor(state["Z"]).float()
        if Z.dim() != 2 or Z.shape[1] != self.num_classes or (
                self.train_set is not None and Z.shape != self.Z.shape):
            raise ValueError(f"SLM state has a soft-label table of shape {tuple(Z.shape)}; expected "
                             f"{tuple(self.Z.shape) if self.train_set is not None else ('N', self.num_classes)}")
        self.Z = Z.to(self.device)
