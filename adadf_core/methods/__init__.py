"""Training methods as plug-ins: one file per method, each registered with ``@register_method``.

    baseline.py   ResNet-18 + cross-entropy                                     "baseline"
    adadf.py      Ada-DF and its ablation variants (the method)                 "adadf", "ld_only", "cd_only"
    diagnostics.py what Ada-DF and SCN record for notebooks 05-07 (not the method)
    scn.py        SCN on the shared trainer                                     "scn"
    slm_aea.py    SLM-AEA on the shared trainer                                 "slm_aea"

The protocol the trainer calls is in ``base.py``. Adding a method is adding its file: a ``Method`` subclass
with ``@register_method("name")`` and, at the top, its options (``OPTIONS``, ``PRESETS``, ``NATIVE_RECIPE``:
docs/METHOD.md §14). Every module of this folder is imported below, in file-name order.
"""
from __future__ import annotations

import importlib
import pkgutil

from adadf_core.methods.base import EpochRecord, Method, RunContext, flatten_crops, unwrap
from adadf_core.methods.registry import METHODS, register_method

# each method file registers its classes when imported (config.method_files reads the same files, same order)
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")


def method_names() -> tuple[str, ...]:
    """Every registered method name, in registration order."""
    return tuple(METHODS)


def get_method(name: str) -> type:
    """The ``Method`` class registered under ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def build_model_for(cfg, num_classes: int, pretrained: bool = True):
    """The network of ``cfg.method`` (on the CPU), with ``cfg.pretrained`` loaded when ``pretrained``."""
    return get_method(cfg.method).build_model(cfg, num_classes, cfg.pretrained if pretrained else None)


__all__ = ["EpochRecord", "Method", "RunContext", "flatten_crops", "unwrap", "METHODS", "register_method",
           "method_names", "get_method", "build_model_for"]
