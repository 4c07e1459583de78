"""User plugins named in a recipe (`task.plugin: my_heads`): an ordinary Python import of a module the user opted
into, so it can call register_head / register_method. Recipe strings themselves are never evaluated."""

from __future__ import annotations

import importlib
import os
import re
import sys

from .errors import RecipeError


def import_plugin(name: str, field: str = "task.plugin"):
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        raise RecipeError(f"{field}: {name!r} is not a Python module name (e.g. examples.custom_head)")
    # Like `python -m`, look in the current directory too, so a module beside the recipes is found by the CLI.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and name.startswith(e.name):
            raise RecipeError(
                f"{field}: no module named {name!r} (install it or run from the folder that contains it)"
            ) from None
        raise RecipeError(f"{field}: importing {name!r} failed: {e}") from e
    except RecipeError:
        raise
    except Exception as e:  # the user's module has a bug: say where, in one line
        raise RecipeError(
            f"{field}: importing {name!r} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
