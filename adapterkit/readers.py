"""Extra file readers by format name (CoNLL and friends register here).

A reader is `(path, field, cfg) -> datasets.Dataset`; `field` names the recipe key in error messages and
`cfg` is the recipe's DataConfig (None when called outside a recipe)."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError

READERS: dict = {}

_SEPARATORS = {"tab": "\t", "space": " "}


def read_conll(path: Path, field: str = "data", cfg=None):
    """CoNLL: one token per line with its tag in a column (the last by default), a blank line between sentences,
    `-DOCSTART-` lines skipped. Columns: `tokens` (list of words) and `tags` (list of tags)."""
    import datasets

    sep = getattr(cfg, "conll_separator", "auto") or "auto"
    want_cols = getattr(cfg, "conll_columns", None)
    tag_col = getattr(cfg, "conll_tag_column", -1)
    sep = _SEPARATORS.get(sep, sep)
    tokens, tags, sent, sent_tags = [], [], [], []
    ncols = want_cols
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{field}: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None

    def flush():
        if sent:
            tokens.append(list(sent))
            tags.append(list(sent_tags))
            sent.clear()
            sent_tags.clear()

    for n, line in enumerate(lines, 1):
        if not line.strip():
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            flush()
            continue
        if sep == "auto":  # tabs when the first token line has one (tokens may then contain spaces), else any whitespace
            sep = "\t" if "\t" in line else None
        parts = line.rstrip("\r\n").split(sep) if sep else line.split()
        if sep:
            parts = [p.strip() for p in parts]
        if ncols is None:
            ncols = len(parts)
            if ncols < 2:
                raise DataError(f"{field}: {path} line {n} has one column; CoNLL needs a token and a tag per line "
                                f"(set data.conll_separator if the columns are not separated by tabs or spaces)")
        if len(parts) != ncols:
            raise DataError(f"{field}: {path} line {n} has {len(parts)} columns, expected {ncols} "
                            f"(ragged CoNLL line: {line.strip()[:60]!r})")
        if not -ncols <= tag_col < ncols:
            raise DataError(f"data.conll_tag_column: {tag_col} is out of range for {path} with {ncols} columns")
        sent.append(parts[0])
        sent_tags.append(parts[tag_col])
    flush()
    if not tokens:
        raise DataError(f"{field}: {path} has no sentences (only blank or -DOCSTART- lines)")
    return datasets.Dataset.from_dict({"tokens": tokens, "tags": tags})


def write_conll(path: Path, sentences, sep: str = " ") -> None:
    """Write (tokens, tags) pairs as CoNLL (two columns), used by tests and the derived-data script."""
    with open(path, "w", encoding="utf-8") as f:
        for toks, tgs in sentences:
            for tok, tag in zip(toks, tgs):
                f.write(f"{tok}{sep}{tag}\n")
            f.write("\n")


def entity_types(tags) -> list[str]:
    """Entity types present in an IOB/IOB2 tag sequence, e.g. ['LOC', 'PER']."""
    return sorted({re.sub(r"^[BIES]-", "", t) for t in tags if t != "O"})


READERS["conll"] = read_conll
