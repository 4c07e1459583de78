"""Adapter methods: a registry from recipe name to a settings model and a builder of the PEFT config.

Add a method with `register_method(Method(...))`; recipes then name it under `adapter.method`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import BaseModel, ConfigDict

from ..errors import ModelError


class MethodSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Method:
    name: str
    settings: type[MethodSettings]
    # (settings, model, context) -> a peft.PeftConfig, or None to train the whole model without PEFT.
    build: Callable
    mergeable: bool = False
    description: str = ""


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def _is_linear(module) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, (torch.nn.Linear, bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))


def linear_leaf_names(model, exclude: list[str]) -> list[str]:
    """Suffix names of the linear layers inside the backbone's blocks, for auto target selection.
    All linear layers (attention and MLP) rather than PEFT's per-family default of q/v: it trains better
    at the same rank (QLoRA's finding) and is what users mean by "adapt the model"."""
    names = set()
    # The LM head (output embeddings, usually tied to the input embeddings) is not adapted, as in PEFT's all-linear.
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for full, module in model.named_modules():
        parts = full.split(".")
        if _is_linear(module) and module is not lm_head and not any(x in parts for x in exclude):
            names.add(parts[-1])
    if not names:
        raise ModelError("adapter.target_modules: no linear layers found in the backbone to adapt")
    return sorted(names)


def exclude_pattern(head_modules: list[str]) -> str | None:
    """PEFT regex keeping adapters out of the task head (and anything inside it, e.g. pooler.dense)."""
    if not head_modules:
        return None
    names = "|".join(re.escape(m.split(".")[-1]) for m in head_modules)
    return rf"(.*\.)?({names})(\..*)?"


def check_targets(model, targets: list[str] | str | None) -> None:
    if targets is None or isinstance(targets, str):
        return
    leaves = {n.split(".")[-1] for n, m in model.named_modules() if _is_linear(m)}
    missing = [t for t in targets if t.split(".")[-1] not in leaves and not any(n.endswith(t) for n, _ in model.named_modules())]
    if missing:
        raise ModelError(f"adapter.target_modules: {missing} not found in the model; linear modules there: {sorted(leaves)}")


def apply_adapter(model, recipe, head_modules: list[str], peft_task_type: str | None):
    """Wrap `model` with the recipe's adapter. Returns the (possibly PEFT-wrapped) model."""
    from peft import get_peft_model

    method = METHODS[recipe.adapter.method]
    settings = recipe.adapter.typed()
    context = dict(head_modules=head_modules, task_type=peft_task_type, recipe=recipe)
    peft_config = method.build(settings, model, context)
    if peft_config is None:
        return model
    return after_peft(get_peft_model(model, peft_config))


def after_peft(model, loaded: bool = False):
    """Fix-ups after get_peft_model (and, with loaded=True, after PeftModel.from_pretrained).

    Prefix tuning gets the cache keyword transformers 5 expects. For SEQ_CLS prompt methods PEFT wraps
    classifier/score in a ModulesToSaveWrapper and saves it in the adapter (so a plain PeftModel.from_pretrained
    works); during training we keep that wrapper (heads.set_head_trainable/head_state_dict use its trained copy).
    After loading we unwrap it so head.safetensors, adapterkit's own copy of the head, loads by plain name."""
    from peft.utils import PeftType

    if loaded:
        release_head(model)
    cfg = getattr(model, "active_peft_config", None)
    if cfg is not None and getattr(cfg, "use_dora", False):
        from .lora import keep_int8_scales

        keep_int8_scales(model)
    if cfg is not None and cfg.peft_type == PeftType.PREFIX_TUNING:
        from .prompt import accept_prefix_cache

        accept_prefix_cache(model.base_model)
    return model


def release_head(model):
    """Replace each ModulesToSaveWrapper by its active trained copy (a plain module again)."""
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            adapter = module.active_adapters[0] if module.active_adapters else None
            inner = module.modules_to_save[adapter] if adapter in module.modules_to_save else module.original_module
            setattr(parent, child, inner)
    return model


from . import bottleneck as _bottleneck  # noqa: E402,F401  (registers the built-in methods)
from . import ia3 as _ia3  # noqa: E402,F401
from . import lora as _lora  # noqa: E402,F401
from . import prompt as _prompt  # noqa: E402,F401
