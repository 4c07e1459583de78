"""Using a trained run: evaluate and predict (`run.py`), generate (`generate.py`), and the verification passes that
compare two models on the same inputs (`verify.py`, for export and sweep)."""

from .generate import generate
from .run import eval_run, load_for_eval, predict, predict_logits

__all__ = ["eval_run", "generate", "load_for_eval", "predict", "predict_logits"]
