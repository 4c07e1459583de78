"""adapterkit: parameter-efficient fine-tuning on quantized backbones, built on PEFT, transformers and Accelerate.

Imports run one way, each package using only those before it:

    errors, files, lazy, progress, plugins the base
    config/                               recipe schema and loading (no registry, no PEFT)
    adapters/  heads/  metrics/           registries of methods, heads and metrics, and the built-ins
    model/                                backbone + head + adapter; a run rebuilt; recipes checked against the registries
    data/                                 files -> tokenized splits -> batches
    runs/                                 the run directory and its report
    training/                             the one training loop, checkpoints, multi-task, preflight
    inference/                            eval, predict, generate, verification passes; runs on one shared base
    deploy/  interpolation/  serving/     verified exports; merging and scaling adapters; the HTTP server
    cli.py, docs.py                       the command line and the generated recipe reference
"""

import importlib

from .console import library_call

__version__ = "0.1.0"

# The public API, imported on first use (PEP 562): `adapterkit --help` and a one-line error need none of torch,
# transformers or PEFT, whose import took 5 of the command's 6 seconds.
_LAZY = {
    "METHODS": ".adapters",
    "Method": ".adapters",
    "MethodSettings": ".adapters",
    "register_method": ".adapters",
    "BottleneckConfig": ".adapters.bottleneck",
    "Recipe": ".config",
    "export": ".deploy",
    "AdapterkitError": ".errors",
    "RecipeError": ".errors",
    "HEADS": ".heads",
    "Head": ".heads",
    "register_head": ".heads",
    "load_recipe": ".model",
    "load_run": ".model",
    "recipe_from_dict": ".model",
    "RunPool": ".inference.pool",
    "open_pool": ".inference.pool",
}

__all__ = [
    "BottleneckConfig",
    "Recipe",
    "load_recipe",
    "recipe_from_dict",
    "METHODS",
    "Method",
    "MethodSettings",
    "register_method",
    "HEADS",
    "Head",
    "register_head",
    "AdapterkitError",
    "train",
    "load_run",
    "RunPool",
    "open_pool",
    "export",
    "build_model",
]


def _stack(module: str):
    # Importing the stack prints whoever imports it (bitsandbytes looks up a Hub kernel for its CPU 4-bit path, and
    # says so): held for the run's log, so the CLI's one-line errors stay one line.
    with library_call():
        return importlib.import_module(module, __name__)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'adapterkit' has no attribute {name!r}")
    value = getattr(_stack(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def train(recipe, run_dir=None, resume=None):
    """Train a recipe (a Recipe or a plain dict; single- or multi-task). `resume`: "latest" (newest checkpoint in
    the run directory), a checkpoint folder or a run folder."""
    if isinstance(recipe, dict):
        recipe = _stack(".model").recipe_from_dict(recipe)
    return _stack(".training").train(recipe, run_dir, resume)


def build_model(recipe, labels=None, quantization=None):
    """(model, tokenizer) for a recipe (a Recipe or a plain dict): backbone + adapter + task head, with only the
    adapter and head trainable. Labels come from `labels` or the recipe's `task.labels`."""
    model_mod = _stack(".model")
    if isinstance(recipe, dict):
        recipe = model_mod.recipe_from_dict(recipe)
    labels = labels or recipe.task.labels
    if labels is None and _stack(".heads").HEADS[recipe.task.type].named_labels:
        raise _stack(".errors").RecipeError(
            "task.labels: give the label names (build_model has no training data to infer them from)"
        )
    tokenizer = _stack(".model.backbone").load_tokenizer(recipe.backbone)
    model, _ = model_mod.build(recipe, labels, quantization, tokenizer=tokenizer)
    return model, tokenizer
