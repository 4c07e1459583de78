"""Which modules of a backbone an adapter targets: every linear layer by default, never the task head; and which
blocks (`adapter.layers: top:N | bottom:N | [i, ...]`)."""

from __future__ import annotations

import re
from typing import Annotated, Union

from pydantic import BeforeValidator

from ..errors import ModelError


def is_linear(module) -> bool:
    import bitsandbytes as bnb
    import torch

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
    missing = [
        t
        for t in targets
        if t.split(".")[-1] not in leaves and not any(n.endswith(t) for n, _ in model.named_modules())
    ]
    if missing:
        raise ModelError(
            f"adapter.target_modules: {missing} not found in the model; linear modules there: {sorted(leaves)}"
        )


def non_empty(meaning: str) -> BeforeValidator:
    """Refuse an empty list for a key where PEFT reads [] as "not given" (every block, its default targets):
    `adapter.layers: []` trained every layer. `meaning`: what to do instead."""

    def check(value):
        if isinstance(value, list) and not value:
            raise ValueError(f"an empty list; {meaning}")
        return value

    return BeforeValidator(check)


BLOCKS = non_empty("list block indices, or omit the key to adapt every block")
LayerSpec = Annotated[Union[list[int], str, None], BLOCKS]
Targets = non_empty("name the modules, or omit the key for the default targets")


def num_layers(model) -> int:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(getattr(cfg, "text_config", None), "num_hidden_layers", None)
    if n is None:
        raise ModelError("adapter.layers: the backbone's config has no num_hidden_layers; list the layer indices")
    return int(n)


def resolve_layers(spec: LayerSpec, model, field: str = "adapter.layers") -> list[int] | None:
    """`top:N` (the N blocks nearest the head), `bottom:N`, or explicit indices -> sorted block indices (None: all)."""
    if spec is None:
        return None
    n = num_layers(model)
    if isinstance(spec, str):
        m = re.fullmatch(r"(top|bottom):(\d+)", spec.strip())
        if not m or not 0 < int(m.group(2)) <= n:
            raise ModelError(
                f"{field}: {spec!r}; expected top:N or bottom:N with 1 <= N <= {n}, or a list of layer indices"
            )
        k = int(m.group(2))
        return list(range(n - k, n)) if m.group(1) == "top" else list(range(k))
    bad = [i for i in spec if not 0 <= i < n]
    if bad:
        raise ModelError(f"{field}: {bad} out of range; the backbone has layers 0..{n - 1}")
    return sorted(set(spec))


def block_list_name(model) -> str:
    """The attribute name of the backbone's list of blocks (`layer` in BERT's encoder.layer, `layers` in Llama's)."""
    import torch

    n = num_layers(model)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) == n:
            return name.split(".")[-1]
    raise ModelError("adapter.layers: cannot find the backbone's list of blocks")


def layer_regex(model, names: list[str], layers: list[int]) -> str:
    """A PEFT target regex: modules named `names` (suffixes) inside the given blocks only, for methods whose PEFT
    config has no layers_to_transform (IA3)."""
    idx = "|".join(str(i) for i in layers)
    leaves = "|".join(re.escape(n) for n in names)
    return rf"^(.*\.)?{re.escape(block_list_name(model))}\.({idx})\.(.*\.)?({leaves})$"
