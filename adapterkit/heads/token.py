"""token_classification (NER): one tag per word, cross-entropy per sub-token, entity-level seqeval metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..metrics import compute
from .labels import label_maps
from .registry import IGNORE, Head, register_head, task_settings


class TokenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_scheme: Literal["IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU"] | None = Field(
        None,
        description="seqeval strict mode with this tagging scheme (IOB2, IOE2, IOBES, BILOU); "
        "default: CoNLL-style lenient matching.",
    )


def token_metrics(preds, refs, labels=None, task=None) -> dict:
    """Entity-level P/R/F1 (seqeval) over word-level tags; positions whose reference is IGNORE are skipped."""
    p_tags, r_tags = [], []
    for p_row, r_row in zip(preds.tolist(), refs.tolist()):
        keep = [(p, r) for p, r in zip(p_row, r_row) if r != IGNORE]
        p_tags.append([labels[p] if 0 <= p < len(labels) else "O" for p, _ in keep])
        r_tags.append([labels[r] for _, r in keep])
    s = task_settings(task) if task is not None else TokenSettings()
    kw = {"mode": "strict", "scheme": s.entity_scheme} if s.entity_scheme else {}
    return compute(("seqeval",), p_tags, r_tags, seqeval=kw)


register_head(
    Head(
        name="token_classification",
        metrics=("seqeval",),
        label_kind="tokens",
        auto_class="AutoModelForTokenClassification",
        config_kwargs=lambda task, labels: label_maps(labels),
        peft_task_type="TOKEN_CLS",
        metrics_fn=token_metrics,
        settings=TokenSettings,
        inputs="words",
    )
)
