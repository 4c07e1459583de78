"""`adapterkit inspect MODEL_PATH`: the module tree, what each adapter method would target, and how many parameters
each would train (count and share) at given settings. The backbone is loaded once; each method adapts a copy."""

from __future__ import annotations

import copy
import re
from collections import Counter

from torch import nn

from ..adapters import METHODS, method_settings
from ..errors import RecipeError
from .assemble import apply_adapter, build_task_model, set_head_trainable
from .recipe import recipe_from_dict

_DIGITS = re.compile(r"\.\d+(?=\.|$)")


def module_tree(model: nn.Module, max_depth: int = 8) -> list[str]:
    """Indented module tree; a ModuleList of identical blocks is shown once with its count."""
    lines: list[str] = []

    def walk(module: nn.Module, name: str, depth: int):
        own = sum(p.numel() for p in module.parameters(recurse=False))
        extra = f"  ({own:,} params)" if own else ""
        lines.append(f"{'  ' * depth}{name}: {type(module).__name__}{extra}")
        if depth >= max_depth:
            return
        children = list(module.named_children())
        if isinstance(module, nn.ModuleList) and children and len({type(c) for _, c in children}) == 1:
            lines[-1] += f" x {len(children)}"
            children = children[:1]
        for child_name, child in children:
            walk(child, child_name, depth + 1)

    walk(model, "model", 0)
    return lines


def targeted_modules(model) -> list[str]:
    """Module names PEFT wrapped, with layer indices folded to `*` and the count of each."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    names = [n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    counts = Counter(_DIGITS.sub(".*", n) for n in names)
    return [f"{k} (x{v})" if v > 1 else k for k, v in sorted(counts.items())]


def _targets_description(method: str, model) -> list[str]:
    if method == "prompt_tuning":
        return ["virtual tokens prepended to the input embeddings"]
    if method == "prefix_tuning":
        return ["key/value prefixes in every attention layer"]
    return targeted_modules(model)


def parse_settings(pairs: list[str]) -> dict:
    import yaml

    from ..config.load import parse_yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise RecipeError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set r=16")
        k, v = pair.split("=", 1)
        try:  # as `train --set` reads values: YAML 1.2 scalars (`010` is 10, `1:30` a string), aliases bounded
            value = parse_yaml(v, f"--set {k.strip()}") if v.strip() else None
        except yaml.YAMLError:
            value = v  # not YAML: the text itself, as `train --set` takes it
        except RecursionError:
            raise RecipeError(f"--set {k.strip()}: the value is nested too deeply") from None
        out[k.strip().removeprefix("adapter.")] = value
    return out


def inspect_model(
    path: str,
    methods: list[str] | None = None,
    settings: dict | None = None,
    gguf_file: str | None = None,
    quantization: str = "none",
    task: str = "sequence_classification",
    num_labels: int = 2,
) -> dict:
    """Per method: targeted modules, trainable parameters and share. Settings apply to the methods that have them."""
    settings = settings or {}
    methods = methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise RecipeError(f"--method: unknown {unknown}; expected some of {sorted(METHODS)}")
    unused = [k for k in settings if not any(k in METHODS[m].settings.model_fields for m in methods)]
    if unused:
        raise RecipeError(f"--set: {unused} is not a setting of any of the methods {methods}")
    labels = [str(i) for i in range(num_labels)]

    def recipe_for(method: str):
        fields = METHODS[method].settings.model_fields
        adapter = {"method": method, **{k: v for k, v in settings.items() if k in fields}}
        backbone = {
            "path": path,
            "gguf_file": gguf_file,
            "quantization": "none" if METHODS[method].trains_base else quantization,
        }
        return recipe_from_dict({"backbone": backbone, "adapter": adapter, "task": {"type": task}}, source="inspect")

    base_recipe = recipe_for(next((m for m in methods if not METHODS[m].trains_base), methods[0]))
    base, head_modules = build_task_model(base_recipe, labels)
    total = sum(p.numel() for p in base.parameters())
    head_params = sum(p.numel() for h in head_modules for p in base.get_submodule(h).parameters())
    report = {
        "model": path,
        "model_type": getattr(base.config, "model_type", None),
        "total_params": total,
        "quantization": quantization,
        "head_modules": head_modules,
        "head_params": head_params,
        "tree": module_tree(base),
        "methods": {},
    }
    for method in methods:
        recipe = recipe_for(method)
        if METHODS[method].trains_base:  # every weight trains (of the unquantized model: same count), no copy needed
            report["methods"][method] = dict(
                settings={},
                targets=["every parameter"],
                trainable_params=total,
                adapter_params=total,
                trainable_share=1.0,
                mergeable=True,
            )
            continue
        model = copy.deepcopy(base)
        for p in model.parameters():
            p.requires_grad_(False)
        model = apply_adapter(model, recipe, head_modules)
        set_head_trainable(model, head_modules)
        trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
        adapter_params = trainable - head_params
        report["methods"][method] = dict(
            settings=method_settings(recipe.adapter).model_dump(),
            targets=_targets_description(method, model),
            trainable_params=trainable,
            adapter_params=adapter_params,
            trainable_share=round(trainable / total, 6),
            mergeable=METHODS[method].mergeable,
        )
        del model
    return report


def format_report(report: dict, tree: bool = True) -> str:
    lines = [
        f"model: {report['model']} ({report['model_type']}), {report['total_params']:,} parameters, "
        f"quantization {report['quantization']}",
        f"task head (trained by every method): {', '.join(report['head_modules'])} = {report['head_params']:,} params",
    ]
    if tree:
        lines += ["", "module tree:"] + ["  " + line for line in report["tree"]]
    lines += ["", f"{'method':<15} {'trainable':>12} {'share':>8} {'adapter':>10}  mergeable  targets"]
    for name, m in report["methods"].items():
        lines.append(
            f"{name:<15} {m['trainable_params']:>12,} {100 * m['trainable_share']:>7.3f}% {m['adapter_params']:>10,}  "
            f"{'yes' if m['mergeable'] else 'no':<9}  {'; '.join(m['targets'])}"
        )
    return "\n".join(lines)
