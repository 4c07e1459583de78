"""The recipe side of bottleneck adapters: `adapter.method: bottleneck` and its settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...config.schema import MAX_WIDTH
from ...errors import ModelError
from ..registry import Method, MethodSettings, register_method
from ..targets import LayerSpec, exclude_pattern, resolve_layers
from .families import FAMILIES

# Each placement's design when a recipe leaves it open: AdapterHub's seq_bn (pfeiffer) and double_seq_bn (houlsby), so a
# recipe compares like for like with AdapterHub (benchmarks/results/adapterhub_sst2.md); parallel as He et al. (zero
# up-projection, reading the block input).
DESIGNS: dict[str, dict] = {
    "pfeiffer": dict(activation="relu", init_weights="bert", adapter_input="post_norm"),
    "houlsby": dict(activation="swish", init_weights="bert", adapter_input="projection"),
    "parallel": dict(activation="relu", init_weights=True, adapter_input="projection"),
}


def design(s: BottleneckSettings, model_type: str | None) -> dict:
    """activation, init_weights and adapter_input: the recipe's, else the placement's design (post_norm only where
    the family normalises after each block, and not with train_layer_norms: those norms sit inside the wrapped block)."""
    d = {k: getattr(s, k) if getattr(s, k) is not None else v for k, v in DESIGNS[s.placement].items()}
    if s.adapter_input is None and ("attn_block" not in FAMILIES.get(model_type or "", {}) or s.train_layer_norms):
        d["adapter_input"] = "projection"
    return d


class BottleneckSettings(MethodSettings):
    placement: Literal["houlsby", "pfeiffer", "parallel"] = Field(
        "pfeiffer",
        description="Where adapters go: houlsby (after attention and FFN outputs), pfeiffer (after FFN output), parallel (beside the FFN).",
    )
    bottleneck_size: int | None = Field(
        64, gt=0, le=MAX_WIDTH, description="Adapter width; hidden // reduction_factor when null."
    )
    reduction_factor: int = Field(
        16, gt=0, le=MAX_WIDTH, description="Hidden size / adapter width, used when bottleneck_size is null."
    )
    activation: str | None = Field(
        None,
        description="Activation inside the adapter (a transformers activation name); when omitted, the placement's design (see DESIGNS): relu for pfeiffer and parallel, swish for houlsby.",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after the activation.")
    scaling: float = Field(1.0, gt=0, description="Multiplier on the adapter output (parallel adapters often use 4).")
    layer_norm: bool = Field(False, description="LayerNorm on the adapter input.")
    init_weights: bool | Literal["bert"] | None = Field(
        None,
        description="true: zero up-projection, so training starts from the base model; bert: both projections from N(0, 0.02), a small non-identity start (AdapterHub's default); when omitted, the placement's design: bert for pfeiffer and houlsby, true for parallel.",
    )
    adapter_input: Literal["projection", "post_norm"] | None = Field(
        None,
        description="What a sequential adapter reads: projection (the output projection, before the block's residual and LayerNorm) or post_norm (LayerNorm(projection + residual), its output added before that LayerNorm: AdapterHub's seq_bn; post-norm encoders only); when omitted, the placement's design: post_norm for pfeiffer on post-norm encoders (BERT family) without train_layer_norms, projection otherwise.",
    )
    layers: LayerSpec = Field(
        None, description="Blocks to adapt: `top:N`, `bottom:N` or a list of indices; every block when omitted."
    )
    train_layer_norms: bool = Field(
        False,
        description="Also train the layer norms of every block (BERT: and the embeddings'), as Houlsby et al. do; saved with the adapter.",
    )

    @field_validator("init_weights", mode="before")
    @classmethod
    def _init_word(cls, value):
        # one line naming the choices, not pydantic's report per member of the union
        if value is not None and not isinstance(value, bool) and value != "bert":
            raise ValueError(f"{value!r} is not an initialisation; expected true, false or bert")
        return value


def _bottleneck_config(s: BottleneckSettings, model, ctx):
    from transformers.activations import ACT2FN

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ModelError(
            f"adapter.method: bottleneck has no placement table for model type {model_type!r}; known: {sorted(FAMILIES)}"
        )
    d = design(s, model_type)
    if d["activation"] not in ACT2FN:
        raise ModelError(
            f"adapter.activation: {d['activation']!r} is not a transformers activation; try relu, gelu, silu or tanh"
        )
    if d["adapter_input"] == "post_norm" and s.placement == "parallel":
        raise ModelError(
            "adapter.adapter_input: post_norm is for the sequential placements (houlsby, pfeiffer), not parallel"
        )
    if d["adapter_input"] == "post_norm" and "attn_block" not in FAMILIES[model_type]:
        raise ModelError(
            f"adapter.adapter_input: post_norm needs a post-norm encoder (BERT family); {model_type!r} normalises before each block"
        )
    if d["adapter_input"] == "post_norm" and s.train_layer_norms:
        raise ModelError(
            "adapter.train_layer_norms: not with adapter_input post_norm (the norms are inside the wrapped "
            "blocks); use adapter_input: projection"
        )
    layers = resolve_layers(s.layers, model)
    from .registration import BottleneckConfig

    return BottleneckConfig(
        placement=s.placement,
        bottleneck_size=s.bottleneck_size,
        reduction_factor=s.reduction_factor,
        dropout=s.dropout,
        scaling=s.scaling,
        layer_norm=s.layer_norm,
        **d,
        layers_to_transform=layers,
        exclude_modules=exclude_pattern(ctx.head_modules),
        modules_to_save=list(FAMILIES[model_type]["norms"]) if s.train_layer_norms else None,
    )


# 1.5e-3 and its double stay clear of collapse on the robustness grid with 10% warmup and score above 1e-3; 4e-3 collapsed
# a sparse-NER seed, and with 6% warmup so did 2e-3 (benchmarks/results/robustness_grid.md).
register_method(
    Method(
        "bottleneck",
        BottleneckSettings,
        _bottleneck_config,
        mergeable=False,
        mixes_in_batch=lambda s: not s.train_layer_norms,  # PEFT cannot route a LayerNorm copy per row
        default_lr=1.5e-3,
        default_warmup=0.1,
        description="Bottleneck adapters h + up(act(down(h))) (Houlsby, Pfeiffer, parallel).",
    )
)
