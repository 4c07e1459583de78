"""Choosing settings and judging a difference: `adapterkit tune` (Optuna search over recipe keys, `study.py`, with
its search-space file, `space.py`) and `train --seeds` / `--cv` (one recipe over seeds or folds, mean ± sd,
`repeats.py`). Comparing two runs is `inference/compare.py`; the statistics are `stats.py`."""

from .repeats import parse_seeds, train_repeats
from .study import tune

__all__ = ["parse_seeds", "train_repeats", "tune"]
