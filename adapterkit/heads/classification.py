"""sequence_classification: one label per text, cross-entropy, accuracy and macro F1."""

from __future__ import annotations

from torch import nn
from transformers import AutoModelForSequenceClassification

from .modules import PooledClassifier, label_maps
from .registry import Head, register_head


def _cross_entropy(logits, labels):
    return nn.functional.cross_entropy(logits, labels)


register_head(
    Head(
        name="sequence_classification",
        metrics=("accuracy", "f1"),
        auto_class=AutoModelForSequenceClassification,
        config_kwargs=lambda task, labels: dict(label_maps(labels), problem_type="single_label_classification"),
        module=lambda hidden, task, labels: PooledClassifier(hidden, task, labels),
        loss=_cross_entropy,
        peft_task_type="SEQ_CLS",
    )
)
