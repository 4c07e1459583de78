"""Data files -> `datasets.Dataset`, through a registry of readers by format name: `data.format` is one of them
(or `auto`, `disk`, `hub`). CSV, TSV, JSON Lines, CoNLL, parquet and arrow register here; a plugin adds its own
with `register_reader(Reader(name, read, suffixes))`.

A reader's `read` is `(path, field, cfg) -> datasets.Dataset`; `field` names the recipe key in error messages and
`cfg` is the recipe's DataConfig (None when called outside a recipe)."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError


@dataclass(frozen=True)
class Reader:
    """A data file format. `suffixes` pick it under `data.format: auto`; `folder`: it reads a folder, not a file."""

    name: str
    read: Callable
    suffixes: tuple[str, ...] = ()
    folder: bool = False


READERS: dict[str, Reader] = {}
SOURCES = ("auto", "disk", "hub")  # data.format values that are not file formats (data/sources.py reads them)


def register_reader(reader: Reader) -> Reader:
    if reader.name in SOURCES:
        raise ValueError(f"register_reader: {reader.name!r} is reserved")
    READERS[reader.name] = reader
    return reader


def formats() -> list[str]:
    """Every data.format value: the sources, then the registered readers."""
    return [*SOURCES, *READERS]


def check_format(fmt: str, field: str = "data.format") -> None:
    if fmt not in SOURCES and fmt not in READERS:
        raise DataError(
            f"{field}: {fmt!r} is not a data format; expected one of {formats()} (a plugin registers "
            f"more with adapterkit.data.readers.register_reader)"
        )


_SEPARATORS = {"tab": "\t", "space": " "}


def read_text_file(path: Path, field: str) -> str:
    """A text file the user gave (`field`: the recipe key or option naming it). Strict UTF-8 (never the locale's
    encoding), so a Latin-1 file fails at the byte that gives it away instead of being read as mojibake; a leading
    byte-order mark (Excel's "CSV UTF-8") is dropped, or the first column would be named "\\ufefftext"."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{field}: {path} is a folder; give a text file")
    if not path.is_file():
        raise DataError(f"{field}: {path} not found")
    try:
        data = path.read_bytes()
    except OSError as e:  # no permission to read it, an I/O error
        raise DataError(f"{field}: cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")  # not utf-8-sig: its error offsets would not count the mark
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{field}: {path} is not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {e.start} (line {line}): "
            f"{e.reason}; save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt", ".conll")  # the text formats of data/readers.py


def check_utf8(path: Path | str, field: str) -> None:
    """Before any model loads: a text data file (by its extension; parquet and arrow are binary) that is not UTF-8
    is a DataError naming it and the byte. Read in blocks, so a large file is not held in memory."""
    import codecs

    path = Path(path)
    if path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file():
        return  # other formats and missing files are reported by the readers
    decoder, pos = codecs.getincrementaldecoder("utf-8")(), 0
    try:
        f = open(path, "rb")
    except OSError as e:  # no permission to read it
        raise DataError(f"{field}: cannot read {path}: {e.strerror or e}") from None
    with f:
        while True:
            block = f.read(1 << 20)
            start = pos - len(
                decoder.getstate()[0]
            )  # the decoder holds back the bytes of a character split between blocks
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{field}: {path} is not UTF-8 text ({e.reason} at byte {start + e.start}); save it as UTF-8"
                ) from None
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
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    sent: list[str] = []
    sent_tags: list[str] = []
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
        if (
            sep == "auto"
        ):  # tabs when the first token line has one (tokens may then contain spaces), else any whitespace
            sep = "\t" if "\t" in line else None
        parts = line.rstrip("\r\n").split(sep) if sep else line.split()
        if sep:
            parts = [p.strip() for p in parts]
        if ncols is None:
            ncols = len(parts)
            if ncols < 2:
                raise DataError(
                    f"{field}: {path} line {n} has one column; CoNLL needs a token and a tag per line "
                    f"(set data.conll_separator if the columns are not separated by tabs or spaces)"
                )
        if len(parts) != ncols:
            raise DataError(
                f"{field}: {path} line {n} has {len(parts)} columns, expected {ncols} "
                f"(ragged CoNLL line: {line.strip()[:60]!r})"
            )
        if not -ncols <= tag_col < ncols:
            raise DataError(f"data.conll_tag_column: {tag_col} is out of range for {path} with {ncols} columns")
        empty = "token" if not parts[0] else "tag" if not parts[tag_col] else None
        if empty:  # `word<TAB>` would otherwise train on a class named ""
            raise DataError(
                f"{field}: {path} line {n} has an empty {empty} (column {1 if empty == 'token' else tag_col % ncols + 1} "
                f"of {ncols}); every CoNLL token line needs a token and a tag"
            )
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


def _by_suffix(suffix: str) -> Reader | None:
    return next((r for r in READERS.values() if suffix in r.suffixes), None)


def file_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if Path(path).is_dir():
        found = _by_suffix(Path(path).suffix.lower())
        return found.name if found is not None and found.folder else "disk"
    found = _by_suffix(Path(path).suffix.lower())
    if found is None:
        raise DataError(
            f"data.format: cannot tell the format of {path} from its extension; set data.format to one of "
            f"{[f for f in formats() if f != 'auto']}"
        )
    return found.name


def column(ds, name: str) -> list:
    """A column's values as a list: iterating `datasets`' lazy `Column` decodes row by row (15x slower on SST-2)."""
    return ds[name][:]


def read_file(path: str, fmt: str, field: str = "data", cfg=None):
    """A `datasets.Dataset` with the file's columns (`cfg`: the recipe's DataConfig, for readers with settings)."""
    check_format(fmt)
    p = Path(path)
    reader = READERS.get(fmt) if fmt != "auto" else _by_suffix(p.suffix.lower())
    if p.is_dir() and reader is not None:
        if reader.folder:
            return reader.read(p, field, cfg)
        raise DataError(
            f"{field}: {path} is a folder, not a {reader.name} file (a `save_to_disk` folder is read with data.format: disk)"
        )
    if fmt == "disk" or (fmt == "auto" and p.is_dir()):
        return _read_disk(p, field)
    if not p.is_file():
        raise DataError(f"{field}: file not found: {path}")
    if p.stat().st_size == 0:
        raise DataError(f"{field}: {path} is empty")
    return READERS[file_format(path, fmt)].read(p, field, cfg)


def _guarded(fmt: str, read: Callable) -> Callable:
    """`datasets`' and the csv module's failures as one line naming the file and the format."""

    def guarded(p: Path, field: str, cfg=None):
        try:
            return read(p, field, cfg)
        except DataError:
            raise
        except Exception as e:
            # datasets is imported only by the readers that use it (0.3 s of start-up otherwise)
            ds = sys.modules.get("datasets")
            generation = (ds.exceptions.DatasetGenerationError,) if ds is not None else ()
            if not isinstance(e, (UnicodeDecodeError, csv.Error, TypeError, ValueError, OSError, *generation)):
                raise
            cause = (
                e.__cause__ if generation and isinstance(e, generation) and e.__cause__ else e
            )  # its own says nothing
            raise DataError(f"{field}: cannot read {p} as {fmt}: {str(cause).splitlines()[0]}") from None

    return guarded


def _read_arrow(p: Path, field: str, cfg=None):
    import datasets

    return datasets.Dataset.from_file(str(p))  # memory-mapped, as parquet: not read into Python objects


def _read_jsonl(p: Path, field: str, cfg=None):
    import datasets

    numbered = list(jsonl_rows(p, field))
    if not numbered:
        raise DataError(f"{field}: {p} has no rows (only blank lines); JSON Lines needs one JSON object per line")
    rows = [row for _, row in numbered]
    # Columns: every key of any row (from_list would take the first row's only); a missing key reads as null.
    cols = list(dict.fromkeys(k for r in rows for k in r))
    _check_json_types(numbered, cols, p, field, getattr(cfg, "label_column", None))
    try:
        return datasets.Dataset.from_dict({k: [r.get(k) for r in rows] for k in cols})
    except (TypeError, ValueError, OverflowError) as e:  # pyarrow's: values inside lists or objects of two types
        col = next((k for k in cols if not _arrow_ok([r.get(k) for r in rows])), None)
        raise DataError(
            f"{field}: {p}: the values of column {col!r} do not fit one column type "
            f"({str(e).splitlines()[0][:120]}); give every row's {col!r} the same JSON shape and types"
        ) from None


def _csv_reader(fmt: str) -> Callable:
    def read(p: Path, field: str, cfg=None):
        import datasets

        header, lines, rows = _csv_rows(p, fmt, field, cfg)
        if not header:
            raise DataError(
                f"{field}: {p} has no header line (only blank lines); the first line of a {fmt.upper()} file names the columns"
            )
        bad = next((n for n, r in zip(lines, rows) if None in r or any(v is None for v in r.values())), None)
        if bad is not None:
            raise DataError(f"{field}: {p} line {bad} has a different number of fields than the header ({len(header)})")
        return datasets.Dataset.from_dict({h: [r[h] for r in rows] for h in header})

    return read


def _read_parquet(p: Path, field: str = "data", cfg=None):
    """A parquet file, memory-mapped; one with no rows as an empty data set with its columns (`datasets` cannot
    read it: "BatchSize must be greater than 0"), so the checks that follow say it has no rows."""
    import datasets
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(p).metadata
    if meta.num_rows == 0:
        return datasets.Dataset(pq.read_table(p))
    return datasets.Dataset.from_parquet(str(p))


def jsonl_rows(p: Path, field: str):
    """(line number, object) for each non-blank line of a JSON Lines file."""
    for n, line in enumerate(read_text_file(p, field).split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if line.strip():
            yield n, json_object(line, p, n, field)


def json_object(line: str, p: Path, n: int, field: str) -> dict:
    """Line `n` of a JSON Lines file as its object, or a DataError naming the file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{field}: {p} line {n} is not valid JSON: {e.msg}") from None
    if not isinstance(row, dict):  # a list or a number has no columns to read
        raise DataError(
            f"{field}: {p} line {n} is not a JSON object (got a JSON {type(row).__name__}); "
            f"each line needs one object of column: value pairs"
        )
    return row


_JSON_KINDS = {
    bool: "boolean (true/false)",
    int: "number",
    float: "number",
    str: "string",
    list: "list",
    dict: "object",
}


def _json_kind(v) -> str | None:
    return None if v is None else _JSON_KINDS.get(type(v), type(v).__name__)


def _kind_clash(values) -> tuple | None:
    """(line, value, kind, (first line, first kind)) of the first value, of (line, value) pairs, whose JSON type
    differs from the first non-null one's; None when all agree."""
    first = None
    for n, v in values:
        kind = _json_kind(v)
        if kind is None:
            continue
        if first is None:
            first = (n, kind)
        elif kind != first[1]:
            return n, v, kind, first
    return None


def _check_json_types(numbered: list, cols: list, p: Path, field: str, label_column: str | None = None) -> None:
    """Each column holds one JSON type (null aside), and so do the items of its lists: a label written as 1 on one
    line and "1" on another would otherwise fail inside pyarrow, naming no line (or, once read as text, be two classes)."""
    for col in cols:
        clash = _kind_clash((n, row.get(col)) for n, row in numbered)
        if clash:
            n, v, kind, (n0, kind0) = clash
            hint = "; quote every value or none" if {kind, kind0} == {"number", "string"} else ""
            if col == label_column and "list" in (kind, kind0):
                hint = "; several labels per row are task.type: multi_label, with a list on every line"
            raise DataError(
                f"{field}: {p} line {n}: {col!r} is a JSON {kind} ({v!r:.40}), but line {n0} has a JSON "
                f"{kind0}; a column holds one type{hint}"
            )
        clash = _kind_clash((n, item) for n, row in numbered if isinstance(row.get(col), list) for item in row[col])
        if clash:
            n, item, kind, (n0, kind0) = clash
            hint = "; quote every item or none" if {kind, kind0} == {"number", "string"} else ""
            raise DataError(
                f"{field}: {p} line {n}: {col!r} holds a JSON {kind} ({item!r:.40}) in its list, but line "
                f"{n0} holds a JSON {kind0}; the items of a list column have one type{hint}"
            )


def _arrow_ok(values) -> bool:
    import pyarrow as pa

    try:
        pa.array(values)
        return True
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return False


def _csv_rows(p: Path, fmt: str, field: str, cfg=None) -> tuple[list[str], list[int], list[dict]]:
    """(header, line of each row, rows) of a CSV or TSV file; `data.delimiter` overrides the separator."""
    # QUOTE_NONE for TSV: sentences like SST-2's contain bare quote characters.
    delimiter = getattr(cfg, "delimiter", None) or ("\t" if fmt == "tsv" else ",")
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(
        io.StringIO(read_text_file(p, field), newline=""), delimiter=str(delimiter), quoting=quoting
    )  # type: ignore[call-overload]  # quoting: a csv constant
    header = reader.fieldnames or []
    dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
    if dup is not None:  # DictReader keeps the last column of a name: training would read it without a word
        cols = [i + 1 for i, h in enumerate(header) if h == dup]
        raise DataError(
            f"{field}: {p} line 1: column name {dup!r} appears {len(cols)} times in the header (columns "
            f"{', '.join(map(str, cols))}); column names must be unique"
        )
    lines, rows = [], []
    try:
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)  # the line the row ends on (blank lines are skipped, so not row + 2)
    except csv.Error as e:  # e.g. a field over the csv module's size limit: say where
        raise DataError(f"{field}: {p} line {reader.line_num + 1}: cannot read it as {fmt.upper()}: {e}") from None
    return header, lines, rows


def row_line(path: str, fmt: str, row: int, cfg=None) -> int | None:
    """The line of a CSV, TSV or JSON Lines file holding row `row` (0-based), for error messages: the file is read
    again only when there is an error to report. None for other formats."""
    return row_lines(path, fmt, [row], cfg)[0]


def row_lines(path: str, fmt: str, rows: list[int], cfg=None) -> list[int | None]:
    """`row_line` for several rows, reading the file once."""
    fmt = file_format(path, fmt)
    if fmt == "jsonl":
        lines = [n for n, _ in jsonl_rows(Path(path), "data")]
    elif fmt in ("csv", "tsv"):
        lines = _csv_rows(Path(path), fmt, "data", cfg)[1]
    else:
        return [None] * len(rows)
    return [lines[r] if r < len(lines) else None for r in rows]


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

    if p.is_file():
        raise DataError(
            f"{field}: {p} is a file, not a `save_to_disk` folder (data.format: disk); set data.format to the "
            f"file's format, or auto"
        )
    if not p.is_dir():
        raise DataError(f"{field}: folder not found: {p}")
    ds = load_disk(p, field)
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(
            f"{field}: {p} holds the splits {list(ds)}; set data.name to the folder and data.train etc. to split names"
        )
    return ds


def load_disk(p: Path, field: str):
    """`datasets.load_from_disk` (a Dataset or a DatasetDict), where a split saved with no rows reads as an empty data
    set with its columns: `datasets` saves it with no Arrow file and cannot load it back (an IndexError)."""
    import datasets

    def one(folder: Path):
        try:
            state = json.loads((folder / "state.json").read_text())
            if state.get("_data_files") == []:
                info = json.loads((folder / "dataset_info.json").read_text())
                features = datasets.Features.from_dict(info.get("features") or {})
                return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass  # not that case: load_from_disk says what is wrong
        return datasets.Dataset.load_from_disk(str(folder))

    try:
        if (p / "dataset_dict.json").is_file():
            splits = json.loads((p / "dataset_dict.json").read_text())["splits"]
            return datasets.DatasetDict({s: one(p / s) for s in splits})
        if (p / "state.json").is_file():
            return one(p)
        return datasets.load_from_disk(str(p))
    except (FileNotFoundError, ValueError, OSError, KeyError, TypeError, IndexError) as e:
        raise DataError(f"{field}: {p} is not a `save_to_disk` folder: {str(e).splitlines()[0][:160]}") from None


for _reader in (
    Reader("csv", _guarded("csv", _csv_reader("csv")), (".csv",)),
    Reader("tsv", _guarded("tsv", _csv_reader("tsv")), (".tsv",)),
    Reader("jsonl", _guarded("jsonl", _read_jsonl), (".jsonl", ".json")),
    Reader("conll", _guarded("conll", read_conll), (".txt", ".conll")),
    Reader("parquet", _guarded("parquet", _read_parquet), (".parquet",)),
    Reader("arrow", _guarded("arrow", _read_arrow), (".arrow",)),
):
    register_reader(_reader)
