"""Read, check and tokenize every split a recipe names, with the head's encoder (data/encoders.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError
from ..heads import task_settings
from .encoders import encoder_for
from .labels import first_missing_label, label_names
from .readers import read_file
from .sources import SPLITS, cv_split, describe, has_split, holdout, locate, read_split


@dataclass
class Prepared:
    splits: dict                        # split -> tokenized datasets.Dataset
    labels: list | None                 # label names in index order (None for heads without classes)
    holdout: dict | None = None         # data.validation_split: which training rows went where
    sources: dict = field(default_factory=dict)  # split -> where its rows came from
    generation: dict = field(default_factory=dict)  # split -> (prompt ids, references) for generated-text metrics


def raw_splits(recipe, head, check: bool = True, need_label: bool = True) -> tuple[dict, dict | None]:
    """{split: (rows, source)} for every split of the recipe's data section, the validation hold-out carved out of
    the training rows when `data.validation_split` is set (returned as the second value)."""
    cfg = recipe.data
    if not cfg.train:
        raise DataError("data.train: no training file given")
    raw = {}
    for split in SPLITS:
        if getattr(cfg, split):
            ds = read_split(cfg, split)
            if check:
                encoder_for(head).check_columns(ds, cfg, describe(cfg, split), f"data.{split}", need_label)
                check_label_values(ds, cfg, head, split)
            raw[split] = (ds, describe(cfg, split))
    record = None
    if cfg.validation_split and "validation" not in raw:
        ds, source = raw["train"]
        train_rows, val_rows = holdout(len(ds), cfg.validation_split, recipe.training.seed)
        raw["train"] = (ds.select(train_rows), source)
        raw["validation"] = (ds.select(val_rows), describe(cfg, "validation"))
        record = {"source": source, "validation_split": cfg.validation_split, "seed": recipe.training.seed, "rows": len(ds),
                  "train_rows": len(train_rows), "validation_rows": val_rows}
    if cfg.cv_folds:
        ds, source = raw["train"]
        train_rows, val_rows = cv_split(ds, cfg, recipe.training.seed, head.label_kind == "class")
        raw["train"] = (ds.select(train_rows), source)
        raw["validation"] = (ds.select(val_rows), describe(cfg, "validation"))
        record = {"source": source, "cv_folds": cfg.cv_folds, "cv_fold": cfg.cv_fold, "seed": recipe.training.seed, "rows": len(ds),
                  "train_rows": len(train_rows), "validation_rows": val_rows}
    return raw, record


def check_label_values(ds, cfg, head, split: str) -> None:
    """Every row of a split with a label column has a label (language-model heads read no labels)."""
    if not head.has_labels or cfg.label_column not in ds.column_names:
        return
    missing = first_missing_label(ds[cfg.label_column], head.label_kind)
    if missing is not None:
        row, what = missing
        col = repr(cfg.label_column)
        what = {"null": f"no value for {col} (a missing key or null)", "empty": f"an empty {col}", "empty tag": f"an empty tag in {col}"}[what]
        raise DataError(f"data.{split}: {locate(cfg, split, row)} has {what}; every row of a labelled file needs a label "
                        f"(data.label_column)")


def prepare(recipe, tokenizer, head, labels: list[str] | None = None) -> Prepared:
    """Read, check and tokenize every split named in the recipe."""
    cfg = recipe.data
    enc = encoder_for(head)
    raw, record = raw_splits(recipe, head)
    raw = limit_rows(raw, recipe)
    if head.fit is not None:  # e.g. regression target statistics, recorded in recipe.task
        head.fit(recipe.task, raw["train"][0][cfg.label_column])
    labels = label_map(recipe, head, raw, labels)
    out, generation = {}, {}
    for split, (ds, source) in raw.items():
        out[split] = enc.encode(ds, tokenizer, recipe, head, labels, source, split == "train")
        if split != "train" and wants_generation(recipe, head):
            generation[split] = enc.generation(ds, tokenizer, recipe, source)
    return Prepared(out, labels, record, {s: src for s, (_, src) in raw.items()}, generation)


def limit_rows(raw: dict, recipe) -> dict:
    """The rows training uses: data.max_train_samples after a seeded shuffle, the first data.max_eval_samples."""
    cfg, out = recipe.data, {}
    for split, (ds, source) in raw.items():
        if split == "train" and cfg.max_train_samples and cfg.max_train_samples < len(ds):
            ds = ds.shuffle(seed=recipe.training.seed).select(range(cfg.max_train_samples))
        elif split != "train" and cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
            ds = ds.select(range(cfg.max_eval_samples))
        out[split] = (ds, source)
    return out


def label_map(recipe, head, raw: dict, labels: list[str] | None = None) -> list[str] | None:
    """Label names in index order (None for heads without classes): `labels` (a warm start's), task.labels, or the
    training labels; with data.allow_unseen_labels the labels only validation/test rows have come after those, so
    the training labels keep the indices they would have had."""
    if not head.named_labels:
        return None
    cfg = recipe.data
    ds, source = raw["train"]
    given = labels or recipe.task.labels
    labels = list(given or label_names(ds[cfg.label_column], head.label_kind))
    if len(labels) < 2 and head.label_kind == "class":
        raise DataError(f"data.label_column: {cfg.label_column!r} in {source} has only {len(labels)} distinct label(s); classification needs at least 2")
    if cfg.allow_unseen_labels and not given:  # a given map is the head's: never grown
        seen = set(labels)
        for split, (ds, _) in raw.items():
            if split != "train" and cfg.label_column in ds.column_names:
                new = [l for l in label_names(ds[cfg.label_column], head.label_kind) if l not in seen]
                labels += new
                seen.update(new)
    return labels


def wants_generation(recipe, head) -> bool:
    """The recipe asks for generated-text metrics and the head's encoder can give prompts and references."""
    return bool(getattr(task_settings(recipe.task), "generation_metrics", None)) and encoder_for(head).generation is not None


def load_generation_rows(recipe, tokenizer, head, split: str | None = None, path: str | None = None):
    """(prompt ids, references) of one split of the recipe, or of a file, for generated-text metrics."""
    cfg = recipe.data
    if path is not None:
        ds, source = read_file(path, _file_format(cfg), "--data", cfg), path
    else:
        raw, _ = raw_splits(recipe, head, check=False)
        ds, source = raw[split]
    if cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
        ds = ds.select(range(cfg.max_eval_samples))
    return encoder_for(head).generation(ds, tokenizer, recipe, source)


def load_eval_split(recipe, tokenizer, head, labels, split: str):
    """One split of the recipe (a validation hold-out is carved again, the same rows), tokenized. Returns
    (dataset, has labels)."""
    if not has_split(recipe.data, split):
        raise DataError(f"data.{split}: the run's recipe has no {split} split; pass --data FILE")
    raw, _ = raw_splits(recipe, head, check=False)
    ds, source = raw[split]
    encoder_for(head).check_columns(ds, recipe.data, source, f"data.{split}", False)
    return _encode_eval(recipe, tokenizer, head, labels, ds, source)


def load_eval_file(recipe, tokenizer, head, labels, path: str, field: str):
    """A file given on the command line (same columns as the recipe's data), tokenized. Returns (dataset, has labels)."""
    cfg = recipe.data
    ds = read_file(path, _file_format(cfg), field, cfg)
    encoder_for(head).check_columns(ds, cfg, path, field, False)
    return _encode_eval(recipe, tokenizer, head, labels, ds, path)


def _file_format(cfg) -> str:
    """The format of a file given on the command line: the recipe's, unless the recipe reads a Hub data set or a
    save_to_disk folder (then the file's own extension tells)."""
    return "auto" if cfg.format in ("hub", "disk") else cfg.format


def _encode_eval(recipe, tokenizer, head, labels, ds, source: str):
    cfg = recipe.data
    if cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
        ds = ds.select(range(cfg.max_eval_samples))
    out = encoder_for(head).encode(ds, tokenizer, recipe, head, labels, source, False)
    return out, "labels" in out.column_names
