"""Building blocks of custom heads: pooling, a pooled linear classifier, and the backbone + head model."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput


def label_maps(labels) -> dict:
    return dict(num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "last":  # last non-padding token, for right-padded batches
        idx = mask.long().sum(1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), idx]
    return hidden[:, 0]


class PooledClassifier(nn.Module):
    """Pool, dropout, linear: one output per label (or `n_out`, e.g. 1 for regression)."""

    def __init__(self, hidden: int, task, labels, n_out: int | None = None):
        super().__init__()
        self.pooling = task.pooling
        self.dropout = nn.Dropout(task.dropout if task.dropout is not None else 0.1)
        self.out = nn.Linear(hidden, n_out or len(labels))

    def forward(self, hidden, mask):
        return self.out(self.dropout(pool(hidden, mask, self.pooling)))


class HeadModel(nn.Module):
    """A backbone (AutoModel) with a custom head module and loss; returns transformers-style outputs."""

    def __init__(self, backbone, head: nn.Module, loss_fn):
        super().__init__()
        self.backbone, self.head, self.loss_fn = backbone, head, loss_fn
        self.config = backbone.config

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, labels=None, inputs_embeds=None, **kwargs):
        kwargs.pop("output_hidden_states", None)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        hidden = out.last_hidden_state
        if attention_mask is None or attention_mask.shape[1] != hidden.shape[1]:  # prompt methods prepend tokens
            pad = hidden.shape[1] - (attention_mask.shape[1] if attention_mask is not None else 0)
            ones = torch.ones(hidden.shape[0], pad, dtype=torch.long, device=hidden.device)
            attention_mask = ones if attention_mask is None else torch.cat([ones, attention_mask], 1)
        logits = self.head(hidden.float(), attention_mask)
        loss = self.loss_fn(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
