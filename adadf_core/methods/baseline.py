"""The baseline: a single ResNet trained with cross-entropy on the hard labels (docs/METHOD.md §5)."""
from __future__ import annotations

from adadf_core.methods.base import Method
from adadf_core.methods.registry import register_method


@register_method("baseline")
class BaselineMethod(Method):
    """Everything is the base class's: one network, cross-entropy, exponential learning-rate decay."""
