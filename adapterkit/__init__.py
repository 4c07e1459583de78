"""adapterkit: parameter-efficient fine-tuning on quantized backbones, built on PEFT, transformers and Accelerate.

Data flows one way: recipe -> config -> backbone -> adapters -> heads -> data -> trainer -> metrics -> export.
"""
import logging

# bitsandbytes warns at import about optional CPU kernels; the CLI's one-line errors must stay one line.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

from .adapters import METHODS, Method, register_method  # noqa: E402
from .adapters.bottleneck import BottleneckConfig  # noqa: E402
from .config import Recipe, load_recipe, recipe_from_dict  # noqa: E402
from .errors import AdapterkitError  # noqa: E402
from .heads import HEADS, Head, register_head  # noqa: E402

__version__ = "0.1.0"

__all__ = ["BottleneckConfig", "Recipe", "load_recipe", "recipe_from_dict", "METHODS", "Method", "register_method", "HEADS", "Head",
           "register_head", "AdapterkitError", "train", "load_run", "export", "build_model"]


def train(recipe, run_dir=None, resume=None):
    """`resume`: "latest" (newest checkpoint in the run directory), a checkpoint folder or a run folder."""
    from .trainer import train as _train

    return _train(recipe, run_dir, resume)


def build_model(recipe, labels=None, quantization=None):
    """(model, tokenizer) for a recipe (a Recipe or a plain dict): backbone + adapter + task head, with only the
    adapter and head trainable. Labels come from `labels` or the recipe's `task.labels`."""
    from .backbone import load_tokenizer
    from .errors import RecipeError
    from .model import build

    if isinstance(recipe, dict):
        recipe = recipe_from_dict(recipe)
    labels = labels or recipe.task.labels
    if labels is None and HEADS[recipe.task.type].label_kind in ("class", "multi", "tokens"):
        raise RecipeError("task.labels: give the label names (build_model has no training data to infer them from)")
    model, _ = build(recipe, labels, quantization)
    return model, load_tokenizer(recipe.backbone)


def load_run(run_dir, **kw):
    from .model import load_run as _load

    return _load(run_dir, **kw)


# Imported once here, before `export` below is defined: a first import of the submodule would otherwise rebind
# `adapterkit.export` from this function to the module.
from . import export as _export_module  # noqa: E402


def export(run_dir, out, **kw):
    return _export_module.export(run_dir, out, **kw)
