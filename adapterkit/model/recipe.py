"""Recipes validated against the method and head registries: what `adapterkit.load_recipe` and every command use.

The config layer checks structure only; here the built-in registries are imported (with PEFT, for the
bottleneck method's type) and handed to validation, after the plugins the recipe names have been imported."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..adapters import METHODS
from ..errors import RunDirError
from ..heads import HEADS

# The live dicts: a method or head registered later (by a plugin) is seen by the next validation.
REGISTRIES = config.Registries(methods=METHODS, heads=HEADS)


def recipe_from_dict(data: Any, overrides: Sequence[str] = (), source: str = "recipe") -> config.Recipe:
    return config.recipe_from_dict(data, overrides, source, registries=REGISTRIES)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> config.Recipe:
    return config.load_recipe(path, overrides, registries=REGISTRIES)


@dataclass(frozen=True)
class OptIns:
    """What the user allowed on this command's line for the run folders it reads: plugin modules to import
    (`--plugin`) and model code shipped with the backbone (`--trust-remote-code`)."""

    plugins: frozenset[str] = frozenset()
    trust_remote_code: bool = False


_OPT_INS: ContextVar[OptIns] = ContextVar("adapterkit_opt_ins", default=OptIns())  # noqa: B039  (frozen: never mutated)


@contextmanager
def opted_in(plugins=(), trust_remote_code: bool = False):
    """Within the block, run folders may name these plugins and trust remote code; the plugins are imported now."""
    from ..plugins import import_plugin

    for name in plugins:
        import_plugin(name, "--plugin")
    token = _OPT_INS.set(OptIns(frozenset(plugins), bool(trust_remote_code)))
    try:
        yield
    finally:
        _OPT_INS.reset(token)


def load_run_recipe(run: str | Path) -> config.Recipe:
    """A run folder's recipe.yaml, read as data: someone else's run (a copy, a download) must not run code because a
    file in it says so. Plugins it names are imported only when the user passed --plugin for them, and
    `backbone.trust_remote_code: true` needs --trust-remote-code."""
    path = Path(run) / "recipe.yaml"
    allowed = _OPT_INS.get()
    recipe = config.load_recipe(path, registries=REGISTRIES, allowed_plugins=allowed.plugins)
    if recipe.backbone.trust_remote_code and not allowed.trust_remote_code:
        raise RunDirError(
            f"{path}: backbone.trust_remote_code is true; a run folder's files never allow model code on their "
            f"own: pass --trust-remote-code to this command if you trust {recipe.backbone.path}"
        )
    return recipe
