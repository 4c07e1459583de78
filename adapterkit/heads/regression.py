"""regression: one number per text, MSE, metrics in the original units (optionally normalized targets)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataError
from .classification import pooled_classifier
from .registry import Head, register_head, task_settings


def is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class RegressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normalize_targets: bool = Field(
        False,
        description="Train on (y - mean) / std of the training targets; the statistics are "
        "recorded in the run's recipe and predictions are mapped back.",
    )
    target_mean: float | None = Field(
        None, description="Mean used for normalization (filled in from the training data)."
    )
    target_std: float | None = Field(
        None, gt=0, description="Standard deviation used for normalization (filled in from the training data)."
    )


def fit_targets(task, values) -> None:
    """Record the training targets' mean/std in the task section (saved with the run) when normalization is on."""
    s = task_settings(task)
    if not s.normalize_targets or s.target_mean is not None:
        return
    ys = [float(v) for v in values if is_float(v)]
    if len(ys) < 2:
        raise DataError("task.normalize_targets: need at least two numeric training targets to normalize")
    mean = sum(ys) / len(ys)
    std = math.sqrt(sum((y - mean) ** 2 for y in ys) / len(ys)) or 1.0
    task.target_mean, task.target_std = round(mean, 8), round(std, 8)


def target_norm(task):
    s = task_settings(task)
    if not s.normalize_targets:
        return None
    if s.target_mean is None or s.target_std is None:
        raise DataError(
            "task.target_mean: normalize_targets is on but the statistics are missing (train the recipe first)"
        )
    return s.target_mean, s.target_std


def denormalize(values, task):
    norm = target_norm(task) if task is not None else None
    return values * norm[1] + norm[0] if norm else values


def regression_metrics(preds, refs, labels=None, task=None) -> dict:
    # A few lines of torch instead of evaluate's Hub metrics (mse, pearsonr), which need the network.
    p, r = denormalize(preds.double().flatten(), task), denormalize(refs.double().flatten(), task)
    err = p - r
    mse = float((err**2).mean())
    var = float(((r - r.mean()) ** 2).mean())
    pc, rc = p - p.mean(), r - r.mean()
    denom = float(pc.norm() * rc.norm())
    return {
        "mse": round(mse, 6),
        "rmse": round(math.sqrt(mse), 6),
        "mae": round(float(err.abs().mean()), 6),
        "r2": round(1 - mse / var, 6) if var > 0 else 0.0,
        "pearson": round(float((pc * rc).sum()) / denom, 6) if denom else 0.0,
    }


def _mse(predictions, targets):
    import torch

    return torch.nn.functional.mse_loss(predictions, targets)


register_head(
    Head(
        name="regression",
        metrics=("mse",),
        label_kind="float",
        auto_class="AutoModelForSequenceClassification",
        config_kwargs=lambda task, labels: dict(num_labels=1, problem_type="regression"),
        module=lambda hidden, task, labels: pooled_classifier(hidden, task, labels, n_out=1),
        loss=lambda logits, labels: _mse(logits.squeeze(-1), labels.to(logits.dtype)),
        predict=lambda logits: logits.squeeze(-1).float(),
        peft_task_type="SEQ_CLS",
        metrics_fn=regression_metrics,
        settings=RegressionSettings,
        fit=fit_targets,
        target_norm=target_norm,
        decode=lambda p, task, labels: {"value": round(float(denormalize(p.double(), task)), 6)},
    )
)
