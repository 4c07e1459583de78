"""Text inputs (one text, or a text pair, per row) -> token ids and encoded labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DataError
from .encoders import Encoder, register_encoder
from .labels import encode_labels
from .readers import delimiter_hint


def check_columns(ds, cfg, path: str, field: str, need_label: bool = True) -> None:
    cols = list(ds.column_names)
    need = [("data.text_column", cfg.text_column)]
    if cfg.text_pair_column:
        need.append(("data.text_pair_column", cfg.text_pair_column))
    if need_label:
        need.append(("data.label_column", cfg.label_column))
    for key, col in need:
        if col not in cols:
            raise DataError(f"{key}: column {col!r} not in {path} (columns there: {cols}){delimiter_hint(cols)}")
    if len(ds) == 0:
        raise DataError(f"{field}: {path} has a header but no rows")


def tokenize(ds, tokenizer, cfg, labels, kind: str, path: str, target_norm=None, train: bool = False):
    """Tokenized dataset with input_ids, attention_mask and labels (when the label column is present).
    `target_norm`: (mean, std) applied to regression targets. Runs as a batched `datasets` map, so a memory-mapped
    source (parquet, arrow, a Hub data set) is tokenized into a memory-mapped cache file, never into Python lists."""
    has_labels = cfg.label_column in ds.column_names

    def encode(batch, rows):
        for col in (cfg.text_column, cfg.text_pair_column) if cfg.text_pair_column else (cfg.text_column,):
            odd = next(((r, t) for r, t in zip(rows, batch[col]) if isinstance(t, (list, tuple, dict))), None)
            if odd is not None:  # str() would train on the text "['a', 'b']"
                key = "data.text_column" if col == cfg.text_column else "data.text_pair_column"
                raise DataError(
                    f"{key}: row {odd[0] + 1} of {path}: {col!r} holds a {type(odd[1]).__name__}, not a text; "
                    f"this task reads one text per row (word lists are for task.type: token_classification)"
                )
        texts = ["" if t is None else str(t) for t in batch[cfg.text_column]]
        empty = next((r for r, t in zip(rows, texts) if not t.strip()), None)
        if empty is not None:
            raise DataError(f"data.text_column: row {empty + 1} of {path} has an empty {cfg.text_column!r}")
        pairs = [str(t) for t in batch[cfg.text_pair_column]] if cfg.text_pair_column else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=cfg.max_length)
        out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        if has_labels:
            out["labels"] = encode_labels(batch[cfg.label_column], labels, kind, path, cfg.label_column, rows)
            if target_norm is not None:
                mean, std = target_norm
                out["labels"] = [(y - mean) / std for y in out["labels"]]
        return out

    # An explicit fingerprint: `datasets` would otherwise hash `encode` with dill, tokenizer and all (seconds per map).
    key = repr(
        (ds._fingerprint, tokenizer.name_or_path, len(tokenizer), cfg.model_dump_json(), labels, kind, target_norm)
    )
    return ds.map(
        encode,
        batched=True,
        batch_size=4096,
        with_indices=True,
        remove_columns=ds.column_names,
        desc=f"tokenizing {Path(str(path)).name}",
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
    )


def encode_text(ds, tokenizer, recipe, head, labels, path: str, train: bool = False):
    norm = head.target_norm(recipe.task) if head.target_norm is not None else None
    return tokenize(ds, tokenizer, recipe.data, labels, head.label_kind, path, norm, train)


register_encoder(Encoder("text", check_columns, encode_text))
