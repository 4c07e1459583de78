"""Checks that run before any model is loaded, so a typo fails in a second, not after a long load."""
from __future__ import annotations

from . import data as data_mod
from .backbone import resolve_path
from .errors import RecipeError
from .heads import HEADS
from .rundir import RunWriter


def preflight(recipe) -> None:
    resolve_path(recipe.backbone)
    if recipe.adapter.method == "full" and recipe.backbone.quantization != "none":
        raise RecipeError("adapter.method: full fine-tuning needs backbone.quantization: none (quantized weights cannot train)")
    head = HEADS[recipe.task.type]
    cfg = recipe.data
    if not cfg.train:
        raise RecipeError("data.train: no training file given")
    for split in data_mod.SPLITS:
        path = getattr(cfg, split)
        if path:
            ds = data_mod.read_file(path, cfg.format, f"data.{split}")
            data_mod.check_columns(ds, cfg, path, f"data.{split}", need_label=head.label_kind != "text")
    RunWriter(recipe.training.output_dir, recipe).check_writable()
