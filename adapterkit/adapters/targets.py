"""Which modules of a backbone an adapter targets: every linear layer by default, never the task head."""
from __future__ import annotations

import re

import torch

from ..errors import ModelError


def is_linear(module) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, (torch.nn.Linear, bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))


def linear_leaf_names(model, exclude) -> list[str]:
    """Suffix names of the linear layers inside the backbone's blocks, for auto target selection.
    All linear layers (attention and MLP) rather than PEFT's per-family default of q/v: it trains better
    at the same rank (QLoRA's finding) and is what users mean by "adapt the model"."""
    names = set()
    # The LM head (output embeddings, usually tied to the input embeddings) is not adapted, as in PEFT's all-linear.
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for full, module in model.named_modules():
        parts = full.split(".")
        if is_linear(module) and module is not lm_head and not any(x in parts for x in exclude):
            names.add(parts[-1])
    if not names:
        raise ModelError("adapter.target_modules: no linear layers found in the backbone to adapt")
    return sorted(names)


def exclude_pattern(head_modules) -> str | None:
    """PEFT regex keeping adapters out of the task head (and anything inside it, e.g. pooler.dense)."""
    if not head_modules:
        return None
    names = "|".join(re.escape(m.split(".")[-1]) for m in head_modules)
    return rf"(.*\.)?({names})(\..*)?"


def check_targets(model, targets: list[str] | str | None) -> None:
    if targets is None or isinstance(targets, str):
        return
    leaves = {n.split(".")[-1] for n, m in model.named_modules() if is_linear(m)}
    missing = [t for t in targets if t.split(".")[-1] not in leaves and not any(n.endswith(t) for n, _ in model.named_modules())]
    if missing:
        raise ModelError(f"adapter.target_modules: {missing} not found in the model; linear modules there: {sorted(leaves)}")
