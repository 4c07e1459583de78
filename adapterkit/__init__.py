"""adapterkit: parameter-efficient fine-tuning on quantized backbones, built on PEFT, transformers and Accelerate.

Imports run one way, each package using only those before it:

    errors, files, progress, plugins      the base
    config/                               recipe schema and loading (no registry, no PEFT)
    adapters/  heads/  metrics/           registries of methods, heads and metrics, and the built-ins
    model/                                backbone + head + adapter; a run rebuilt; recipes checked against the registries
    data/                                 files -> tokenized splits -> batches
    runs/                                 the run directory and its report
    training/                             the one training loop, checkpoints, multi-task, preflight
    inference/                            eval, predict, generate, verification passes
    deploy/  interpolation/               verified exports; merging and scaling adapters
    cli.py, docs.py                       the command line and the generated recipe reference
"""

from .console import library_call

# Importing the stack prints whoever imports it (bitsandbytes looks up a Hub kernel for its CPU 4-bit path, and says
# so): held for the run's log, so the CLI's one-line errors stay one line.
with library_call():
    from .adapters import METHODS, Method, MethodSettings, register_method
    from .adapters.bottleneck import BottleneckConfig
    from .config import Recipe
    from .deploy import export
    from .errors import AdapterkitError, RecipeError
    from .heads import HEADS, Head, register_head
    from .model import build, load_recipe, load_run, recipe_from_dict
    from .model.backbone import load_tokenizer
    from .training import train as _train

__version__ = "0.1.0"

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
    "export",
    "build_model",
]


def train(recipe, run_dir=None, resume=None):
    """Train a recipe (a Recipe or a plain dict; single- or multi-task). `resume`: "latest" (newest checkpoint in
    the run directory), a checkpoint folder or a run folder."""
    if isinstance(recipe, dict):
        recipe = recipe_from_dict(recipe)
    return _train(recipe, run_dir, resume)


def build_model(recipe, labels=None, quantization=None):
    """(model, tokenizer) for a recipe (a Recipe or a plain dict): backbone + adapter + task head, with only the
    adapter and head trainable. Labels come from `labels` or the recipe's `task.labels`."""
    if isinstance(recipe, dict):
        recipe = recipe_from_dict(recipe)
    labels = labels or recipe.task.labels
    if labels is None and HEADS[recipe.task.type].named_labels:
        raise RecipeError("task.labels: give the label names (build_model has no training data to infer them from)")
    tokenizer = load_tokenizer(recipe.backbone)
    model, _ = build(recipe, labels, quantization, tokenizer=tokenizer)
    return model, tokenizer
