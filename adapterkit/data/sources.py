"""Where each split's rows come from: a file (csv, tsv, jsonl, conll, parquet, arrow), a `save_to_disk` folder,
a split of a `DatasetDict` folder or of a Hugging Face Hub data set; and the seeded validation hold-out.

Hub data sets are fetched as repository snapshots through huggingface_hub's cache (offline with HF_HUB_OFFLINE=1)
and read by `datasets` from that folder, so the same code runs offline and online and the run can record the
commit it read."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..hub import cache_dir, hub_snapshot
from .readers import column, load_disk, read_file, row_line, row_lines

SPLITS = ("train", "validation", "test")


def has_split(cfg, split: str) -> bool:
    return bool(getattr(cfg, split, None)) or (
        split == "validation" and bool(cfg.validation_split or cfg.cv_folds) and bool(cfg.train)
    )


def describe(cfg, split: str) -> str:
    """The source of a split, for messages and records: a path, or `NAME[SPLIT]`."""
    if split == "validation" and not cfg.validation and cfg.validation_split:
        return f"{describe(cfg, 'train')} (held-out {cfg.validation_split:g})"
    if split == "validation" and not cfg.validation and cfg.cv_folds:
        return f"{describe(cfg, 'train')} (fold {cfg.cv_fold} of {cfg.cv_folds})"
    if cfg.format == "hub" or (cfg.format == "disk" and cfg.name):
        return f"{cfg.name}[{getattr(cfg, split)}]"
    return str(getattr(cfg, split))


@functools.cache
def _hub_dataset(name: str, config: str | None, cache: str | None):
    import datasets

    folder = hub_snapshot(name, None, None, "dataset", "data.name", DataError)
    try:
        return datasets.load_dataset(str(folder), name=config)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "BuilderConfig" in msg or "Config name is missing" in msg:
            raise DataError(
                f"data.config: {config!r} is not a config of {name}: {msg[:200]}"
                if config
                else f"data.config: {name} has several configs; pick one with data.config: {msg[:200]}"
            ) from None
        raise DataError(f"data.name: cannot read {name}: {msg[:200]}") from None
    except FileNotFoundError as e:
        raise DataError(
            f"data.name: {name} has no data files `datasets` can read: {str(e).splitlines()[0][:160]}"
        ) from None
    except (
        datasets.exceptions.DatasetGenerationError
    ) as e:  # its own message says nothing; the cause, or the empty file, does
        empty = next((f for f in sorted(folder.rglob("*.parquet")) if _parquet_rows(f) == 0), None)
        why = f"{empty.relative_to(folder)} has no rows" if empty else str(e.__cause__ or e).splitlines()[0][:160]
        raise DataError(f"data.name: cannot read {name}: {why}") from None


def _parquet_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (
        OSError,
        ValueError,
    ):  # not readable as parquet (ArrowInvalid is a ValueError): not the empty file looked for
        return None


def _dataset_dict(cfg):
    import datasets

    if cfg.format == "hub":
        return _hub_dataset(cfg.name, cfg.config, cache_dir())
    folder = Path(cfg.name)
    if not folder.is_dir():
        raise DataError(f"data.name: folder not found: {folder}")
    dd = load_disk(folder, "data.name")
    if not isinstance(dd, datasets.DatasetDict):
        raise DataError(
            f"data.name: {folder} holds one data set, not splits; give it as data.train (without data.name)"
        )
    return dd


def read_split(cfg, split: str, field: str | None = None):
    """The rows of one split named in the recipe's data section, as a `datasets.Dataset`."""
    field = field or f"data.{split}"
    if cfg.format == "hub" or (cfg.format == "disk" and cfg.name):
        dd = _dataset_dict(cfg)
        name = getattr(cfg, split)
        if name not in dd:
            raise DataError(f"{field}: split {name!r} not in {cfg.name} (splits there: {list(dd)})")
        return dd[name]
    path = Path(getattr(cfg, split))
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, field, cfg.model_dump_json())
    except OSError:  # not there: read_file says so in its one line
        key = None
    if key is not None and key in _READ:
        return _READ[key]
    ds = read_file(getattr(cfg, split), cfg.format, field, cfg)
    if key is not None:
        # Training reads each file twice (the data, then the audit of the run folder) and --seeds/--cv runs read
        # the same files once per run: the second read of an unchanged file is this copy (a few seconds on SST-2).
        while len(_READ) >= 8:
            _READ.pop(next(iter(_READ)))
        _READ[key] = ds
    return ds


_READ: dict = {}  # (file, mtime, size, field, data section) -> the Dataset read; immutable, so shared


def locate(cfg, split: str, row: int) -> str:
    """Where row `row` (0-based) of a split read by `read_split` is, for messages: `FILE line N` for files with
    lines, else `SOURCE row N`."""
    if cfg.format not in ("hub", "disk") and not Path(getattr(cfg, split)).is_dir():
        line = row_line(getattr(cfg, split), cfg.format, row, cfg)
        if line is not None:
            return f"{getattr(cfg, split)} line {line}"
    return f"{describe(cfg, split)} row {row + 1}"


def locate_rows(cfg, split: str, rows: list[int], path: str | None = None) -> str:
    """`FILE lines 3, 7 and 9` (or `SOURCE rows 3, 7 and 9`) for rows (0-based) of a split read by `read_split`, or of
    the file `path` given on the command line."""
    src = path or getattr(cfg, split)
    fmt = ("auto" if cfg.format in ("hub", "disk") else cfg.format) if path else cfg.format
    if path or (cfg.format not in ("hub", "disk") and not Path(src).is_dir()):
        lines = row_lines(src, fmt, rows, cfg)
        known = [n for n in lines if n is not None]
        if len(known) == len(lines):
            return f"{src} line{'s' * (len(lines) > 1)} {_numbers(known)}"
    return f"{path or describe(cfg, split)} row{'s' * (len(rows) > 1)} {_numbers([r + 1 for r in rows])}"


def _numbers(ns: list[int]) -> str:
    return ", ".join(map(str, ns[:-1])) + " and " + str(ns[-1]) if len(ns) > 1 else str(ns[0])


def cv_split(ds, cfg, seed: int, stratify: bool) -> tuple[list[int], list[int]]:
    """(training rows, validation rows) of fold `cfg.cv_fold` of a seeded K-fold split: stratified by the label when
    `stratify`, grouped by `cfg.cv_group_column` when set (scikit-learn's splitters)."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    k, n = cfg.cv_folds, len(ds)
    groups = None
    if cfg.cv_group_column:
        if cfg.cv_group_column not in ds.column_names:
            raise DataError(
                f"data.cv_group_column: column {cfg.cv_group_column!r} not in the training data (columns: {ds.column_names})"
            )
        groups = [str(g) for g in column(ds, cfg.cv_group_column)]
        if len(set(groups)) < k:
            raise DataError(
                f"data.cv_folds: {k} folds but only {len(set(groups))} distinct {cfg.cv_group_column!r} groups"
            )
    if n < k:
        raise DataError(f"data.cv_folds: {k} folds of {n} training rows")
    y = [str(v) for v in column(ds, cfg.label_column)] if stratify else None
    if y is not None:
        smallest = min(Counter(y).values())
        if smallest < k:
            raise DataError(f"data.cv_folds: {k} stratified folds, but a class has only {smallest} training row(s)")
    if groups is not None:
        splitter = (
            StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            if y
            else GroupKFold(k, shuffle=True, random_state=seed)
        )
    else:
        splitter = (
            StratifiedKFold(k, shuffle=True, random_state=seed) if y else KFold(k, shuffle=True, random_state=seed)
        )
    train_rows, val_rows = list(splitter.split(np.zeros(n), y, groups))[cfg.cv_fold]
    return sorted(train_rows.tolist()), sorted(val_rows.tolist())


def holdout(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(training rows, validation rows) of a seeded random hold-out, each in file order."""
    k = max(1, round(n * share))
    if k >= n:
        raise DataError(f"data.validation_split: {share} of {n} training rows leaves none to train on")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[k:].tolist()), sorted(perm[:k].tolist())
