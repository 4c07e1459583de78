"""adapterkit: parameter-efficient fine-tuning on quantized backbones, built on PEFT, transformers and Accelerate.

Data flows one way: recipe -> config -> backbone -> adapters -> heads -> data -> trainer -> metrics -> export.
"""
from .adapters import METHODS, Method, register_method
from .config import Recipe, load_recipe, recipe_from_dict
from .errors import AdapterkitError
from .heads import HEADS, Head, register_head

__version__ = "0.1.0"

__all__ = ["Recipe", "load_recipe", "recipe_from_dict", "METHODS", "Method", "register_method", "HEADS", "Head",
           "register_head", "AdapterkitError", "train", "load_run", "export"]


def train(recipe, run_dir=None):
    from .trainer import train as _train

    return _train(recipe, run_dir)


def load_run(run_dir, **kw):
    from .model import load_run as _load

    return _load(run_dir, **kw)


def export(run_dir, out, **kw):
    from .export import export as _export

    return _export(run_dir, out, **kw)
