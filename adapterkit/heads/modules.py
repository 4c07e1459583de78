"""Building blocks of custom heads: pooling, a pooled linear classifier, and the backbone + head model."""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .labels import label_maps  # noqa: F401  (re-exported: it lived here)


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


class LabelWordsModel(nn.Module):
    """A causal LM read as a classifier. Class logits: the LM's log-probabilities of each class's label word at the
    last prompt token. Loss: the LM loss of the right label word (cross-entropy over the whole vocabulary), so the
    tuned model also *generates* the label word."""

    def __init__(self, lm, word_ids: list[int]):
        super().__init__()
        self.backbone = lm
        self.config = lm.config
        self.register_buffer("word_ids", torch.tensor(word_ids, dtype=torch.long), persistent=False)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Position of the last real token per row (works for left or right padding).
        last = (attention_mask * torch.arange(attention_mask.shape[1], device=attention_mask.device)).argmax(-1)
        hidden = self.backbone.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # LM head on the last token only: full-vocabulary logits at every position would dominate memory.
        lm_head = self.backbone.get_output_embeddings()
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logprobs = lm_head(h.to(lm_head.weight.dtype)).float().log_softmax(-1)
        logits = logprobs[:, self.word_ids]
        loss = nn.functional.nll_loss(logprobs, self.word_ids[labels]) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
