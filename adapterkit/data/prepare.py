"""Read, check and tokenize every split a recipe names, with the head's encoder (data/encoders.py)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from .. import console
from ..errors import DataError
from ..heads import task_settings
from .cache import cached_encode
from .encoders import encoder_for
from .labels import bad_label_rows, first_missing_label, label_names, unicode_forms
from .readers import column, read_file
from .sources import SPLITS, cv_split, describe, has_split, holdout, locate, locate_rows, read_split


@dataclass
class Prepared:
    splits: dict  # split -> tokenized datasets.Dataset
    labels: list | None  # label names in index order (None for heads without classes)
    holdout: dict | None = None  # data.validation_split: which training rows went where
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
        record = {
            "source": source,
            "validation_split": cfg.validation_split,
            "seed": recipe.training.seed,
            "rows": len(ds),
            "train_rows": len(train_rows),
            "validation_rows": val_rows,
        }
    if cfg.cv_folds:
        ds, source = raw["train"]
        train_rows, val_rows = cv_split(ds, cfg, recipe.training.seed, head.label_kind == "class")
        raw["train"] = (ds.select(train_rows), source)
        raw["validation"] = (ds.select(val_rows), describe(cfg, "validation"))
        record = {
            "source": source,
            "cv_folds": cfg.cv_folds,
            "cv_fold": cfg.cv_fold,
            "seed": recipe.training.seed,
            "rows": len(ds),
            "train_rows": len(train_rows),
            "validation_rows": val_rows,
        }
    return raw, record


def check_label_values(ds, cfg, head, split: str, path: str | None = None, field: str | None = None) -> None:
    """Every row of a split with a label column has a label the head reads as it looks (language-model heads read no
    labels). `path`: a file given on the command line (`field`: its option) instead of the recipe's split."""
    if not head.has_labels or cfg.label_column not in ds.column_names:
        return
    field = field or f"data.{split}"
    values = column(ds, cfg.label_column)
    col = repr(cfg.label_column)
    missing = first_missing_label(values, head.label_kind)
    if missing is not None:
        row, what = missing
        what = {
            "null": f"no value for {col} (a missing key or null)",
            "nan": f"NaN for {col} (a missing value)",
            "empty": f"an empty {col}",
            "empty tag": f"an empty tag in {col}",
        }[what]
        where = locate_rows(cfg, split, [row], path) if path else locate(cfg, split, row)
        raise DataError(f"{field}: {where} has {what}; every row of a labelled file needs a label (data.label_column)")
    bad = bad_label_rows(values, head.label_kind, head.name)
    if bad is not None:
        what, rows = bad
        shown = ", ".join(repr(values[r])[:40] for r in rows)
        more = " (first 5 shown)" if len(rows) == 5 else ""
        raise DataError(f"{field}: {col} at {locate_rows(cfg, split, rows, path)} ({shown}){more} {what}")


def label_form_notes(raw: dict, cfg, head) -> list[str]:
    """Notes on label names that are not what they look like, per split: names some rows spell in another Unicode form
    than NFC (read in NFC: one class), and single-label names that are one number written two ways ("1", "1.0": two
    classes). Printed as `note:` lines by training and kept in the data audit's warnings."""
    if not head.named_labels:
        return []
    notes = []
    for split, (ds, source) in raw.items():
        if cfg.label_column not in ds.column_names:
            continue
        forms = unicode_forms(column(ds, cfg.label_column), head.label_kind)
        if forms:
            merged = [n for n, f in forms.items() if len(f) > 1]
            names = ", ".join(repr(n) for n in list(forms)[:5]) + (", ..." if len(forms) > 5 else "")
            notes.append(
                f"{split}: label(s) {names} in {source} are written in more than one Unicode form (e.g. é as one character "
                f"and as e + a combining accent); each label's spellings are read as that one label, in NFC"
                if merged
                else f"{split}: label(s) {names} in {source} are not in Unicode NFC (e.g. é written as e + a combining accent); "
                f"they are read in NFC"
            )
        if head.label_kind == "class":  # "1" and "1.0" (a pandas column with a gap writes floats) would be two classes
            by_number: dict[float, set] = {}
            for name in label_names(column(ds, cfg.label_column), "class"):
                try:
                    by_number.setdefault(float(name), set()).add(name)
                except ValueError:
                    pass
            same = [sorted(names) for names in by_number.values() if len(names) > 1]
            if same:
                notes.append(
                    f"{split}: labels {', '.join(' and '.join(map(repr, g)) for g in same[:3])} in {source} are one number "
                    f"written in different ways, and so are different classes; write each label one way"
                )
    return notes


def prepare(recipe, tokenizer, head, labels: list[str] | None = None) -> Prepared:
    """Read, check and tokenize every split named in the recipe."""
    cfg = recipe.data
    enc = encoder_for(head)
    raw, record = raw_splits(recipe, head)
    raw = limit_rows(raw, recipe)
    for note in label_form_notes(raw, cfg, head):
        console.echo(f"note: {note}", err=True)
    if head.fit is not None:  # e.g. regression target statistics, recorded in recipe.task
        head.fit(recipe.task, column(raw["train"][0], cfg.label_column))
    labels = label_map(recipe, head, raw, labels)
    out, generation = {}, {}
    for split, (ds, source) in raw.items():
        out[split] = cached_encode(enc.encode, ds, tokenizer, recipe, head, labels, source, split == "train")
        if split != "train" and enc.generation is not None and wants_generation(recipe.task, head):
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
    labels = (
        [unicodedata.normalize("NFC", l) for l in given]
        if given
        else label_names(column(ds, cfg.label_column), head.label_kind)
    )
    if len(labels) < 2 and head.label_kind == "class":
        raise DataError(
            f"data.label_column: {cfg.label_column!r} in {source} has only {len(labels)} distinct label(s); classification needs at least 2"
        )
    if cfg.allow_unseen_labels and not given:  # a given map is the head's: never grown
        seen = set(labels)
        for split, (ds, _) in raw.items():
            if split != "train" and cfg.label_column in ds.column_names:
                new = [l for l in label_names(column(ds, cfg.label_column), head.label_kind) if l not in seen]
                labels += new
                seen.update(new)
    return labels


def wants_generation(task, head) -> bool:
    """The task section asks for generated-text metrics and the head's encoder can give prompts and references."""
    return bool(getattr(task_settings(task), "generation_metrics", None)) and encoder_for(head).generation is not None


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
    generation = encoder_for(head).generation
    assert generation is not None, "callers ask wants_generation first"
    return generation(ds, tokenizer, recipe, source)


def load_eval_split(recipe, tokenizer, head, labels, split: str):
    """One split of the recipe (a validation hold-out is carved again, the same rows), tokenized. Returns
    (dataset, has labels)."""
    if not has_split(recipe.data, split):
        raise DataError(f"data.{split}: the run's recipe has no {split} split; pass --data FILE")
    raw, _ = raw_splits(recipe, head, check=False)
    ds, source = raw[split]
    encoder_for(head).check_columns(ds, recipe.data, source, f"data.{split}", False)
    if getattr(recipe.data, split):  # (a hold-out's rows were checked as training rows)
        check_label_values(ds, recipe.data, head, split)
    return _encode_eval(recipe, tokenizer, head, labels, ds, source)


def load_eval_file(recipe, tokenizer, head, labels, path: str, field: str):
    """A file given on the command line (same columns as the recipe's data), tokenized. Returns (dataset, has labels)."""
    cfg = recipe.data
    ds = read_file(path, _file_format(cfg), field, cfg)
    encoder_for(head).check_columns(ds, cfg, path, field, False)
    check_label_values(ds, cfg, head, "", path=path, field=field)
    return _encode_eval(recipe, tokenizer, head, labels, ds, path)


def _file_format(cfg) -> str:
    """The format of a file given on the command line: the recipe's, unless the recipe reads a Hub data set or a
    save_to_disk folder (then the file's own extension tells)."""
    return "auto" if cfg.format in ("hub", "disk") else cfg.format


def _encode_eval(recipe, tokenizer, head, labels, ds, source: str):
    cfg = recipe.data
    if cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
        ds = ds.select(range(cfg.max_eval_samples))
    out = cached_encode(encoder_for(head).encode, ds, tokenizer, recipe, head, labels, source, False)
    return out, "labels" in out.column_names
