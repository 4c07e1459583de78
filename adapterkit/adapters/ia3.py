"""IA3 (learned rescaling of keys, values and feed-forward activations) through PEFT."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..errors import ModelError
from .registry import Method, MethodSettings, register_method
from .targets import LayerSpec, Targets, check_targets, exclude_pattern, layer_regex, resolve_layers


class IA3Settings(MethodSettings):
    target_modules: Annotated[list[str] | None, Targets] = Field(
        None, description="Modules to rescale; PEFT's per-family default (keys, values, FFN output) when omitted."
    )
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules scale their input (FFN); PEFT's default when omitted."
    )
    layers: LayerSpec = Field(
        None, description="Blocks to adapt: `top:N`, `bottom:N` or a list of indices; every block when omitted."
    )


def ia3_defaults(model_type: str) -> tuple[list[str], list[str]]:
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    )

    targets = TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(model_type)
    if targets is None:
        raise ModelError(f"adapter.target_modules: IA3 has no default targets for model type {model_type!r}; list them")
    return list(targets), list(TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type, []))


def _ia3_config(s: IA3Settings, model, ctx):
    from peft import IA3Config

    check_targets(model, s.target_modules)
    if s.target_modules is None:
        targets, ff = ia3_defaults(model.config.model_type)
    else:
        targets, ff = s.target_modules, []
    if s.feedforward_modules is not None:
        ff = s.feedforward_modules
    missing = [f for f in ff if f not in targets]
    if missing:
        raise ModelError(f"adapter.feedforward_modules: {missing} must also be in target_modules {targets}")
    layers = resolve_layers(s.layers, model)
    target_spec: list[str] | str = targets
    if layers is not None:  # PEFT's IA3Config has no layers_to_transform: restrict the targets by a regex instead
        target_spec = layer_regex(model, targets, layers)
    return IA3Config(
        target_modules=target_spec, feedforward_modules=ff, exclude_modules=exclude_pattern(ctx.head_modules)
    )


register_method(
    Method(
        "ia3",
        IA3Settings,
        _ia3_config,
        mergeable=True,
        description="IA3: learned vectors rescaling keys, values and FFN activations.",
    )
)
