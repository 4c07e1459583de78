"""Package attributes that import their module on first use (PEP 562): the registries, recipe checks and `--help`
stay free of torch, transformers and PEFT, which take seconds to import."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: attribute name -> the submodule (relative, e.g. "assemble") holding it."""

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(f".{where[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
