"""Models: the two-branch Ada-DF network and a single ResNet (docs/METHOD.md §1 and §8).

* ``AdaDFNet``: shared frozen trunk (stem + layer1), an auxiliary branch 1 and a target branch 2
  (layer2..4, pool, fc), one attention head per branch. ``forward`` returns ``logits`` (o_2),
  ``aux_logits`` (o_1), ``attention`` (raw a_1, a_2 as [B, 2]) and ``features`` (h_2);
  ``forward_target`` runs the target branch only (inference).
* ``SingleNet``: one ResNet with a new fc and an optional SCN-style attention
  head; used by the baseline and the comparison methods.
* ``build_model`` builds either; ``load_pretrained`` loads a local checkpoint (never downloads).
"""
from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn
import torchvision
from torch import Tensor

from adadf_core.utils.checkpoints import CheckpointError, load
from adadf_core.utils.fileio import sha256_file

BACKBONES = ("resnet18", "resnet50")
ATTENTION_ON = ("logits", "features")
ARCHS = ("adadf", "single")
TRUNK_NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1")
BRANCH_NAMES = ("layer2", "layer3", "layer4")

__all__ = ["AdaDFNet", "SingleNet", "LoadReport", "PretrainedLoadError", "build_model", "load_model_state",
           "load_pretrained", "make_resnet", "BACKBONES", "ATTENTION_ON", "ARCHS"]


# ----------------------------------------------------------------------------------- pretrained
class PretrainedLoadError(ValueError):
    """A checkpoint that cannot be read or does not fit the ResNet layout."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: ``loaded`` keys (torchvision layout), ``ignored`` keys (fc.*),
    ``defaulted`` BatchNorm ``num_batches_tracked`` buffers the file lacks (old checkpoints), the file
    ``layout`` (``state_dict`` wrapper or ``raw``) and whether ``module.`` prefixes were stripped."""
    path: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)
    stripped_prefix: bool = False
    expected: int = 0                       # the model's non-fc tensors (M in "loaded N of M")
    sha256: str = ""                        # of the file's bytes: recorded in the run's config.json
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} of {self.expected} tensors from {self.path} ({self.layout} layout"
                f"{', module. prefix stripped' if self.stripped_prefix else ''}; sha256 {self.sha256[:16]}); "
                f"ignored {', '.join(self.ignored) or 'nothing'}")


def _read_state_dict(path: Path, trust_pickle: bool = False) -> tuple[dict[str, Tensor], str, bool]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict in torchvision key naming. The file is
    read with ``weights_only`` (no code from it runs) unless ``trust_pickle``."""
    if not path.is_file():
        raise PretrainedLoadError(f"pretrained weights file {path} does not exist (nothing is ever "
                                  f"downloaded; pass a local path or None to train from scratch)")
    try:
        obj = load(path, "pretrained weights", trust_pickle=trust_pickle)
    except CheckpointError as error:
        raise PretrainedLoadError(str(error)) from None
    layout = "raw"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, layout = obj["state_dict"], "state_dict"
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise PretrainedLoadError(f"pretrained weights {path} are not a state dict: expected "
                                  f"{{'state_dict': {{name: tensor}}}} or {{name: tensor}}, found {found}")
    stripped = False
    state = {}
    for key, value in obj.items():
        while key.startswith("module."):
            key, stripped = key[len("module."):], True
        state[key] = value
    return state, layout, stripped


def _load_into_resnet(resnet: nn.Module, path: Path, trust_pickle: bool = False) -> LoadReport:
    state, layout, stripped = _read_state_dict(path, trust_pickle)
    own = resnet.state_dict()
    expected = {k for k in own if not k.startswith("fc.")}
    given = {k for k in state if not k.startswith("fc.")}
    missing = sorted(k for k in expected - given if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given - expected)
    mismatched = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                        for k in expected & given if state[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {', '.join(mismatched)}")
        raise PretrainedLoadError(f"pretrained weights {path} do not fit the model's torchvision-layout "
                                  f"ResNet; " + "; ".join(parts))
    with torch.no_grad():
        for key in sorted(given):
            own[key].copy_(state[key].to(own[key].dtype))
    return LoadReport(path=str(path), layout=layout, loaded=sorted(given),
                      ignored=sorted(k for k in state if k.startswith("fc.")),
                      defaulted=sorted(expected - given), stripped_prefix=stripped, expected=len(expected),
                      warnings=untrained_signs(state))


def untrained_signs(state: dict[str, Tensor]) -> list[str]:
    """Why a ResNet state dict looks untrained (empty when it does not): every BatchNorm layer still at
    its initial values (weight 1, bias 0, running mean 0, running variance 1), or every weight finite
    but the whole file constant."""
    bn = [k[: -len(".running_mean")] for k in state if k.endswith(".running_mean")]
    def initial(prefix: str) -> bool:
        parts = {n: state.get(f"{prefix}.{n}") for n in ("weight", "bias", "running_mean", "running_var")}
        return all(t is not None for t in parts.values()) and bool(
            (parts["weight"] == 1).all() and (parts["bias"] == 0).all()
            and (parts["running_mean"] == 0).all() and (parts["running_var"] == 1).all())
    if bn and all(initial(p) for p in bn):
        return [f"all {len(bn)} BatchNorm layers hold their initial values (weight 1, bias 0, running mean 0, "
                "variance 1): the weights look untrained (a freshly initialised network saved to a file?)"]
    return []


def make_resnet(backbone: str = "resnet18") -> torchvision.models.ResNet:
    """A randomly initialised torchvision ResNet with its 1000-way fc (no download)."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r} is not valid; expected one of {', '.join(BACKBONES)}")
    return getattr(torchvision.models, backbone)(weights=None)


def _as_resnet_view(module: nn.Module) -> nn.Module:
    """Return a torchvision-layout view of ``module`` for loading (shares parameters)."""
    if isinstance(module, torchvision.models.ResNet):
        return module
    if isinstance(module, SingleNet):
        return module.net
    if isinstance(module, AdaDFNet):
        return module.resnet_views()
    raise TypeError(f"load_pretrained expects a torchvision ResNet, SingleNet or AdaDFNet; "
                    f"got {type(module).__name__}")


def load_pretrained(module_or_resnet: nn.Module, path: Union[str, Path], trust_pickle: bool = False,
                    verbose: bool = True) -> LoadReport:
    """Load local weights into a torchvision ResNet (or both branches of an ``AdaDFNet`` / a
    ``SingleNet``). Accepts ``{'state_dict': sd}`` (the MS-Celeb ``resnet18_msceleb.pth`` layout), a raw
    state dict or a torchvision ImageNet checkpoint; strips ``module.`` prefixes. Every non-fc key must
    fit exactly (fc.* is ignored; ``num_batches_tracked`` may be absent in old files), otherwise a
    ``PretrainedLoadError`` names the path and the missing / unexpected / mismatched keys. Prints
    ``loaded N of M tensors`` with the file's SHA-256 (``verbose``) and warns when the weights look
    untrained (`untrained_signs`)."""
    path = Path(path)
    target = _as_resnet_view(module_or_resnet)
    if isinstance(target, list):  # AdaDFNet: one view per branch, the trunk shared
        report = [_load_into_resnet(view, path, trust_pickle) for view in target][0]
    else:
        report = _load_into_resnet(target, path, trust_pickle)
    report.sha256 = sha256_file(path)[1]
    if verbose:
        print(f"pretrained weights: {report}")
    for text in report.warnings:
        warnings.warn(f"pretrained weights {path}: {text}", stacklevel=2)
    return report


# ----------------------------------------------------------------------------------------- models
class _Branch(nn.Module):
    """layer2, layer3, layer4, global average pool and the classifier fc."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.layer2, self.layer3, self.layer4 = resnet.layer2, resnet.layer3, resnet.layer4
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = resnet.fc

    def features(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(x)))
        return torch.flatten(self.avgpool(x), 1)


def _head_output(fc: nn.Linear, head: nn.Linear, h: Tensor, attention_on: str) -> tuple[Tensor, Tensor]:
    """(output, attention [B]): logits mode a * (W h + b); features mode W (a h) + b."""
    a = torch.sigmoid(head(h))
    out = a * fc(h) if attention_on == "logits" else fc(a * h)
    return out, a[:, 0]


def _check_choices(backbone: str, attention_on: str, num_classes: int) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r} is not valid; expected one of {', '.join(BACKBONES)}")
    if attention_on not in ATTENTION_ON:
        raise ValueError(f"attention_on={attention_on!r} is not valid; expected one of {', '.join(ATTENTION_ON)}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is not valid; expected an integer >= 2")


class AdaDFNet(nn.Module):
    """Ada-DF's dual-branch network (docs/METHOD.md §1).

    ``trunk`` (conv1, bn1, relu, maxpool, layer1) is frozen (requires_grad False) when ``freeze_trunk``
    but stays in train mode so its BatchNorm statistics update, as in the authors' code; with
    ``freeze_trunk_bn`` the trunk's BatchNorm layers stay in eval mode even after ``model.train()``.
    ``branch1`` (auxiliary) and ``branch2`` (target) start identical, including the new fc;
    ``head1`` / ``head2`` are independently initialised Linear(F, 1) attention heads.
    """

    def __init__(self, num_classes: int = 7, backbone: str = "resnet18", attention_on: str = "logits",
                 freeze_trunk: bool = True, freeze_trunk_bn: bool = False,
                 pretrained: Optional[Union[str, Path]] = None, trust_pickle: bool = False):
        super().__init__()
        _check_choices(backbone, attention_on, num_classes)
        self.num_classes, self.backbone, self.attention_on = int(num_classes), backbone, attention_on
        resnet = make_resnet(backbone)
        self.load_report = load_pretrained(resnet, pretrained, trust_pickle) if pretrained is not None else None
        self.pretrained_source = str(pretrained) if pretrained is not None else "scratch"
        self.feature_dim = resnet.fc.in_features
        resnet.fc = nn.Linear(self.feature_dim, self.num_classes)
        self.trunk = nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in TRUNK_NAMES))
        self.branch1 = _Branch(resnet)
        self.branch2 = copy.deepcopy(self.branch1)
        self.head1 = nn.Linear(self.feature_dim, 1)
        self.head2 = nn.Linear(self.feature_dim, 1)
        if freeze_trunk:
            for p in self.trunk.parameters():
                p.requires_grad_(False)
        self.freeze_trunk_bn = bool(freeze_trunk_bn)
        self.train()

    def set_freeze_trunk_bn(self, flag: bool) -> "AdaDFNet":
        """Keep (True) or stop keeping (False) the trunk's BatchNorm layers in eval mode."""
        self.freeze_trunk_bn = bool(flag)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "AdaDFNet":
        super().train(mode)
        if mode and self.freeze_trunk_bn:
            for m in self.trunk.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def resnet_views(self) -> list[nn.Module]:
        """Two torchvision-layout views (shared trunk + branch k) for ``load_pretrained``."""
        views = []
        for branch in (self.branch1, self.branch2):
            view = nn.Module()
            for name in TRUNK_NAMES:
                setattr(view, name, getattr(self.trunk, name))
            for name in BRANCH_NAMES:
                setattr(view, name, getattr(branch, name))
            view.fc = branch.fc
            views.append(view)
        return views

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        s = self.trunk(x)
        h1 = self.branch1.features(s)
        h2 = self.branch2.features(s)
        o1, a1 = _head_output(self.branch1.fc, self.head1, h1, self.attention_on)
        o2, a2 = _head_output(self.branch2.fc, self.head2, h2, self.attention_on)
        return dict(logits=o2, aux_logits=o1, attention=torch.stack((a1, a2), dim=1), features=h2)

    def forward_aux(self, x: Tensor) -> dict[str, Tensor]:
        """Auxiliary branch only (the mining pass needs o_1 alone, docs/METHOD.md §4): ``aux_logits`` o_1,
        ``attention`` a_1 [B]; the same values as ``forward``'s, without branch 2."""
        h1 = self.branch1.features(self.trunk(x))
        o1, a1 = _head_output(self.branch1.fc, self.head1, h1, self.attention_on)
        return dict(aux_logits=o1, attention=a1)

    def forward_target(self, x: Tensor) -> dict[str, Tensor]:
        """Target branch only (inference): ``logits`` o_2, ``features`` h_2, ``attention`` a_2 [B]."""
        h2 = self.branch2.features(self.trunk(x))
        o2, a2 = _head_output(self.branch2.fc, self.head2, h2, self.attention_on)
        return dict(logits=o2, features=h2, attention=a2)


class SingleNet(nn.Module):
    """One torchvision ResNet with a new fc (nothing frozen) for the baseline and comparison methods.

    With ``attention_head`` an SCN-style head a = sigmoid(Linear(F, 1)(h)) is added: ``logits`` mode
    outputs a * (W h + b), ``features`` mode W (a h) + b; ``attention`` [B] is then in the output.
    """

    def __init__(self, num_classes: int = 7, backbone: str = "resnet18", attention_head: bool = False,
                 attention_on: str = "logits", pretrained: Optional[Union[str, Path]] = None,
                 trust_pickle: bool = False):
        super().__init__()
        _check_choices(backbone, attention_on, num_classes)
        self.num_classes, self.backbone, self.attention_on = int(num_classes), backbone, attention_on
        self.net = make_resnet(backbone)
        self.load_report = load_pretrained(self.net, pretrained, trust_pickle) if pretrained is not None else None
        self.pretrained_source = str(pretrained) if pretrained is not None else "scratch"
        self.feature_dim = self.net.fc.in_features
        self.net.fc = nn.Linear(self.feature_dim, self.num_classes)
        self.head = nn.Linear(self.feature_dim, 1) if attention_head else None

    def features(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.features(x)
        if self.head is None:
            return dict(logits=self.net.fc(h), features=h)
        out, a = _head_output(self.net.fc, self.head, h, self.attention_on)
        return dict(logits=out, features=h, attention=a)

    def forward_target(self, x: Tensor) -> dict[str, Tensor]:
        """Same as ``forward`` (one branch); lets evaluation call ``forward_target`` on any model."""
        return self.forward(x)


def build_model(arch: str, num_classes: int, backbone: str = "resnet18", attention_on: str = "logits",
                pretrained: Optional[Union[str, Path]] = None, attention_head: bool = False,
                freeze_trunk_bn: bool = False, trust_pickle: bool = False) -> nn.Module:
    """Build ``"adadf"`` (``AdaDFNet``) or ``"single"`` (``SingleNet``). ``pretrained`` is a local
    weights path or None (scratch); ``model.pretrained_source`` records which, ``model.load_report``
    what was loaded. ``attention_head`` applies to ``single`` only (AdaDFNet always has two heads);
    ``freeze_trunk_bn`` to ``adadf`` only. ``trust_pickle`` reads a weights file that a plain (code-free)
    read refuses: only for files you trust."""
    if arch == "adadf":
        return AdaDFNet(num_classes, backbone, attention_on, freeze_trunk=True,
                        freeze_trunk_bn=freeze_trunk_bn, pretrained=pretrained, trust_pickle=trust_pickle)
    if arch == "single":
        return SingleNet(num_classes, backbone, attention_head=attention_head, attention_on=attention_on,
                         pretrained=pretrained, trust_pickle=trust_pickle)
    raise ValueError(f"arch={arch!r} is not valid; expected one of {', '.join(ARCHS)}")


def load_model_state(model: nn.Module, state: dict, source) -> None:
    """``model.load_state_dict(state)`` with an error naming the file and what does not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()
        detail = " ".join(line.strip() for line in first[:6])
        raise ValueError(f"checkpoint {source} does not fit the model "
                         f"({type(model).__name__}): {detail}") from None
