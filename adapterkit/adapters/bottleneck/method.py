"""The recipe side of bottleneck adapters: `adapter.method: bottleneck` and its settings."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...errors import ModelError
from ..registry import Method, MethodSettings, register_method
from ..targets import LayerSpec, exclude_pattern, resolve_layers
from .model import FAMILIES
from .config import BottleneckConfig


class BottleneckSettings(MethodSettings):
    placement: Literal["houlsby", "pfeiffer", "parallel"] = Field("pfeiffer", description="Where adapters go: houlsby (after attention and FFN outputs), pfeiffer (after FFN output), parallel (beside the FFN).")
    bottleneck_size: int | None = Field(64, gt=0, description="Adapter width; hidden // reduction_factor when null.")
    reduction_factor: int = Field(16, gt=0, description="Hidden size / adapter width, used when bottleneck_size is null.")
    activation: str = Field("relu", description="Activation inside the adapter (a transformers activation name).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after the activation.")
    scaling: float = Field(1.0, gt=0, description="Multiplier on the adapter output (parallel adapters often use 4).")
    layer_norm: bool = Field(False, description="LayerNorm on the adapter input.")
    init_weights: bool = Field(True, description="Zero up-projection so training starts from the base model.")
    layers: LayerSpec = Field(None, description="Blocks to adapt: `top:N`, `bottom:N` or a list of indices; every block when omitted.")
    train_layer_norms: bool = Field(False, description="Also train the layer norms of every block (BERT: and the embeddings'), as Houlsby et al. do; saved with the adapter.")


def _bottleneck_config(s: BottleneckSettings, model, ctx):
    from transformers.activations import ACT2FN

    if s.activation not in ACT2FN:
        raise ModelError(f"adapter.activation: {s.activation!r} is not a transformers activation; try relu, gelu, silu or tanh")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ModelError(f"adapter.method: bottleneck has no placement table for model type {model_type!r}; known: {sorted(FAMILIES)}")
    layers = resolve_layers(s.layers, model)
    return BottleneckConfig(placement=s.placement, bottleneck_size=s.bottleneck_size, reduction_factor=s.reduction_factor,
                            activation=s.activation, dropout=s.dropout, scaling=s.scaling, layer_norm=s.layer_norm,
                            init_weights=s.init_weights, layers_to_transform=layers,
                            exclude_modules=exclude_pattern(ctx.head_modules),
                            modules_to_save=list(FAMILIES[model_type]["norms"]) if s.train_layer_norms else None)


register_method(Method("bottleneck", BottleneckSettings, _bottleneck_config, mergeable=False,
                       description="Bottleneck adapters h + up(act(down(h))) (Houlsby, Pfeiffer, parallel)."))
