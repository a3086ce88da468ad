"""The one list of training methods: each method's file registers its class with ``@register_method``
(as timm's ``@register_model``), and config, CLI, studies and notebooks read the names from here."""
from __future__ import annotations

from typing import Callable

METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register_method("scn")`` adds the class under ``name`` (and sets ``cls.name``)."""
    def add(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].__name__}, {cls.__name__})")
        cls.name = name
        METHODS[name] = cls
        return cls
    return add
