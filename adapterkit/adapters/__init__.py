"""Adapter methods: the registry (`registry.py`), target selection (`targets.py`) and one module per method
family. The built-in methods register here, on import, as PEFT's tuners do.

    lora.py         lora, dora, rslora (PEFT LoRA)
    ia3.py          ia3 (PEFT IA3)
    prompt.py       prompt_tuning, prefix_tuning (PEFT)
    bottleneck/     bottleneck adapters: our own PEFT method (config, layer, model); fusion and stack of them
    full.py         full fine-tuning, the reference
    generic.py      `peft`: any PEFT method type by name, checked by PEFT's own config class
"""

from . import bottleneck, full, generic, ia3, lora, prompt  # noqa: F401  (each registers its methods)
from .registry import METHODS, Method, MethodContext, MethodSettings, is_mergeable, method_settings, register_method
from .targets import check_targets, exclude_pattern, linear_leaf_names

BUILTIN_METHODS = frozenset(METHODS)  # what docs/recipe-reference.md documents; plugin methods come later

__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "Method",
    "MethodContext",
    "MethodSettings",
    "check_targets",
    "exclude_pattern",
    "is_mergeable",
    "linear_leaf_names",
    "method_settings",
    "register_method",
]
