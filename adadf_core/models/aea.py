"""SLM-AEA's network: Average Expression Anchoring (docs/METHOD.md §11).

The pooled feature f_i becomes g_i = f_i + w * mean_batch(f) before the classifier, with a learnable w initialised
to ones. In the faithful mode (``eval_mean="batch"``) the *test* batch mean is used at evaluation, so predictions
depend on the batch composition: the test loader must **not shuffle** and should use fixed batches (72 in the
original). ``eval_mean="running"`` is the non-transductive variant: a running mean of the training batch means is
used at evaluation.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from adadf_core.models.networks import load_pretrained, make_resnet


EVAL_MEANS = ("batch", "running")


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
    ``networks.SingleNet``.
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
    trunk = make_resnet(backbone)
    report = load_pretrained(trunk, pretrained, trust_pickle) if pretrained else None
    dim = trunk.fc.in_features
    trunk.fc = nn.Identity()
    net = AEANet(trunk, dim, num_classes, eval_mean=eval_mean)
    if pretrained:
        net.pretrained_source, net.load_report = str(pretrained), report
    return net
