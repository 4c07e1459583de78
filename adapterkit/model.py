"""Backbone + head + adapter assembled into one trainable model, and the same rebuilt from a run directory."""
from __future__ import annotations

from pathlib import Path

from .adapters import METHODS, after_peft, apply_adapter
from .errors import ModelError, RunDirError
from .heads import HEADS, build_task_model, set_head_trainable
from .rundir import read_json


def build(recipe, labels, quantization=None, device=None):
    """Returns (model, head_modules). Only adapter and head parameters require grad (all of them for `full`)."""
    if recipe.adapter.method == "full" and (quantization or recipe.backbone.quantization) != "none":
        raise ModelError("adapter.method: full fine-tuning needs backbone.quantization: none (quantized weights cannot train)")
    model, head_modules = build_task_model(recipe, labels, quantization, device)
    if recipe.backbone.gradient_checkpointing:
        inner = getattr(model, "backbone", model)
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(inner, "enable_input_require_grads"):
            inner.enable_input_require_grads()
    if recipe.adapter.method != "full":
        for p in model.parameters():
            p.requires_grad_(False)
    model = apply_adapter(model, recipe, head_modules, HEADS[recipe.task.type].peft_task_type)
    set_head_trainable(model, head_modules)
    if recipe.backbone.int8_matmul == "dequantize" and (quantization or recipe.backbone.quantization) == "int8":
        from .fast_int8 import use_dequantize_path

        use_dequantize_path(model)
    return model, head_modules


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def load_run(run_dir, quantization=None, device=None, adapter_scale: float | None = None):
    """Rebuild a trained model from its run directory. Returns (model, tokenizer, recipe, labels, head_modules)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from .config import load_recipe

    run = Path(run_dir)
    for need in ("recipe.yaml", "labels.json", "head.safetensors"):
        if not (run / need).is_file():
            raise RunDirError(f"{run}: not a finished adapterkit run ({need} missing)")
    recipe = load_recipe(run / "recipe.yaml")
    labels = read_json(run / "labels.json", "label map")["labels"]
    method = recipe.adapter.method
    if method == "full":
        recipe.backbone.path, recipe.backbone.gguf_file = str(run / "model"), None
    model, head_modules = build_task_model(recipe, labels, quantization, device)
    if method != "full":
        from peft import PeftModel

        from .safety import check_safetensors

        check_safetensors(run / "adapter" / "adapter_model.safetensors", "adapter")
        try:
            model = PeftModel.from_pretrained(model, run / "adapter", is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as e:
            raise RunDirError(f"{run / 'adapter'}: cannot apply this adapter to {recipe.backbone.path}: {str(e).splitlines()[0]}") from None
        model = after_peft(model, loaded=True)  # unwrap PEFT's copy of the head: head.safetensors loads by plain name
    from .safety import check_safetensors

    check_safetensors(run / "head.safetensors", "head")
    state = load_file(run / "head.safetensors")
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    device_of = next(inner.parameters()).device
    result = inner.load_state_dict({k: v.to(device_of) for k, v in state.items()}, strict=False)
    if result.unexpected_keys:
        raise RunDirError(f"{run / 'head.safetensors'}: weights {result.unexpected_keys[:3]} do not fit the {recipe.task.type} head")
    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    model.eval()
    return model, tokenizer, recipe, labels, head_modules


def is_mergeable(recipe) -> bool:
    return METHODS[recipe.adapter.method].mergeable or recipe.adapter.method == "full"
