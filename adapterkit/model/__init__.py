"""The model a recipe describes: the backbone, the task head and the adapter, assembled for training
(`assemble.py`) or rebuilt from a run directory (`load.py`).

    backbone.py    local folders, `package:NAME`, GGUF; full precision, LLM.int8, NF4
    assemble.py    backbone + head + adapter -> one trainable model (`build`)
    load.py        a run directory -> the trained model (or its base, for zero-shot scoring)
    recipe.py      recipes validated against the method and head registries
    warmstart.py   `adapter.init_from`: start from a trained adapter (and head)
    fast_int8.py   the `int8_matmul: dequantize` path
    inspect.py     `adapterkit inspect`: module tree, targets and trainable parameters per method
"""

from ..lazy import lazy_attributes
from .recipe import REGISTRIES, load_recipe, load_run_recipe, opted_in, recipe_from_dict

# Building and loading models needs torch, transformers and PEFT (seconds to import): they load on first use, so
# checking a recipe, `--help` and a command refusing bad input import none of them.
_LAZY = {
    **dict.fromkeys(
        ("build", "build_task_model", "head_state_dict", "is_mergeable", "set_head_trainable", "trainable_parameters"),
        "assemble",
    ),
    **dict.fromkeys(("LoadedRun", "load_base", "load_run"), "load"),
    **dict.fromkeys(("RUN_FILES", "require_finished"), "identity"),
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "build",
    "build_task_model",
    "head_state_dict",
    "is_mergeable",
    "set_head_trainable",
    "trainable_parameters",
    "LoadedRun",
    "RUN_FILES",
    "load_base",
    "load_run",
    "require_finished",
    "REGISTRIES",
    "load_recipe",
    "load_run_recipe",
    "opted_in",
    "recipe_from_dict",
]
