"""LoRA and its variants (DoRA, rsLoRA) through PEFT."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .registry import Method, MethodSettings, register_method
from .targets import check_targets, exclude_pattern, linear_leaf_names


class LoraSettings(MethodSettings):
    r: int = Field(8, gt=0, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) for rsLoRA).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(None, description="Module names to adapt; all linear layers of the backbone when omitted.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")


def _lora_config(settings: LoraSettings, model, ctx, **variant):
    from peft import LoraConfig

    exclude = list(ctx.head_modules)
    targets = settings.target_modules
    check_targets(model, targets)
    if targets is None:
        targets = linear_leaf_names(model, exclude)
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
                      exclude_modules=exclude_pattern(exclude), bias=settings.bias, **variant)


register_method(Method("lora", LoraSettings, _lora_config, mergeable=True, description="Low-rank update W + BA (PEFT LoRA)."))


def _keep_int8_scale(module, args):
    # PEFT's DoRA (bnb path) leaves weight.CB set after each step, so bitsandbytes re-runs init_8bit_state and copies
    # weight.SCB (already moved to state) as None: the next forward fails. Hand the scale back before that happens.
    w = module.weight
    if getattr(w, "CB", None) is not None and getattr(w, "SCB", None) is None and module.state.SCB is not None:
        w.SCB = module.state.SCB


def keep_int8_scales(model) -> None:
    """Install _keep_int8_scale on every int8 linear layer (once); needed for DoRA on int8 backbones."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not getattr(module, "_adapterkit_scale_hook", False):
            module.register_forward_pre_hook(_keep_int8_scale)
            module._adapterkit_scale_hook = True


def _dora_config(settings, model, ctx):
    keep_int8_scales(model)
    return _lora_config(settings, model, ctx, use_dora=True)


register_method(Method("dora", LoraSettings, _dora_config, mergeable=True, after_wrap=keep_int8_scales,
                       description="Weight-decomposed LoRA (magnitude + direction)."))
register_method(Method("rslora", LoraSettings, lambda s, m, c: _lora_config(s, m, c, use_rslora=True), mergeable=True,
                       description="LoRA scaled by alpha/sqrt(r), stable at high rank."))
