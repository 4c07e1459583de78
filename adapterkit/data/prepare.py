"""Read, check and tokenize every split a recipe names, with the head's encoder (data/encoders.py)."""
from __future__ import annotations

from ..errors import DataError
from .encoders import encoder_for
from .labels import label_names
from .readers import read_file

SPLITS = ("train", "validation", "test")


def prepare(recipe, tokenizer, head, labels: list[str] | None = None):
    """Read, check and tokenize every split named in the recipe. Returns (splits, labels)."""
    cfg = recipe.data
    enc = encoder_for(head)
    raw = {}
    for split in SPLITS:
        path = getattr(cfg, split)
        if path:
            ds = read_file(path, cfg.format, f"data.{split}", cfg)
            enc.check_columns(ds, cfg, path, f"data.{split}", True)
            raw[split] = (ds, path)
    if "train" not in raw:
        raise DataError("data.train: no training file given")
    ds, _ = raw["train"]
    if cfg.max_train_samples and cfg.max_train_samples < len(ds):
        ds = ds.shuffle(seed=recipe.training.seed).select(range(cfg.max_train_samples))
        raw["train"] = (ds, raw["train"][1])
    if head.fit is not None:  # e.g. regression target statistics, recorded in recipe.task
        head.fit(recipe.task, ds[cfg.label_column])
    if head.label_kind in ("class", "multi", "tokens"):
        labels = labels or recipe.task.labels or label_names(ds[cfg.label_column], head.label_kind)
        if len(labels) < 2 and head.label_kind == "class":
            raise DataError(f"data.label_column: {cfg.label_column!r} in {raw['train'][1]} has only {len(labels)} distinct label(s); classification needs at least 2")
    out = {}
    for split, (ds, path) in raw.items():
        if split != "train" and cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
            ds = ds.select(range(cfg.max_eval_samples))
        out[split] = enc.encode(ds, tokenizer, recipe, head, labels, path, split == "train")
    return out, labels


def load_eval_file(recipe, tokenizer, head, labels, path: str, field: str):
    """One evaluation file (a split of the recipe or a file given on the command line), tokenized."""
    cfg = recipe.data
    enc = encoder_for(head)
    ds = read_file(path, cfg.format, field, cfg)
    enc.check_columns(ds, cfg, path, field, False)
    if cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
        ds = ds.select(range(cfg.max_eval_samples))
    out = enc.encode(ds, tokenizer, recipe, head, labels, path, False)
    return out, "labels" in out.column_names
