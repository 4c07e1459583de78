"""Full fine-tuning, the reference method: the (full-precision) backbone's own weights train, no PEFT wrapper.
`trainable_layers: N` trains only the N blocks nearest the head (and the head), `train_embeddings` the embeddings."""

from __future__ import annotations

from pydantic import Field

from ..config.schema import MAX_WIDTH
from ..errors import ModelError
from .registry import Method, MethodSettings, register_method
from .targets import num_layers


class FullSettings(MethodSettings):
    trainable_layers: int | None = Field(
        None,
        ge=0,
        le=MAX_WIDTH,
        description="Train only the top N blocks (and the task head; 0: the head alone, a linear probe); every weight when omitted.",
    )
    train_embeddings: bool | None = Field(
        None, description="With trainable_layers: also train the input embeddings (default false)."
    )


def blocks(model):
    """The backbone's list of transformer blocks (encoder.layer, model.layers, ...): the ModuleList of
    num_hidden_layers modules."""
    from torch import nn

    n = num_layers(model)
    found = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not found:
        raise ModelError("adapter.trainable_layers: cannot find the backbone's list of blocks")
    return found[0]


def _full(settings: FullSettings, model, ctx):
    if settings.trainable_layers is None:
        if settings.train_embeddings is not None:
            raise ModelError("adapter.train_embeddings: only used with adapter.trainable_layers")
        for p in model.parameters():
            p.requires_grad_(True)
        return None
    layers = blocks(model)
    if settings.trainable_layers > len(layers):
        raise ModelError(f"adapter.trainable_layers: {settings.trainable_layers} > the backbone's {len(layers)} blocks")
    for p in model.parameters():
        p.requires_grad_(False)  # the head modules are made trainable after this (model/assemble.py)
    for block in list(layers)[len(layers) - settings.trainable_layers :]:
        block.requires_grad_(True)
    if settings.train_embeddings:
        model.get_input_embeddings().requires_grad_(True)
    return None


# 1e-4: every weight moves; the adapters' 5e-4..2e-3 wreck a pretrained encoder (CoNLL: benchmarks/results/conll_ner.md).
register_method(
    Method(
        "full",
        FullSettings,
        _full,
        mergeable=True,
        trains_base=True,
        default_lr=1e-4,
        description="Full fine-tuning (reference; needs quantization: none); `trainable_layers` freezes all but the top blocks.",
    )
)
