"""multi_label: several labels per text, binary cross-entropy, per-label and micro/macro F1."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .classification import pooled_classifier
from .labels import label_maps
from .registry import Head, register_head, task_settings


class MultiLabelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="A label is predicted when its sigmoid probability is at least this."
    )


def multi_label_metrics(preds, refs, labels=None, task=None) -> dict:
    """Per-label F1 and micro/macro F1 over thresholded probabilities, plus exact-match (subset) accuracy."""
    from sklearn.metrics import f1_score

    thr = task_settings(task).threshold if task is not None else 0.5
    y_pred, y_true = (preds >= thr).int().numpy(), (refs >= 0.5).int().numpy()
    per = f1_score(y_true, y_pred, average=None, zero_division=0)
    names = labels or [str(i) for i in range(y_true.shape[1])]
    return {
        "micro_f1": round(float(f1_score(y_true, y_pred, average="micro", zero_division=0)), 6),
        "macro_f1": round(float(per.mean()), 6),
        "subset_accuracy": round(float((y_pred == y_true).all(1).mean()), 6),
        "per_label_f1": {n: round(float(f), 6) for n, f in zip(names, per)},
    }


def _bce(logits, labels):
    import torch

    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


register_head(
    Head(
        name="multi_label",
        metrics=("micro_f1",),
        label_kind="multi",
        auto_class="AutoModelForSequenceClassification",
        config_kwargs=lambda task, labels: dict(label_maps(labels), problem_type="multi_label_classification"),
        module=pooled_classifier,
        loss=lambda logits, labels: _bce(logits, labels.to(logits.dtype)),
        predict=lambda logits: logits.float().sigmoid(),
        peft_task_type="SEQ_CLS",
        metrics_fn=multi_label_metrics,
        settings=MultiLabelSettings,
        decode=lambda p, task, labels: {
            "labels": [labels[i] for i, v in enumerate(p.tolist()) if v >= task_settings(task).threshold],
            "scores": {l: round(float(v), 4) for l, v in zip(labels, p.tolist())},
        },
    )
)
