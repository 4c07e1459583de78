"""Data: read CSV/TSV/JSON Lines files through `datasets`, check them against the recipe, tokenize, batch."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from .errors import DataError

SPLITS = ("train", "validation", "test")


def file_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    found = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "conll", ".conll": "conll"}.get(suffix)
    if found is None:
        raise DataError(f"data.format: cannot tell the format of {path} from its extension; set data.format to csv, tsv, jsonl or conll")
    return found


def read_file(path: str, fmt: str, field: str = "data", cfg=None):
    """A `datasets.Dataset` with the file's columns (`cfg`: the recipe's DataConfig, for readers with settings)."""
    import datasets

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{field}: file not found: {path}")
    if p.stat().st_size == 0:
        raise DataError(f"{field}: {path} is empty")
    fmt = file_format(path, fmt)
    from . import readers

    if fmt in readers.READERS:
        return readers.READERS[fmt](p, field, cfg)
    try:
        if fmt == "jsonl":
            rows = []
            with open(p) as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise DataError(f"{field}: {path} line {n} is not valid JSON: {e.msg}") from None
            return datasets.Dataset.from_list(rows)
        # QUOTE_NONE for TSV: sentences like SST-2's contain bare quote characters.
        delimiter, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
        with open(p, newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
            rows = list(reader)
            header = reader.fieldnames or []
        bad = next((i for i, r in enumerate(rows, 2) if None in r or any(v is None for v in r.values())), None)
        if bad is not None:
            raise DataError(f"{field}: {path} line {bad} has a different number of fields than the header ({len(header)})")
        return datasets.Dataset.from_dict({h: [r[h] for r in rows] for h in header})
    except DataError:
        raise
    except (UnicodeDecodeError, csv.Error, TypeError, ValueError) as e:
        raise DataError(f"{field}: cannot read {path} as {fmt}: {str(e).splitlines()[0]}") from None


def check_columns(ds, cfg, path: str, field: str, need_label: bool = True) -> None:
    cols = list(ds.column_names)
    need = [("data.text_column", cfg.text_column)]
    if cfg.text_pair_column:
        need.append(("data.text_pair_column", cfg.text_pair_column))
    if need_label:
        need.append(("data.label_column", cfg.label_column))
    for key, col in need:
        if col not in cols:
            raise DataError(f"{key}: column {col!r} not in {path} (columns there: {cols})")
    if len(ds) == 0:
        raise DataError(f"{field}: {path} has a header but no rows")


def label_names(values, kind: str) -> list[str]:
    """Sorted label names seen in the data (numbers sorted numerically)."""
    seen = set()
    for v in values:
        if kind == "multi":
            seen.update(split_multi(v))
        elif kind == "tokens":
            seen.update(str(t).strip() for t in v)
        else:
            seen.add(str(v).strip())

    def key(x):
        try:
            return (0, float(x), x)
        except ValueError:
            return (1, 0.0, x)

    return sorted(seen, key=key)


def split_multi(v) -> list[str]:
    if isinstance(v, list):
        return [str(x).strip() for x in v]
    return [x.strip() for x in str(v).replace(";", ",").split(",") if x.strip()]


def encode_labels(values, labels: list[str] | None, kind: str, path: str, column: str):
    if kind == "float":
        try:
            return [float(v) for v in values]
        except (TypeError, ValueError):
            bad = next(v for v in values if not is_float(v))
            raise DataError(f"data.label_column: {column!r} in {path} has non-numeric value {bad!r}; regression needs numbers") from None
    index = {l: i for i, l in enumerate(labels)}
    if kind == "multi":
        out = []
        for v in values:
            row = [0.0] * len(labels)
            for name in split_multi(v):
                if name not in index:
                    raise DataError(f"data.label_column: label {name!r} in {path} is not in the label map {labels}")
                row[index[name]] = 1.0
            out.append(row)
        return out
    out = []
    for v in values:
        name = str(v).strip()
        if name not in index:
            raise DataError(f"data.label_column: label {name!r} in {path} is not in the label map {labels} (task.labels or the training labels)")
        out.append(index[name])
    return out


def is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def tokenize(ds, tokenizer, cfg, labels, kind: str, path: str, target_norm=None, train: bool = False):
    """Tokenized dataset with input_ids, attention_mask and labels (when the label column is present).
    `target_norm`: (mean, std) applied to regression targets; `train`: token labels follow data.subword_labels."""
    if kind == "tokens":
        from .tokens import tokenize_words

        return tokenize_words(ds, tokenizer, cfg, labels, path, train)
    texts = [("" if t is None else str(t)) for t in ds[cfg.text_column]]
    empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
    if empty is not None:
        raise DataError(f"data.text_column: row {empty + 1} of {path} has an empty {cfg.text_column!r}")
    pairs = [str(t) for t in ds[cfg.text_pair_column]] if cfg.text_pair_column else None
    from .progress import chunks

    enc, size = {}, 4096  # in chunks only so a large file shows a tokenizing bar; same result as one call
    for i in chunks(len(texts), size, f"tokenizing {Path(path).name}", min_items=20000):
        part = tokenizer(texts[i:i + size], pairs[i:i + size] if pairs else None, truncation=True, max_length=cfg.max_length)
        for k, v in part.items():
            enc.setdefault(k, []).extend(v)
    cols = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    if cfg.label_column in ds.column_names:
        cols["labels"] = encode_labels(ds[cfg.label_column], labels, kind, path, cfg.label_column)
        if target_norm is not None:
            mean, std = target_norm
            cols["labels"] = [(y - mean) / std for y in cols["labels"]]
    import datasets

    return datasets.Dataset.from_dict(cols)


class Collator:
    """Dynamic padding to the longest example in the batch (transformers' DataCollatorWithPadding)."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        self.pad_tokens = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")  # pads labels with -100

    def __call__(self, features):
        lab = features[0].get("labels")
        token_labels = isinstance(lab, list) and len(lab) == len(features[0]["input_ids"]) and (not lab or isinstance(lab[0], int))
        batch = (self.pad_tokens if token_labels else self.pad)(features)
        if "labels" in batch and batch["labels"].dtype == torch.float64:
            batch["labels"] = batch["labels"].float()
        return batch


def prepare(recipe, tokenizer, head, labels: list[str] | None = None):
    """Read, check and tokenize every split named in the recipe. Returns (splits, labels)."""
    cfg = recipe.data
    raw = {}
    for split in SPLITS:
        path = getattr(cfg, split)
        if path:
            ds = read_file(path, cfg.format, f"data.{split}", cfg)
            head.extra.get("check_columns", check_columns)(ds, cfg, path, f"data.{split}", need_label=True)
            raw[split] = (ds, path)
    if "train" not in raw:
        raise DataError("data.train: no training file given")
    ds, _ = raw["train"]
    if cfg.max_train_samples and cfg.max_train_samples < len(ds):
        ds = ds.shuffle(seed=recipe.training.seed).select(range(cfg.max_train_samples))
        raw["train"] = (ds, raw["train"][1])
    if "fit" in head.extra:  # e.g. regression target statistics, recorded in recipe.task
        head.extra["fit"](recipe, ds[cfg.label_column])
    if head.label_kind in ("class", "multi", "tokens"):
        labels = labels or recipe.task.labels or label_names(ds[cfg.label_column], head.label_kind)
        if len(labels) < 2 and head.label_kind == "class":
            raise DataError(f"data.label_column: {cfg.label_column!r} in {raw['train'][1]} has only {len(labels)} distinct label(s); classification needs at least 2")
    out = {}
    for split, (ds, path) in raw.items():
        if split != "train" and cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
            ds = ds.select(range(cfg.max_eval_samples))
        if "tokenize" in head.extra:  # heads with their own input format (causal LM prompts/chats, label-word prompts)
            out[split] = head.extra["tokenize"](ds, tokenizer, recipe, labels, path)
            continue
        out[split] = tokenize(ds, tokenizer, cfg, labels, head.label_kind, path, _target_norm(head, recipe), split == "train")
    return out, labels


def load_eval_file(recipe, tokenizer, head, labels, path: str, field: str):
    """One evaluation file (a split of the recipe or a file given on the command line), tokenized."""
    cfg = recipe.data
    ds = read_file(path, cfg.format, field, cfg)
    has_labels = cfg.label_column in ds.column_names
    head.extra.get("check_columns", check_columns)(ds, cfg, path, field, need_label=False)
    if cfg.max_eval_samples and cfg.max_eval_samples < len(ds):
        ds = ds.select(range(cfg.max_eval_samples))
    if "tokenize" in head.extra:
        out = head.extra["tokenize"](ds, tokenizer, recipe, labels, path)
        return out, "labels" in out.column_names
    return tokenize(ds, tokenizer, cfg, labels, head.label_kind, path, _target_norm(head, recipe)), has_labels


def _target_norm(head, recipe):
    return head.extra["target_norm"](recipe.task) if "target_norm" in head.extra else None


def dataloader(ds, tokenizer, batch_size: int, shuffle: bool, seed: int, group_by_length: bool, num_processes: int = 1,
               collate_fn=None):
    """`num_processes`: length groups span the global batch (batch_size x processes), so a run sharded over
    N processes sees the same global batches as one process with an N times larger batch."""
    from torch.utils.data import DataLoader

    g = torch.Generator()
    g.manual_seed(seed)
    sampler = None
    if shuffle and group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size * num_processes, lengths=[len(x) for x in ds["input_ids"]], generator=g)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=collate_fn or Collator(tokenizer), generator=g if sampler is None else None)
