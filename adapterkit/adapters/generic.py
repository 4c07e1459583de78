"""`adapter.method: peft`: any PEFT method type by name (`peft_type`), with that type's own keyword arguments,
validated against PEFT's own config class: an unknown key or a wrongly typed value is one line naming the key.

adapterkit fills in only what a recipe cannot know: the target modules (every linear layer of the backbone, as for
`lora`, unless the type has its own per-family default or the recipe names them), the task head kept out of the
adapter, and the PEFT task type of prompt-learning methods. Which types work on which backbones is measured, not
assumed: docs/peft-types.md (written by benchmarks/peft_types.py) lists every type tried and why some are refused.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ..config.schema import key_error, value_problem
from ..errors import ModelError
from .prompt import accept_prefix_cache
from .registry import Method, MethodSettings, register_method
from .targets import LayerSpec, exclude_pattern, linear_leaf_names, resolve_layers

# Keys of every PEFT config that describe where an adapter is loaded from or that adapterkit sets: not recipe keys.
RESERVED = {
    "peft_type",
    "task_type",
    "inference_mode",
    "base_model_name_or_path",
    "revision",
    "auto_mapping",
    "runtime_config",
    "peft_version",
}
# Types whose own defaults pick their targets by model family (keys/values/FFN for IA3); LN tuning targets every
# norm layer; every other type with target_modules defaults to all linear layers, like adapterkit's LoRA.
OWN_DEFAULT_TARGETS = {"IA3"}


# Types refused up front, with the reason (docs/peft-types.md): not adapters of one model's layers, inputs a recipe
# cannot give, or measured not to work here.
REFUSED = {
    "xlora": "mixes several already trained LoRA adapters (needs their folders); train those, then combine with `adapterkit merge`",
    "poly": "multi-task routing that needs a task id with every example",
    "multitask_prompt_tuning": "needs a task id with every example",
    "adaption_prompt": "Llama-family attention only (LLaMA-Adapter); not a BERT/encoder method",
    "cpt": "context-aware prompt tuning needs per-example template token types in the data",
    "trainable_tokens": "trains chosen token embeddings (token_indices), not a task adapter",
    "cartridge": "a compressed KV-cache prefix for decoders, initialised from a corpus",
    "bottleneck": "adapterkit's own method: use `adapter.method: bottleneck`",
    "shadow": "PEFT 0.21's shadow layers fail on BERT's linear layers (AttributeError: 'ShadowCarrier' object has no attribute 'view')",
}


def config_class(peft_type: str):
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    name = str(peft_type).upper()
    if name not in PeftType.__members__ or PeftType[name] not in PEFT_TYPE_TO_CONFIG_MAPPING:
        known = sorted(m.lower() for m in PeftType.__members__ if PeftType[m] in PEFT_TYPE_TO_CONFIG_MAPPING)
        raise key_error("peft_type", f"{peft_type!r} is not a PEFT method type; expected one of {known}")
    if name.lower() in REFUSED:
        raise key_error("peft_type", f"{name.lower()} is not supported through adapterkit: {REFUSED[name.lower()]}")
    return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[name]]


def config_fields(cls) -> dict[str, Any]:
    """Recipe-settable fields of a PEFT config class -> their type hints."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a hint PEFT cannot resolve at runtime: accept any value for it
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init and f.name not in RESERVED}


class PeftSettings(MethodSettings):
    """`peft_type` and the keyword arguments of that type's PEFT config class."""

    model_config = ConfigDict(extra="allow")
    peft_type: str = Field(
        description="A PEFT method type (lora, loha, lokr, vera, adalora, oft, boft, ln_tuning, ...); every other "
        "key of this section is a keyword argument of its PEFT config class (see docs/peft-types.md)."
    )
    layers: LayerSpec = Field(
        None, description="Blocks to adapt (`top:N`, `bottom:N`, indices), for types with layers_to_transform."
    )

    @model_validator(mode="after")
    def _check_against_peft(self):
        cls = config_class(self.peft_type)
        fields = config_fields(cls)
        for key, value in (self.model_extra or {}).items():
            if key not in fields:
                raise key_error(key, f"not a setting of PEFT's {cls.__name__}; its settings: {sorted(fields)}")
            problem = value_problem(fields[key], value)  # lax validation would read `r: true` as 1
            if problem:
                raise key_error(f"{key}.{problem[0]}" if problem[0] else key, problem[1])
            if key in ("target_modules", "layers_to_transform") and value == []:  # PEFT reads [] as "not given"
                raise key_error(key, "an empty list; name the modules or blocks, or omit the key for PEFT's default")
            try:
                TypeAdapter(fields[key]).validate_python(value, strict=False)
            except ValidationError as e:
                raise key_error(
                    key, f"{e.errors()[0]['msg']} (PEFT's {cls.__name__} takes {_type_text(fields[key])})"
                ) from None
            except Exception:  # noqa: BLE001  a hint pydantic cannot check: PEFT's own __post_init__ checks it
                continue
        return self


def _type_text(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def build_config(s: PeftSettings, model, ctx):
    cls = config_class(s.peft_type)
    fields = config_fields(cls)
    kwargs = dict(s.model_extra or {})
    if "target_modules" in fields and "target_modules" not in kwargs:
        if s.peft_type.upper() == "LN_TUNING":  # PEFT has per-family defaults for few families: every norm layer
            kwargs["target_modules"] = norm_leaf_names(model, list(ctx.head_modules))
        elif s.peft_type.upper() not in OWN_DEFAULT_TARGETS:
            kwargs["target_modules"] = linear_leaf_names(model, list(ctx.head_modules))
    if s.layers is not None:
        if "layers_to_transform" not in fields or "layers_to_transform" in kwargs:
            raise ModelError(
                f"adapter.layers: PEFT's {cls.__name__} has no layers_to_transform"
                if "layers_to_transform" not in fields
                else "adapter.layers: give adapter.layers or adapter.layers_to_transform, not both"
            )
        kwargs["layers_to_transform"] = resolve_layers(s.layers, model)
    if "exclude_modules" in fields and "exclude_modules" not in kwargs and ctx.head_modules:
        kwargs["exclude_modules"] = exclude_pattern(ctx.head_modules)
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ModelError(
            f"adapter: PEFT's {cls.__name__} refused these settings: {str(e).splitlines()[0][:240]}"
        ) from None
    if config.is_prompt_learning:
        if not ctx.peft_task_type:
            raise ModelError(
                f"adapter.peft_type: {s.peft_type} needs a task with a PEFT task type; task.type {ctx.task_type_name!r} has none"
            )
        config.task_type = ctx.peft_task_type
    return config


def type_merges(settings: PeftSettings) -> bool:
    """Whether PEFT's layers of this type implement merging into the base weights (a merged export then checks it)."""
    import importlib
    import inspect

    name = str(settings.peft_type).lower()
    try:
        module = importlib.import_module(f"peft.tuners.{name}.layer")
    except ImportError:
        return False
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ == module.__name__ and "merge" in vars(cls):
            try:
                return "raise NotImplementedError" not in inspect.getsource(
                    vars(cls)["merge"]
                )  # some types only stub it
            except (OSError, TypeError):
                return True
    return False


def _after_wrap(model) -> None:
    from peft.utils import PeftType

    if model.active_peft_config.peft_type == PeftType.PREFIX_TUNING:  # the same bridge as `method: prefix_tuning`
        accept_prefix_cache(model.base_model)


def norm_leaf_names(model, exclude) -> list[str]:
    """Suffix names of the normalisation layers (LN tuning's targets) outside the head."""
    from torch import nn

    names = {
        n.split(".")[-1]
        for n, m in model.named_modules()
        if (isinstance(m, nn.LayerNorm) or "norm" in type(m).__name__.lower())
        and not any(x in n.split(".") for x in exclude)
    }
    if not names:
        raise ModelError("adapter.target_modules: no normalisation layers found for ln_tuning; list them")
    return sorted(names)


register_method(
    Method(
        "peft",
        PeftSettings,
        build_config,
        mergeable=False,
        mergeable_for=type_merges,
        after_wrap=_after_wrap,
        description="Any PEFT method type by name (`peft_type`) with its own keyword arguments, checked by PEFT's config class.",
    )
)
