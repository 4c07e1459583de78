"""Task heads beyond sequence classification: token classification (NER), regression and multi-label.

Each is a `Head` in the registry of heads.py; the native transformers class is used where one exists, so
exports load with plain transformers. Head-specific recipe keys under `task:` are validated by the head's
`settings` model (extra["settings"])."""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from .data import is_float
from .errors import DataError
from .heads import Head, PooledClassifier, _label_maps, register_head
from .tokens import IGNORE


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


def task_settings(task):
    """The head's own settings from the recipe's `task:` extras (validated, defaults filled in)."""
    from .heads import HEADS

    model = HEADS[task.type].extra.get("settings")
    return model.model_validate(dict(task.model_extra or {})) if model else None


# ---- token classification -------------------------------------------------------------------------------

class TokenSettings(_Settings):
    entity_scheme: Literal["IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU"] | None = Field(None, description="seqeval strict mode with this tagging scheme (IOB2, IOE2, IOBES, BILOU); "
                                                        "default: CoNLL-style lenient matching.")


def token_metrics(preds, refs, labels=None, task=None) -> dict:
    """Entity-level P/R/F1 (seqeval) over word-level tags; positions whose reference is IGNORE are skipped."""
    from . import metrics

    p_tags, r_tags = [], []
    for p_row, r_row in zip(preds.tolist(), refs.tolist()):
        keep = [(p, r) for p, r in zip(p_row, r_row) if r != IGNORE]
        p_tags.append([labels[p] if 0 <= p < len(labels) else "O" for p, _ in keep])
        r_tags.append([labels[r] for _, r in keep])
    s = task_settings(task) if task is not None else TokenSettings()
    kw = {"mode": "strict", "scheme": s.entity_scheme} if s.entity_scheme else {}
    return metrics.compute(("seqeval",), p_tags, r_tags, seqeval=kw)


register_head(Head(
    name="token_classification",
    metrics=("seqeval",),
    label_kind="tokens",
    auto_class=AutoModelForTokenClassification,
    config_kwargs=lambda task, labels: _label_maps(labels),
    peft_task_type="TOKEN_CLS",
    extra={"metrics_fn": token_metrics, "settings": TokenSettings},
))


# ---- regression ---------------------------------------------------------------------------------------------

class RegressionSettings(_Settings):
    normalize_targets: bool = Field(False, description="Train on (y - mean) / std of the training targets; the statistics are "
                                                       "recorded in the run's recipe and predictions are mapped back.")
    target_mean: float | None = Field(None, description="Mean used for normalization (filled in from the training data).")
    target_std: float | None = Field(None, gt=0, description="Standard deviation used for normalization (filled in from the training data).")


def fit_targets(recipe, values) -> None:
    """Record the training targets' mean/std in recipe.task (saved with the run) when normalization is on."""
    s = task_settings(recipe.task)
    if not s.normalize_targets or s.target_mean is not None:
        return
    ys = [float(v) for v in values if is_float(v)]
    if len(ys) < 2:
        raise DataError("task.normalize_targets: need at least two numeric training targets to normalize")
    mean = sum(ys) / len(ys)
    std = math.sqrt(sum((y - mean) ** 2 for y in ys) / len(ys)) or 1.0
    recipe.task.target_mean, recipe.task.target_std = round(mean, 8), round(std, 8)


def target_norm(task):
    s = task_settings(task)
    if not s.normalize_targets:
        return None
    if s.target_mean is None or s.target_std is None:
        raise DataError("task.target_mean: normalize_targets is on but the statistics are missing (train the recipe first)")
    return s.target_mean, s.target_std


def denormalize(values: torch.Tensor, task) -> torch.Tensor:
    norm = target_norm(task) if task is not None else None
    return values * norm[1] + norm[0] if norm else values


def regression_metrics(preds, refs, labels=None, task=None) -> dict:
    # A few lines of torch instead of evaluate's Hub metrics (mse, pearsonr), which need the network.
    p, r = denormalize(preds.double().flatten(), task), denormalize(refs.double().flatten(), task)
    err = p - r
    mse = float((err ** 2).mean())
    var = float(((r - r.mean()) ** 2).mean())
    pc, rc = p - p.mean(), r - r.mean()
    denom = float(pc.norm() * rc.norm())
    return {"mse": round(mse, 6), "rmse": round(math.sqrt(mse), 6), "mae": round(float(err.abs().mean()), 6),
            "r2": round(1 - mse / var, 6) if var > 0 else 0.0, "pearson": round(float((pc * rc).sum()) / denom, 6) if denom else 0.0}


register_head(Head(
    name="regression",
    metrics=("mse",),
    label_kind="float",
    auto_class=AutoModelForSequenceClassification,
    config_kwargs=lambda task, labels: dict(num_labels=1, problem_type="regression"),
    module=lambda hidden, task, labels: PooledClassifier(hidden, task, labels, n_out=1),
    loss=lambda logits, labels: nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype)),
    predict=lambda logits: logits.squeeze(-1).float(),
    peft_task_type="SEQ_CLS",
    extra={"metrics_fn": regression_metrics, "settings": RegressionSettings, "fit": fit_targets, "target_norm": target_norm,
           "decode": lambda p, task, labels: {"value": round(float(denormalize(p.double(), task)), 6)}},
))


# ---- multi-label --------------------------------------------------------------------------------------------

class MultiLabelSettings(_Settings):
    threshold: float = Field(0.5, gt=0, lt=1, description="A label is predicted when its sigmoid probability is at least this.")


def multi_label_metrics(preds, refs, labels=None, task=None) -> dict:
    """Per-label F1 and micro/macro F1 over thresholded probabilities, plus exact-match (subset) accuracy."""
    from sklearn.metrics import f1_score

    thr = task_settings(task).threshold if task is not None else 0.5
    y_pred, y_true = (preds >= thr).int().numpy(), (refs >= 0.5).int().numpy()
    per = f1_score(y_true, y_pred, average=None, zero_division=0)
    names = labels or [str(i) for i in range(y_true.shape[1])]
    return {"micro_f1": round(float(f1_score(y_true, y_pred, average="micro", zero_division=0)), 6),
            "macro_f1": round(float(per.mean()), 6),
            "subset_accuracy": round(float((y_pred == y_true).all(1).mean()), 6),
            "per_label_f1": {n: round(float(f), 6) for n, f in zip(names, per)}}


register_head(Head(
    name="multi_label",
    metrics=("micro_f1",),
    label_kind="multi",
    auto_class=AutoModelForSequenceClassification,
    config_kwargs=lambda task, labels: dict(_label_maps(labels), problem_type="multi_label_classification"),
    module=PooledClassifier,
    loss=lambda logits, labels: nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)),
    predict=lambda logits: torch.sigmoid(logits.float()),
    peft_task_type="SEQ_CLS",
    extra={"metrics_fn": multi_label_metrics, "settings": MultiLabelSettings,
           "decode": lambda p, task, labels: {"labels": [labels[i] for i, v in enumerate(p.tolist()) if v >= task_settings(task).threshold],
                                               "scores": {l: round(float(v), 4) for l, v in zip(labels, p.tolist())}}},
))
