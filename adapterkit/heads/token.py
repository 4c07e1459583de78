"""token_classification (NER): one tag per word, cross-entropy per sub-token, entity-level seqeval metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    o_weight: float | Literal["auto"] = Field(
        "auto",
        description="Loss weight of the `O` tag (entity tags weigh 1). auto: min(1, 5 x entity tokens / `O` tokens "
        "of the training split), so `O` weighs as if entity tags made a sixth of the tokens, CoNLL-2003's own density "
        "(1 there, 0.28 on a set where 5% of tokens are entities: benchmarks/results/sparse_ner_cause.md); 1 turns it off.",
    )

    @field_validator("o_weight")
    @classmethod
    def _share(cls, value):
        if value != "auto" and not 0 < value <= 1:
            raise ValueError(f"{value!r}: expected auto or a weight in (0, 1]")
        return value


AUTO_O_RATIO = 5.0  # CoNLL-2003 train has 0.20 entity tokens per O token: the recipes' density weighs O at 1


def o_weights(task, labels, train) -> list[float] | None:
    """Per-tag loss weights: `O` at task.o_weight (auto: from the training split's tag counts), the rest at 1;
    None when `O` weighs 1 (or the label map has no `O`): the plain loss."""
    if not labels or "O" not in labels:
        return None
    s = task_settings(task)
    if s.o_weight == "auto":
        o = labels.index("O")
        tags = [t for row in train["labels"] for t in row if t != IGNORE]
        outside = sum(1 for t in tags if t == o)
        weight = min(1.0, AUTO_O_RATIO * (len(tags) - outside) / outside) if outside else 1.0
    else:
        weight = float(s.o_weight)
    if weight >= 1.0:
        return None
    return [round(weight, 4) if label == "O" else 1.0 for label in labels]


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


def entity_counts(preds, refs, labels):
    """Per sentence and entity type: gold entities, predicted entities, matched ones (CoNLL-style lenient matching,
    seqeval's default), and per sentence the correct and scored tokens. Entity F1 over any subset of sentences is a
    sum of these rows: `adapterkit compare`'s 1,000 bootstrap resamples of CoNLL test take well under a second
    instead of ten minutes of seqeval reports. None under entity_scheme (strict matching): seqeval scores those."""
    import numpy as np
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for p_row, r_row in zip(preds.tolist(), refs.tolist()):
        keep = [(p, r) for p, r in zip(p_row, r_row) if r != IGNORE]
        p_tags = [labels[p] if 0 <= p < len(labels) else "O" for p, _ in keep]
        r_tags = [labels[r] for _, r in keep]
        rows.append((set(get_entities(p_tags)), set(get_entities(r_tags)), p_tags, r_tags))
    types = sorted({e[0] for pe, re_, _, _ in rows for e in pe | re_})
    index = {t: i for i, t in enumerate(types)}
    gold, pred, hit = (np.zeros((len(rows), len(types))) for _ in range(3))
    tokens = np.zeros((len(rows), 2))
    for i, (pe, re_, p_tags, r_tags) in enumerate(rows):
        for e in re_:
            gold[i, index[e[0]]] += 1
        for e in pe:
            pred[i, index[e[0]]] += 1
        for e in pe & re_:
            hit[i, index[e[0]]] += 1
        tokens[i] = (sum(a == b for a, b in zip(p_tags, r_tags)), len(r_tags))
    return gold, pred, hit, tokens


def counts_metrics(counts, idx) -> dict:
    """precision, recall, f1 (micro), accuracy (tokens) and macro_f1 of the sentences `idx` from entity_counts."""
    import numpy as np

    gold, pred, hit, tokens = (c[idx].sum(axis=0) for c in counts)

    def f1(h, p, g):
        return np.where(p + g > 0, 2 * h / np.maximum(p + g, 1), 0.0)

    seen = (gold + pred) > 0
    precision = hit.sum() / pred.sum() if pred.sum() else 0.0
    recall = hit.sum() / gold.sum() if gold.sum() else 0.0
    out = {
        "precision": precision,
        "recall": recall,
        "f1": f1(hit.sum(), pred.sum(), gold.sum()),
        "accuracy": tokens[0] / tokens[1] if tokens[1] else 0.0,
        "macro_f1": f1(hit, pred, gold)[seen].mean() if seen.any() else 0.0,
    }
    return {k: round(float(v), 6) for k, v in out.items()}  # as metrics.compute rounds seqeval's


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
        class_weights=o_weights,
        inputs="words",
    )
)
