"""Statistics for judging a difference: mean ± sd over repeats, the paired bootstrap, McNemar's exact test.

Plain numpy and scipy; no adapterkit imports, so runs, tuning, compare and the benchmarks share one definition."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarize(results: Sequence[dict]) -> dict[str, dict]:
    """Every numeric metric present in all `results` -> {mean, sd, values} (results: one flat dict per repeat)."""
    keys = [
        k
        for k, v in results[0].items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and all(isinstance(r.get(k), (int, float)) for r in results)
    ]
    out = {}
    for k in keys:
        values = [float(r[k]) for r in results]
        m, s = mean_sd(values)
        out[k] = {"mean": round(m, 6), "sd": round(s, 6), "values": values}
    return out


@dataclass(frozen=True)
class Difference:
    """Metric of A, of B, A - B on all examples, and the 95% paired-bootstrap interval of A - B."""

    a: float
    b: float
    diff: float
    low: float
    high: float

    def as_dict(self) -> dict:
        return {k: round(getattr(self, k), 6) for k in ("a", "b", "diff", "low", "high")}


def paired_bootstrap(
    score_a: Callable[[np.ndarray], dict],
    score_b: Callable[[np.ndarray], dict],
    n: int,
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Difference]:
    """Percentile interval of score_a - score_b over `samples` resamples of the n examples with replacement, the same
    resample for both (paired). `score_x(indices)` -> {metric: value} on those examples (corpus metrics included)."""
    rng = np.random.default_rng(seed)
    full = np.arange(n)
    a0, b0 = score_a(full), score_b(full)
    names = [k for k in a0 if k in b0]
    diffs: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        a, b = score_a(idx), score_b(idx)
        for k in names:
            diffs[k].append(a[k] - b[k])
    tail = (1 - level) / 2 * 100
    out = {}
    for k in names:
        lo, hi = np.percentile(diffs[k], [tail, 100 - tail]) if samples else (math.nan, math.nan)
        out[k] = Difference(float(a0[k]), float(b0[k]), float(a0[k] - b0[k]), float(lo), float(hi))
    return out


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """McNemar's exact test on paired right/wrong outcomes: two-sided binomial p over the discordant pairs
    (1.0 when there are none)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": min(1.0, p)}
