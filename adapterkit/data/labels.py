"""Label values in data files -> label names and indices, by the head's label kind.

Label names are compared in Unicode NFC: `café` typed with a precomposed é and with e + a combining accent (NFD, as
macOS and some editors write it) look the same and are one class."""

from __future__ import annotations

import math
import unicodedata

from ..errors import DataError
from ..heads.regression import is_float


def label_text(v) -> str:
    """A label value as a label name: its text, stripped, in Unicode NFC."""
    return unicodedata.normalize("NFC", str(v).strip())


def label_names(values, kind: str) -> list[str]:
    """Sorted label names seen in the data (numbers sorted numerically)."""
    seen = set()
    for v in values:
        if kind == "multi":
            seen.update(split_multi(v))
        elif kind == "tokens":
            seen.update(label_text(t) for t in v)
        else:
            seen.add(label_text(v))

    def key(x):
        try:
            return (0, float(x), x)
        except ValueError:
            return (1, 0.0, x)

    return sorted(seen, key=key)


def split_multi(v) -> list[str]:
    if isinstance(v, (list, tuple)):
        return [label_text(x) for x in v]
    return [label_text(x) for x in str(v).replace(";", ",").split(",") if x.strip()]


def unicode_forms(values, kind: str) -> dict[str, list[str]]:
    """Label names that some value spells in another Unicode form than NFC: NFC name -> every spelling found (two or
    more: labels that would have been separate classes). Empty for labels that need no normalisation."""
    forms: dict[str, set[str]] = {}
    for v in values:
        if v is None or kind not in ("class", "multi", "tokens"):
            continue
        raw = (
            (
                [str(x).strip() for x in v]
                if isinstance(v, (list, tuple))
                else [x.strip() for x in str(v).replace(";", ",").split(",")]
            )
            if kind in ("multi", "tokens")
            else [str(v).strip()]
        )
        for r in raw:
            forms.setdefault(unicodedata.normalize("NFC", r), set()).add(r)
    return {n: sorted(f) for n, f in sorted(forms.items()) if f != {n}}


def number_value(v) -> float | None:
    """A regression target as a float, or None when it is not a number (bools, lists, text that does not parse)."""
    if isinstance(v, bool) or not is_float(v) or isinstance(v, (list, tuple, dict)):
        return None
    return float(v)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def encode_labels(values, labels: list[str] | None, kind: str, path: str, column: str, rows=None):
    """`rows`: the 0-based row of each value, for messages."""
    if kind == "float":
        targets = [number_value(v) for v in values]
        bad = next((i for i, y in enumerate(targets) if y is None or not math.isfinite(y)), None)
        if bad is not None:  # NaN or inf would make the loss NaN at the first step, naming no row
            where = f" row {(rows[bad] if rows is not None else bad) + 1}"
            what = "not a number" if targets[bad] is None else "not a finite number"
            raise DataError(
                f"data.label_column: {column!r} in {path}{where} is {values[bad]!r}, {what}; regression needs finite numbers"
            )
        return targets
    assert labels is not None, "class and multi-label targets need the label map"
    index = {unicodedata.normalize("NFC", l): i for i, l in enumerate(labels)}  # a run's label map from before NFC
    if kind == "multi":
        vectors: list[list[float]] = []
        for v in values:
            row = [0.0] * len(labels)
            for name in split_multi(v):
                if name not in index:
                    raise DataError(f"data.label_column: label {name!r} in {path} is not in the label map {labels}")
                row[index[name]] = 1.0
            vectors.append(row)
        return vectors
    out: list[int] = []
    for v in values:
        name = label_text(v)
        if name not in index:
            raise DataError(
                f"data.label_column: label {name!r} in {path} is not in the label map {labels} (task.labels or the training labels)"
            )
        out.append(index[name])
    return out


def first_missing_label(values, kind: str) -> tuple[int, str] | None:
    """(row, "null" | "empty" | "empty tag") of the first row without a label, else None. Null counts for every kind (a JSON Lines row
    without the key reads as null, and would become a class named "None"); an empty string for single-label and
    regression rows (a CSV cell left blank would become a class named ""); multi-label rows may have no labels."""
    for i, v in enumerate(values):
        if v is None:
            return i, "null"
        if isinstance(v, float) and math.isnan(v) and kind != "float":  # a missing value in a pandas-written file
            return i, "nan"
        if kind in ("class", "float") and isinstance(v, str) and not v.strip():
            return i, "empty"
        if kind == "tokens" and isinstance(v, (list, tuple)) and any(t is None or not str(t).strip() for t in v):
            return i, "empty tag"
    return None


def bad_label_rows(values, kind: str, task_type: str = "", limit: int = 5) -> tuple[str, list[int]] | None:
    """(what is wrong, the first `limit` rows (0-based) where) for label values a head would misread without a word;
    None when there are none. Regression targets must be finite numbers (NaN, inf and 1e400 would stop training at its
    first step); a single-label row holds one label, not a list (it would become the class "['negative']"); a
    multi-label row is a list of label names or a "a,b" string, not an object, and not a list of numbers repeating one
    (a 0/1 indicator vector, whose names would read as the labels "0" and "1")."""

    def is_number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    checks = []
    if kind == "float":
        checks.append(
            (
                lambda v: v is not None and not _finite(number_value(v)),
                "is not a finite number; regression needs a finite number in every row (a NaN, inf or 1e400 target "
                "makes the loss NaN at the first step)",
            )
        )
    elif kind == "class":
        checks.append(
            (
                lambda v: isinstance(v, (list, tuple, dict)),
                f"holds a list or object, not one label; {task_type or 'this task'} takes one label per row: for several labels "
                f"per row set task.type: multi_label, otherwise store the label as a plain value",
            )
        )
    elif kind == "multi":
        checks.append(
            (
                lambda v: (
                    isinstance(v, dict)
                    or (isinstance(v, (list, tuple)) and any(isinstance(x, (list, tuple, dict)) for x in v))
                ),
                "holds an object or nested lists; multi_label reads a list of label names or a 'a,b' string",
            )
        )
        checks.append(
            (
                lambda v: (
                    isinstance(v, (list, tuple)) and any(isinstance(x, float) and not math.isfinite(x) for x in v)
                ),
                "holds a number that is not finite (NaN or inf) in its list of labels",
            )
        )
        checks.append(
            (
                lambda v: (
                    isinstance(v, (list, tuple))
                    and len(v) > 1
                    and all(is_number(x) for x in v)
                    and len(set(v)) < len(v)
                ),
                "is a list of numbers that repeats a value, like a 0/1 indicator vector; multi_label reads a list of "
                "label names (['sports', 'politics']): write the names of the labels each row has",
            )
        )
    for bad, what in checks:
        rows = []
        for i, v in enumerate(values):
            if bad(v):
                rows.append(i)
                if len(rows) == limit:
                    break
        if rows:
            return what, rows
    return None
