"""Training: the one loop (`loop.py`) for single- and multi-task recipes, and what it is made of.

loop.py          the training loop (Accelerate)
multitask.py     joint model over one backbone, task sampler, per-task run folders
checkpoint.py    resumable checkpoints (safetensors + JSON) and per-task data streams
nonfinite.py     the NaN/inf guard
switches.py      speed/memory switches (packing, chunked loss, compile, int8 path)
losses.py        chunked causal-LM cross-entropy
tracking.py      experiment trackers through Accelerate
mlflow_run.py    the MLflow tracker: one MLflow run per training run
distributed.py   process-group helpers (CPU multi-process, DDP)
preflight.py     checks before any model loads
"""

from ..scoring import evaluate, head_metrics  # re-exported: scoring moved below training
from .loop import train
from .preflight import preflight

__all__ = ["evaluate", "head_metrics", "train", "preflight"]
