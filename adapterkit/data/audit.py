"""A data audit: what the splits of a recipe hold, read exactly as training reads them (`raw_splits`, the row
limits, the label map, the head's encoder), before anything trains on them. Rows, duplicates, labels, token
lengths against `data.max_length`, and texts shared between splits (a test set that leaks into training scores
too well). `adapterkit data check RECIPE` prints it; a run keeps it as data_audit.json for its report.

Only the tokenizer is loaded, never the model."""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from ..errors import DataError
from ..heads import HEADS
from .encoders import encoder_for
from .labels import label_text, split_multi
from .loaders import lengths as token_lengths
from .prepare import label_form_notes, label_map, limit_rows, raw_splits
from .readers import column

NO_LIMIT = 1 << 30  # encode untruncated, so lengths beyond data.max_length are counted, not cut


@dataclass
class SplitAudit:
    source: str
    rows: int
    distinct_texts: int
    duplicate_rows: int  # rows repeating an earlier row of the split (same text and label)
    conflicting_texts: int  # texts that occur with more than one label
    labels: dict[str, int] | None  # label -> rows (tags -> tokens for token classification); None: no classes
    lengths: dict[str, int] | None  # tokens per example, untruncated: p50, p90, p99, max
    truncated: int | None  # examples longer than data.max_length: cut in training


@dataclass
class Overlap:
    splits: list[str]  # [earlier split, later split], e.g. ["train", "test"]
    exact: int  # distinct texts of the later split found verbatim in the earlier
    normalized: int  # the same after collapsing whitespace and case
    example: str | None


@dataclass
class DataAudit:
    task: str
    max_length: int
    splits: dict[str, SplitAudit]
    overlaps: list[Overlap] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def to_dict(a: DataAudit) -> dict:
    return dataclasses.asdict(a)


def _norm(key: tuple) -> tuple:
    # NFC first: `café` with a combining accent is the same text as with a precomposed é
    return tuple(" ".join(unicodedata.normalize("NFC", str(t)).split()).casefold() for t in key)


def _show(key: tuple) -> str:
    text = " || ".join(str(t) for t in key)
    return text if len(text) <= 80 else text[:77] + "..."


def row_texts(ds, cfg, head) -> list[tuple]:
    """The text of each row as a tuple (a text pair has two parts), by what the head's encoder reads."""
    if head.inputs == "completion":
        if cfg.messages_column in ds.column_names:
            return [
                ("\n".join(f"{m.get('role')}: {m.get('content')}" for m in (ms or []) if isinstance(m, dict)),)
                for ms in column(ds, cfg.messages_column)
            ]
        return [
            tuple("" if v is None else str(v) for v in kv)
            for kv in zip(column(ds, cfg.prompt_column), column(ds, cfg.completion_column))
        ]
    texts = column(ds, cfg.text_column)
    if head.inputs == "words":
        return [(" ".join(str(w) for w in (ws or [])),) for ws in texts]
    if cfg.text_pair_column:
        return [
            ("" if t is None else str(t), "" if p is None else str(p))
            for t, p in zip(texts, column(ds, cfg.text_pair_column))
        ]
    return [("" if t is None else str(t),) for t in texts]


def _label_counts(values, kind: str) -> dict[str, int] | None:
    if kind == "multi":
        counts = Counter(l for v in values for l in split_multi(v))
    elif kind == "tokens":
        counts = Counter(label_text(t) for v in values for t in v)
    elif kind == "class":
        counts = Counter(label_text(v) for v in values)
    else:
        return None
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def _overlaps(keys: dict[str, list]) -> list[Overlap]:
    """Texts of a later split (validation, test) that an earlier one (train) also has, verbatim or normalised."""
    found = []
    names = list(keys)
    for i, first in enumerate(names):
        exact, norm = set(keys[first]), {_norm(k) for k in keys[first]}
        for later in names[i + 1 :]:
            shared = [k for k in dict.fromkeys(keys[later]) if _norm(k) in norm]
            if shared:
                overlap = Overlap(
                    [first, later], sum(k in exact for k in shared), len({_norm(k) for k in shared}), _show(shared[0])
                )
                found.append(overlap)
    return found


def audit(recipe, tokenizer=None, lengths: bool | None = None) -> DataAudit:
    """Audit the data of a single-task recipe (a multi-task recipe: audit each task's recipe). Token lengths need
    the backbone's `tokenizer` (model.backbone.tokenizer_only); without one, or with `lengths=False`, there are
    none. Bad data raises the DataError training would raise."""
    if recipe.tasks:
        raise DataError("tasks: audit() takes one task's recipe; audit each task of a multi-task recipe on its own")
    head, cfg = HEADS[recipe.task.type], recipe.data
    raw, _ = raw_splits(recipe, head, check=True, need_label=head.has_labels)
    raw = limit_rows(raw, recipe)
    labels = label_map(recipe, head, raw)
    if lengths is False:
        tokenizer = None
    # Lengths from the head's own encoder, untruncated; labels dropped (they need no tokenizer, and regression
    # target statistics exist only once training fitted them).
    long = recipe.model_copy(update={"data": cfg.model_copy(update={"max_length": NO_LIMIT})})
    plain = dataclasses.replace(head, target_norm=None)
    has_labels = head.has_labels
    out, keys = {}, {}
    for split, (ds, source) in raw.items():
        texts = row_texts(ds, cfg, head)
        values = column(ds, cfg.label_column) if has_labels and cfg.label_column in ds.column_names else None
        label_keys = (
            [repr(label_text(v) if head.label_kind == "class" else v) for v in values]
            if values is not None
            else [""] * len(texts)
        )
        rows = Counter(zip(texts, label_keys))
        by_text: dict[tuple, set] = {}
        for t, l in zip(texts, label_keys):
            by_text.setdefault(t, set()).add(l)
        lens = truncated = None
        if tokenizer is not None:
            enc_ds = ds.remove_columns([cfg.label_column]) if values is not None else ds
            n = sorted(
                token_lengths(
                    encoder_for(head).encode(enc_ds, tokenizer, long, plain, labels, source, split == "train")
                )
            )
            lens = {"p50": percentile(n, 50), "p90": percentile(n, 90), "p99": percentile(n, 99), "max": n[-1]}
            truncated = sum(x > cfg.max_length for x in n)
        out[split] = SplitAudit(
            source,
            len(texts),
            len(by_text),
            len(texts) - len(rows),
            sum(len(v) > 1 for v in by_text.values()),
            _label_counts(values, head.label_kind) if values is not None else None,
            lens,
            truncated,
        )
        keys[split] = texts
    a = DataAudit(recipe.task.type, cfg.max_length, out)
    a.warnings += label_form_notes(raw, cfg, head)
    a.overlaps = _overlaps(keys)
    for o in a.overlaps:
        a.warnings.append(
            f"{o.splits[1]}: {o.normalized} text(s) also in {o.splits[0]} ({o.exact} verbatim, {o.normalized} after "
            f"whitespace/case normalisation), e.g. {o.example!r}; {o.splits[1]} scores will be optimistic"
        )
    for split, s in out.items():
        if s.truncated:
            a.warnings.append(
                f"{split}: {s.truncated} of {s.rows} examples are longer than data.max_length={cfg.max_length} tokens "
                f"(longest {(s.lengths or {}).get('max')}) and will be truncated"
            )
        if s.conflicting_texts:
            a.warnings.append(f"{split}: {s.conflicting_texts} text(s) occur with different labels")
    return a


def format_audit(a: DataAudit) -> str:
    """A short console table: one row per split, then labels and overlaps (warnings are the caller's to print)."""
    head = ["split", "rows", "distinct", "dup rows", "p50", "p90", "p99", "max", f"> {a.max_length}"]
    rows: list[list[object]] = [list(head)]
    for split, s in a.splits.items():
        ln = s.lengths or {}
        rows.append(
            [
                split,
                s.rows,
                s.distinct_texts,
                s.duplicate_rows,
                *(ln.get(k, "-") for k in ("p50", "p90", "p99", "max")),
                "-" if s.truncated is None else s.truncated,
            ]
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = [f"data audit ({a.task}; token lengths against data.max_length={a.max_length})"]
    lines += [
        "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    for split, s in a.splits.items():
        if s.labels:
            shown = ", ".join(f"{k} {v}" for k, v in list(s.labels.items())[:10])
            lines.append(f"labels {split}: {shown}{', ...' if len(s.labels) > 10 else ''}")
    for o in a.overlaps:
        lines.append(
            f"overlap {o.splits[0]}/{o.splits[1]}: {o.exact} verbatim, {o.normalized} normalised, e.g. {o.example!r}"
        )
    if not a.overlaps and len(a.splits) > 1:
        lines.append("overlap: no text shared between splits")
    return "\n".join(lines)
