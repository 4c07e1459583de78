"""Data files -> `datasets.Dataset`: CSV, TSV and JSON Lines by `datasets`-friendly code, and a registry of
readers by format name (CoNLL registers here; a plugin may add its own with `READERS[name] = reader`).

A reader is `(path, field, cfg) -> datasets.Dataset`; `field` names the recipe key in error messages and
`cfg` is the recipe's DataConfig (None when called outside a recipe)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from ..errors import DataError

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


def file_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir():
        return "disk"
    found = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "conll", ".conll": "conll",
             ".parquet": "parquet", ".arrow": "arrow"}.get(suffix)
    if found is None:
        raise DataError(f"data.format: cannot tell the format of {path} from its extension; set data.format to csv, tsv, jsonl, conll, "
                        f"parquet, arrow or disk")
    return found


def read_file(path: str, fmt: str, field: str = "data", cfg=None):
    """A `datasets.Dataset` with the file's columns (`cfg`: the recipe's DataConfig, for readers with settings)."""
    import datasets

    p = Path(path)
    if fmt == "disk" or (fmt == "auto" and p.is_dir()):
        return _read_disk(p, field)
    if not p.is_file():
        raise DataError(f"{field}: file not found: {path}")
    if p.stat().st_size == 0:
        raise DataError(f"{field}: {path} is empty")
    fmt = file_format(path, fmt)
    if fmt in READERS:
        return READERS[fmt](p, field, cfg)
    try:
        # Parquet and Arrow stay memory-mapped: `datasets` reads them into its Arrow cache, not into Python objects.
        if fmt == "parquet":
            return datasets.Dataset.from_parquet(str(p))
        if fmt == "arrow":
            return datasets.Dataset.from_file(str(p))
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
    except (UnicodeDecodeError, csv.Error, TypeError, ValueError, OSError) as e:
        raise DataError(f"{field}: cannot read {path} as {fmt}: {str(e).splitlines()[0]}") from None


def _read_disk(p: Path, field: str):
    """A `Dataset.save_to_disk` folder (memory-mapped)."""
    import datasets

    if not p.is_dir():
        raise DataError(f"{field}: folder not found: {p}")
    try:
        ds = datasets.load_from_disk(str(p))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"{field}: {p} is not a `save_to_disk` folder: {str(e).splitlines()[0][:160]}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{field}: {p} holds the splits {list(ds)}; set data.name to the folder and data.train etc. to split names")
    return ds
