"""Recipes validated against the method and head registries: what `adapterkit.load_recipe` and every command use.

The config layer checks structure only; here the built-in registries are imported (with PEFT, for the
bottleneck method's type) and handed to validation, after the plugins the recipe names have been imported."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import config
from ..adapters import METHODS
from ..heads import HEADS

# The live dicts: a method or head registered later (by a plugin) is seen by the next validation.
REGISTRIES = config.Registries(methods=METHODS, heads=HEADS)


def recipe_from_dict(data: Any, overrides: list[str] = (), source: str = "recipe") -> config.Recipe:
    return config.recipe_from_dict(data, overrides, source, registries=REGISTRIES)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> config.Recipe:
    return config.load_recipe(path, overrides, registries=REGISTRIES)
