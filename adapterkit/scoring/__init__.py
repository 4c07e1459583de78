"""Scoring a model over a data loader, as training, eval, export checks and sweeps all do: loss, head metrics,
generated-text metrics (`evaluate.py`), and the compute dtype and autocast a run trained under (`precision.py`).
Below training, inference and deploy, so none of them imports another only for this."""

from .evaluate import (
    collect,
    evaluate,
    generate_and_score,
    generated_text_metrics,
    head_metrics,
    lower_is_better,
    score,
)
from .precision import autocast, cpu_has_bf16, mixed_precision

__all__ = [
    "collect",
    "evaluate",
    "generate_and_score",
    "generated_text_metrics",
    "head_metrics",
    "lower_is_better",
    "score",
    "autocast",
    "cpu_has_bf16",
    "mixed_precision",
]
