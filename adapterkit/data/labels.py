"""Label values in data files -> label names and indices, by the head's label kind."""
from __future__ import annotations

from ..errors import DataError
from ..heads.regression import is_float


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


def first_missing_label(values, kind: str) -> tuple[int, str] | None:
    """(row, "null" | "empty" | "empty tag") of the first row without a label, else None. Null counts for every kind (a JSON Lines row
    without the key reads as null, and would become a class named "None"); an empty string for single-label and
    regression rows (a CSV cell left blank would become a class named ""); multi-label rows may have no labels."""
    for i, v in enumerate(values):
        if v is None:
            return i, "null"
        if kind in ("class", "float") and isinstance(v, str) and not v.strip():
            return i, "empty"
        if kind == "tokens" and isinstance(v, (list, tuple)) and any(t is None or not str(t).strip() for t in v):
            return i, "empty tag"
    return None
