"""sequence_classification: one label per text, cross-entropy, accuracy and macro F1."""

from __future__ import annotations

from .labels import label_maps
from .registry import Head, register_head


def _cross_entropy(logits, labels):
    import torch

    return torch.nn.functional.cross_entropy(logits, labels)


def pooled_classifier(hidden, task, labels, n_out=None):
    from .modules import PooledClassifier

    return PooledClassifier(hidden, task, labels, n_out)


register_head(
    Head(
        name="sequence_classification",
        metrics=("accuracy", "f1"),
        auto_class="AutoModelForSequenceClassification",
        config_kwargs=lambda task, labels: dict(label_maps(labels), problem_type="single_label_classification"),
        module=pooled_classifier,
        loss=_cross_entropy,
        peft_task_type="SEQ_CLS",
    )
)
