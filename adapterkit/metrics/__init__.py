"""Metrics: our own `evaluate` modules shipped in this package and loaded by path, so evaluation works
offline (evaluate.load("accuracy") fetches its script from the Hub). Other names go to evaluate.load."""

from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).parent


def local_metrics() -> list[str]:
    return sorted(p.name for p in HERE.iterdir() if (p / f"{p.name}.py").is_file())


@cache
def load_metric(name: str):
    import evaluate

    local = HERE / name
    return evaluate.load(str(local) if (local / f"{name}.py").is_file() else name)


def compute(names, predictions, references, **kwargs) -> dict[str, float]:
    out = {}
    for name in names:
        out.update(load_metric(name).compute(predictions=predictions, references=references, **kwargs.get(name, {})))
    return {k: (round(float(v), 6) if isinstance(v, (int, float)) else v) for k, v in out.items()}
