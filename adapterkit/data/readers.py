"""Data files -> `datasets.Dataset`: CSV, TSV and JSON Lines by `datasets`-friendly code, and a registry of
readers by format name (CoNLL registers here; a plugin may add its own with `READERS[name] = reader`).

A reader is `(path, field, cfg) -> datasets.Dataset`; `field` names the recipe key in error messages and
`cfg` is the recipe's DataConfig (None when called outside a recipe)."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from ..errors import DataError

READERS: dict = {}

_SEPARATORS = {"tab": "\t", "space": " "}


def read_text_file(path: Path, field: str) -> str:
    """A text file the user gave (`field`: the recipe key or option naming it). Strict UTF-8 (never the locale's
    encoding), so a Latin-1 file fails at the byte that gives it away instead of being read as mojibake; a leading
    byte-order mark (Excel's "CSV UTF-8") is dropped, or the first column would be named "\\ufefftext"."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{field}: {path} not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")  # not utf-8-sig: its error offsets would not count the mark
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{field}: {path} is not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {e.start} (line {line}): "
                        f"{e.reason}; save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt", ".conll")  # the text formats of data/readers.py


def check_utf8(path: Path, field: str) -> None:
    """Before any model loads: a text data file (by its extension; parquet and arrow are binary) that is not UTF-8
    is a DataError naming it and the byte. Read in blocks, so a large file is not held in memory."""
    import codecs

    path = Path(path)
    if path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file():
        return  # other formats and missing files are reported by the readers
    decoder, pos = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            start = pos - len(decoder.getstate()[0])  # the decoder holds back the bytes of a character split between blocks
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise DataError(f"{field}: {path} is not UTF-8 text ({e.reason} at byte {start + e.start}); save it as UTF-8") from None
            if not block:
                return
            pos += len(block)


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
    lines = read_text_file(path, field).splitlines()

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
        empty = "token" if not parts[0] else "tag" if not parts[tag_col] else None
        if empty:  # `word<TAB>` would otherwise train on a class named ""
            raise DataError(f"{field}: {path} line {n} has an empty {empty} (column {1 if empty == 'token' else tag_col % ncols + 1} "
                            f"of {ncols}); every CoNLL token line needs a token and a tag")
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
            rows = [row for _, row in jsonl_rows(p, field)]
            # Columns: every key of any row (from_list would take the first row's only); a missing key reads as null.
            cols = list(dict.fromkeys(k for r in rows for k in r))
            return datasets.Dataset.from_dict({k: [r.get(k) for r in rows] for k in cols})
        header, lines, rows = _csv_rows(p, fmt, field, cfg)
        bad = next((n for n, r in zip(lines, rows) if None in r or any(v is None for v in r.values())), None)
        if bad is not None:
            raise DataError(f"{field}: {path} line {bad} has a different number of fields than the header ({len(header)})")
        return datasets.Dataset.from_dict({h: [r[h] for r in rows] for h in header})
    except DataError:
        raise
    except (UnicodeDecodeError, csv.Error, TypeError, ValueError, OSError) as e:
        raise DataError(f"{field}: cannot read {path} as {fmt}: {str(e).splitlines()[0]}") from None


def jsonl_rows(p: Path, field: str):
    """(line number, object) for each non-blank line of a JSON Lines file."""
    for n, line in enumerate(read_text_file(p, field).split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{field}: {p} line {n} is not valid JSON: {e.msg}") from None
        if not isinstance(row, dict):  # a list or a number has no columns to read
            raise DataError(f"{field}: {p} line {n} is not a JSON object (got a JSON {type(row).__name__}); "
                            f"each line needs one object of column: value pairs")
        yield n, row


def _csv_rows(p: Path, fmt: str, field: str, cfg=None) -> tuple[list[str], list[int], list[dict]]:
    """(header, line of each row, rows) of a CSV or TSV file; `data.delimiter` overrides the separator."""
    # QUOTE_NONE for TSV: sentences like SST-2's contain bare quote characters.
    delimiter = getattr(cfg, "delimiter", None) or ("\t" if fmt == "tsv" else ",")
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(io.StringIO(read_text_file(p, field), newline=""), delimiter=delimiter, quoting=quoting)
    header = reader.fieldnames or []
    dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
    if dup is not None:  # DictReader keeps the last column of a name: training would read it without a word
        cols = [i + 1 for i, h in enumerate(header) if h == dup]
        raise DataError(f"{field}: {p} line 1: column name {dup!r} appears {len(cols)} times in the header (columns "
                        f"{', '.join(map(str, cols))}); column names must be unique")
    lines, rows = [], []
    for row in reader:
        rows.append(row)
        lines.append(reader.line_num)  # the line the row ends on (blank lines are skipped, so not row + 2)
    return header, lines, rows


def row_line(path: str, fmt: str, row: int, cfg=None) -> int | None:
    """The line of a CSV, TSV or JSON Lines file holding row `row` (0-based), for error messages: the file is read
    again only when there is an error to report. None for other formats."""
    fmt = file_format(path, fmt)
    if fmt == "jsonl":
        return next((n for i, (n, _) in enumerate(jsonl_rows(Path(path), "data")) if i == row), None)
    if fmt in ("csv", "tsv"):
        lines = _csv_rows(Path(path), fmt, "data", cfg)[1]
        return lines[row] if row < len(lines) else None
    return None


def delimiter_hint(cols) -> str:
    """For a missing-column message: a header that was read as one column names the separator the file uses."""
    if len(cols) == 1:
        if "\t" in cols[0]:
            return "; the header reads as one column with tabs in it: set data.format: tsv"
        sep = next((c for c in ";|" if c in cols[0]), None)
        if sep:
            return f"; the header reads as one column with {sep!r} in it: set data.delimiter: {sep!r}"
    return ""


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
