"""Task heads: a registry from recipe `task.type` to how the task model is built, scored and decoded.

A head is either *native* (a transformers task class such as AutoModelForSequenceClassification, so the
export loads with plain transformers) or *custom* (a small module on the backbone's hidden states with
its own loss). Register your own with `register_head(Head(...))`; see examples/custom_head.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput


@dataclass
class Head:
    name: str
    metrics: tuple[str, ...]
    # How labels in the data files are read: "class" (one label name), "float", "multi" (several names), "tokens", "text".
    label_kind: str = "class"
    # Native: the transformers auto class and extra config for it (task_cfg, labels) -> kwargs.
    auto_class: Any = None
    config_kwargs: Callable[[Any, list | None], dict] = lambda task, labels: {}
    # Custom: (hidden_size, task_cfg, labels) -> nn.Module mapping (hidden_states, attention_mask) to logits.
    module: Callable | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    # logits -> predictions (same leading shape as the labels); None: metrics come from the loss alone
    # (extra["loss_metrics"](loss) -> dict), e.g. perplexity for causal LM.
    predict: Callable[[torch.Tensor], torch.Tensor] | None = lambda logits: logits.argmax(-1)
    # PEFT task type for methods that need one (prompt and prefix tuning).
    peft_task_type: str | None = None
    # Optional hooks: "metrics_fn"(preds, refs, labels=, task=) -> dict replaces the evaluate-module metrics (labels and
    # task are passed when it accepts them); "loss_metrics"(loss) -> dict; "settings": a pydantic model validating the
    # head's own `task:` keys; "fit"(recipe, train_label_values) before tokenizing; "decode"(pred, task, labels) -> dict for predict.
    extra: dict = field(default_factory=dict)


HEADS: dict[str, Head] = {}


def register_head(head: Head) -> Head:
    HEADS[head.name] = head
    return head


def _label_maps(labels):
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


def native_pooling(config) -> str:
    from .backbone import is_decoder

    return "last" if is_decoder(config) else "cls"


def uses_native(head: Head, task, config) -> bool:
    return head.auto_class is not None and (head.module is None or task.pooling in ("auto", native_pooling(config)))


def build_task_model(recipe, labels, quantization=None, device=None):
    """Load backbone + head. Returns (model, head_module_names): the head modules train fully and are
    saved beside the adapter; they are never quantized and never get adapters."""
    from transformers import AutoModel

    from .backbone import load_config, load_model

    head = HEADS[recipe.task.type]
    config = load_config(recipe.backbone)
    if uses_native(head, recipe.task, config):
        kwargs = head.config_kwargs(recipe.task, labels)
        if recipe.task.dropout is not None and head.auto_class is not None:
            kwargs["classifier_dropout"] = recipe.task.dropout
        if getattr(config, "pad_token_id", None) is None:
            from .backbone import load_tokenizer

            kwargs["pad_token_id"] = load_tokenizer(recipe.backbone).pad_token_id
        model = load_model(recipe.backbone, head.auto_class, quantization, device, **kwargs)
        if "wrap" in head.extra:  # (model, recipe, labels) -> (model, head_modules), e.g. LM heads that reuse the pretrained lm_head
            return head.extra["wrap"](model, recipe, labels)
        prefix = model.base_model_prefix
        names = [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]
        base = getattr(model, prefix, None)
        if base is not None and getattr(base, "pooler", None) is not None and head.label_kind != "text":
            names.append(f"{prefix}.pooler")  # BERT's pooler feeds the classifier: it is part of the head
        return model, names
    backbone = load_model(recipe.backbone, AutoModel, quantization, device)
    module = head.module(backbone.config.hidden_size, recipe.task, labels)
    return HeadModel(backbone, module, head.loss), ["head"]


def head_state_dict(model, head_modules: list[str]) -> dict[str, torch.Tensor]:
    """Head weights keyed relative to the task model (loadable into a fresh one without PEFT)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = {}
    for name in head_modules:
        for k, v in inner.get_submodule(name).state_dict().items():
            # A PEFT ModulesToSaveWrapper (SEQ_CLS prompt methods) holds a frozen original and the trained copy.
            if k.startswith("original_module.") or ".original_module." in k:
                continue
            k = k.replace("modules_to_save.default.", "")
            if "modules_to_save" not in k:
                out[f"{name}.{k}"] = v.detach().to("cpu").contiguous()
    return out


def set_head_trainable(model, head_modules: list[str]) -> None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in head_modules:
        for pname, p in inner.get_submodule(name).named_parameters():
            if "original_module" not in pname.split("."):  # PEFT's frozen original; its trained copy is beside it
                p.requires_grad_(True)


register_head(Head(
    name="sequence_classification",
    metrics=("accuracy", "f1"),
    auto_class=__import__("transformers").AutoModelForSequenceClassification,
    config_kwargs=lambda task, labels: dict(_label_maps(labels), problem_type="single_label_classification"),
    module=lambda hidden, task, labels: PooledClassifier(hidden, task, labels),
    loss=lambda logits, labels: nn.functional.cross_entropy(logits, labels),
    peft_task_type="SEQ_CLS",
))

from . import tasks  # noqa: E402,F401  token_classification, regression, multi_label register themselves
from . import lm  # noqa: E402,F401  causal_lm and label_words register themselves
