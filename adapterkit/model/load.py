"""A trained model rebuilt from its run directory (or, for zero-shot scoring, its base model alone)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import METHODS
from ..errors import DataError, RunDirError
from ..files import check_safetensors, read_json
from ..heads import HEADS
from .assemble import after_peft, build_task_model, finish_model, head_state_dict
from .backbone import load_model
from .identity import check_identity, require_finished
from .mixed import MixGroup
from .recipe import load_run_recipe
from .shared import SharedBase


@dataclass
class LoadedRun:
    model: Any
    tokenizer: Any
    recipe: Any
    labels: list | None
    head_modules: list[str]


def load_run(run_dir, quantization=None, device=None, base: SharedBase | None = None) -> LoadedRun:
    """Rebuild a trained model from its run directory, in eval mode. With `base` (model/shared.py), the backbone's
    weights are the shared base's, not a fresh copy."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    run = Path(run_dir)
    require_finished(run)
    recipe = load_run_recipe(run)
    labels = read_json(run / "labels.json", "label map")["labels"]
    method = METHODS[recipe.adapter.method]
    if method.trains_base:
        if base is not None:
            raise RunDirError(
                f"{run}: adapter.method {method.name} trains every weight, so the run is a whole model of its own "
                f"with no base to share; serve or load it alone"
            )
        recipe.backbone.path, recipe.backbone.gguf_file = str(run / "model"), None
    if base is not None:
        base.check(run, recipe, quantization)
    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    loader = base.skeleton if base is not None else load_model
    model, head_modules = build_task_model(recipe, labels, quantization, device, tokenizer, loader=loader)
    if base is not None:
        base.share(model, head_modules)
    if not method.trains_base:
        from peft import PeftModel

        check_safetensors(run / "adapter" / "adapter_model.safetensors", "adapter")
        try:
            model = PeftModel.from_pretrained(model, run / "adapter", is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as e:
            raise RunDirError(
                f"{run / 'adapter'}: cannot apply this adapter to {recipe.backbone.path}: {str(e).splitlines()[0]}"
            ) from None
        model = after_peft(
            model, method, loaded=True
        )  # unwrap PEFT's copy of the head: head.safetensors loads by plain name
    check_safetensors(run / "head.safetensors", "head")
    state = load_file(run / "head.safetensors")
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    device_of = next(inner.parameters()).device
    own = inner.state_dict()
    misfit = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if misfit:  # e.g. labels.json from another training than the head: scores would name the wrong classes
        k = misfit[0]
        raise RunDirError(
            f"{run / 'labels.json'}: {len(labels) if labels else 0} labels do not fit head.safetensors "
            f"({k} has shape {list(state[k].shape)}, this label map needs {list(own[k].shape)}); the run's files "
            f"come from different trainings: retrain it"
        )
    result = inner.load_state_dict({k: v.to(device_of) for k, v in state.items()}, strict=False)
    unfilled = sorted(set(head_state_dict(model, head_modules)) - set(state)) if base is not None else []
    if unfilled:  # a shared base leaves head weights empty until the head file fills them
        raise RunDirError(f"{run / 'head.safetensors'}: no weight {unfilled[0]} for the {recipe.task.type} head")
    if result.unexpected_keys:
        raise RunDirError(
            f"{run / 'head.safetensors'}: weights {result.unexpected_keys[:3]} do not fit the {recipe.task.type} head"
        )
    check_identity(run)  # last: the checks above name what is wrong more precisely when they catch it
    finish_model(model, recipe.backbone, quantization)
    model.eval()
    return LoadedRun(model, tokenizer, recipe, labels, head_modules)


def load_base(run_dir, quantization=None) -> LoadedRun:
    """The run's backbone and head without the trained adapter, so a base model is scored by exactly the same
    data, prompts and metrics as the tuned one (heads that reuse the LM head only: `Head.zero_shot`)."""
    from transformers import AutoTokenizer

    run = Path(run_dir)
    if not (run / "recipe.yaml").is_file() or not (run / "labels.json").is_file():
        raise RunDirError(f"{run}: not an adapterkit run (recipe.yaml or labels.json missing)")
    recipe = load_run_recipe(run)
    if not HEADS[recipe.task.type].zero_shot:
        raise DataError(
            f"--zero-shot: task.type {recipe.task.type!r} has a trained head, so its base model cannot score; "
            f"zero-shot works for heads that reuse the LM head (label_words, causal_lm)"
        )
    labels = read_json(run / "labels.json", "label map")["labels"]
    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    model, head_modules = build_task_model(recipe, labels, quantization, tokenizer=tokenizer)
    finish_model(model, recipe.backbone, quantization)
    model.eval()
    return LoadedRun(model, tokenizer, recipe, labels, head_modules)


def load_into_group(group: MixGroup, name: str, run_dir, base: SharedBase, quantization=None) -> LoadedRun:
    """A run whose adapter and head join a mix group's PEFT model (model/mixed.py), not a model of its own."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    run = Path(run_dir)
    require_finished(run)
    recipe = load_run_recipe(run)
    base.check(run, recipe, quantization)
    check_identity(run)
    check_safetensors(run / "adapter" / "adapter_model.safetensors", "adapter")
    check_safetensors(run / "head.safetensors", "head")
    group.attach(name, run, load_file(run / "head.safetensors"))
    labels = read_json(run / "labels.json", "label map")["labels"]
    return LoadedRun(group.model, AutoTokenizer.from_pretrained(run / "tokenizer"), recipe, labels, list(group.heads))
