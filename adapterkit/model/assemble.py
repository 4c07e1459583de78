"""Backbone + task head + adapter assembled into one trainable model.

The head decides the transformers class (native heads) or wraps AutoModel with a custom module; the method
decides what trains (`Method.trains_base`) and returns the PEFT config that wraps the model.
"""

from __future__ import annotations

from ..adapters import METHODS, MethodContext, method_settings
from ..adapters import is_mergeable as adapter_mergeable
from ..errors import ModelError
from ..heads import HEADS, Head, HeadContext
from ..heads.modules import HeadModel
from .backbone import checkpoint_dir, is_decoder, load_config, load_model, load_tokenizer
from .fast_dropout import use_fast_dropout
from .fast_int8 import use_dequantize_path
from .imports import import_peft

import_peft()  # bitsandbytes with less start-up, and PEFT told of the bottleneck method before any wrap or load


def native_pooling(config) -> str:
    return "last" if is_decoder(config) else "cls"


def uses_native(head: Head, task, config) -> bool:
    return head.auto_class is not None and (head.module is None or task.pooling in ("auto", native_pooling(config)))


def pooler_in_head(task) -> bool:
    """task.train_pooler: whether a pretrained pooler trains fully with the head, or stays in the backbone (frozen,
    within the adapter's reach)."""
    return getattr(task, "train_pooler", "full") == "full"


def build_task_model(recipe, labels, quantization=None, device=None, tokenizer=None, loader=None):
    """Load backbone + head. Returns (model, head_module_names): the head modules train fully and are
    saved beside the adapter; they are never quantized and never get adapters. `loader`: `load_model`, or a shared
    base's skeleton builder (model/shared.py)."""
    from transformers import AutoModel

    loader = loader or load_model
    head = HEADS[recipe.task.type]
    config = load_config(recipe.backbone)
    if uses_native(head, recipe.task, config):
        kwargs = head.config_kwargs(recipe.task, labels)
        if recipe.task.dropout is not None and head.auto_class is not None:
            kwargs["classifier_dropout"] = recipe.task.dropout
        if getattr(config, "pad_token_id", None) is None:
            tokenizer = tokenizer or load_tokenizer(recipe.backbone)
            kwargs["pad_token_id"] = tokenizer.pad_token_id
        model = loader(recipe.backbone, head.auto(), quantization, device, **kwargs)
        if head.wrap is not None:  # e.g. LM heads that reuse the pretrained lm_head
            return head.wrap(model, HeadContext(recipe, labels, tokenizer or load_tokenizer(recipe.backbone)))
        prefix = model.base_model_prefix
        names = [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]
        base = getattr(model, prefix, None)
        if (
            base is not None
            and getattr(base, "pooler", None) is not None
            and head.has_labels
            and pooler_in_head(recipe.task)
        ):
            names.append(f"{prefix}.pooler")  # BERT's pooler feeds the classifier: trained with the head
        return model, names
    backbone = loader(recipe.backbone, AutoModel, quantization, device)
    module = head.module(backbone.config.hidden_size, recipe.task, labels)
    return HeadModel(backbone, module, head.loss), ["head"]


def head_state_dict(model, head_modules: list[str]) -> dict:
    """Head weights keyed relative to the task model (loadable into a fresh one without PEFT)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = {}
    for name in head_modules:
        for k, v in inner.get_submodule(name).state_dict().items():
            # A PEFT ModulesToSaveWrapper (SEQ_CLS prompt methods) holds a frozen original and the trained copy.
            if k.startswith("original_module.") or ".original_module." in k:
                continue
            k = k.replace("modules_to_save.default.", "")
            if "modules_to_save" not in k:
                out[f"{name}.{k}"] = v.detach().to("cpu").contiguous()
    return out


def set_head_trainable(model, head_modules: list[str]) -> None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in head_modules:
        for pname, p in inner.get_submodule(name).named_parameters():
            if "original_module" not in pname.split("."):  # PEFT's frozen original; its trained copy is beside it
                p.requires_grad_(True)


def method_context(recipe, head_modules, quantization=None) -> MethodContext:
    head = HEADS[recipe.task.type]
    folder = str(checkpoint_dir(recipe.backbone))
    return MethodContext(
        head_modules=tuple(head_modules),
        peft_task_type=head.peft_task_type,
        task_type_name=recipe.task.type,
        tokenizer_path=folder,
        checkpoint_dir=folder,
        quantization=quantization or recipe.backbone.quantization,
    )


def apply_adapter(model, recipe, head_modules: list[str], quantization=None):
    """Wrap `model` with the recipe's adapter. Returns the (possibly PEFT-wrapped) model."""
    from peft import get_peft_model

    method = METHODS[recipe.adapter.method]
    settings, ctx = method_settings(recipe.adapter), method_context(recipe, head_modules, quantization)
    peft_config = method.build(settings, model, ctx)
    if peft_config is None:
        return model
    try:
        wrapped = get_peft_model(model, peft_config)
    except (TypeError, ValueError, NotImplementedError) as e:  # PEFT's own refusals (e.g. PiSSA on int8 weights)
        raise ModelError(
            f"adapter: PEFT cannot apply this {method.name} adapter to the backbone: {str(e).splitlines()[0][:200]}"
        ) from None
    model = after_peft(wrapped, method)
    if method.init_weights is not None:
        method.init_weights(model, settings, ctx)
    return model


def after_peft(model, method, loaded: bool = False):
    """Fix-ups after get_peft_model (and, with loaded=True, after PeftModel.from_pretrained): the method's own
    (`Method.after_wrap`: DoRA's int8 scales, prefix tuning's cache keyword).

    For SEQ_CLS prompt methods PEFT wraps classifier/score in a ModulesToSaveWrapper and saves it in the adapter
    (so a plain PeftModel.from_pretrained works); during training we keep that wrapper (set_head_trainable and
    head_state_dict use its trained copy). After loading we unwrap it so head.safetensors, adapterkit's own copy
    of the head, loads by plain name."""
    if loaded:
        release_head(model)
    if method.after_wrap is not None:
        method.after_wrap(model)
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


def check_precision(recipe, quantization=None) -> None:
    method = METHODS[recipe.adapter.method]
    if method.trains_base and (quantization or recipe.backbone.quantization) != "none":
        raise ModelError(
            f"adapter.method: {method.name} fine-tuning needs backbone.quantization: none (quantized weights cannot train)"
        )


def checkpointing_on(recipe) -> bool:
    """backbone.gradient_checkpointing resolved: `auto` is on for a single-task causal LM recipe."""
    setting = recipe.backbone.gradient_checkpointing
    if setting == "auto":
        return recipe.task is not None and not recipe.tasks and HEADS[recipe.task.type].lm_training
    return bool(setting)


def prepare_backbone(model, recipe) -> None:
    """Before the adapter goes in: gradient checkpointing (non-reentrant, so it works with a frozen base)."""
    if checkpointing_on(recipe):
        inner = getattr(model, "backbone", model)
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(inner, "enable_input_require_grads"):
            inner.enable_input_require_grads()


def finish_model(model, backbone, quantization=None) -> None:
    """After the adapter: frozen int8 layers through dequantize + dense GEMM (unless the backbone section asks for
    bitsandbytes' matmul), and dropout from the cheaper CPU mask (fast_dropout.py)."""
    if backbone.int8_matmul == "dequantize" and (quantization or backbone.quantization) == "int8":
        use_dequantize_path(model)
    use_fast_dropout(model)


def build(recipe, labels, quantization=None, device=None, tokenizer=None):
    """Returns (model, head_modules). Only adapter and head parameters require grad (every one when the method
    trains the base)."""
    check_precision(recipe, quantization)
    model, head_modules = build_task_model(recipe, labels, quantization, device, tokenizer)
    prepare_backbone(model, recipe)
    if not METHODS[recipe.adapter.method].trains_base:
        for p in model.parameters():
            p.requires_grad_(False)
    model = apply_adapter(model, recipe, head_modules, quantization)
    set_head_trainable(model, head_modules)
    finish_model(model, recipe.backbone, quantization)
    return model, head_modules


def trainable_parameters(model) -> tuple[int, int]:
    # ds_numel: under DeepSpeed ZeRO-3 the weights load partitioned, each module holding an empty placeholder.
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return sum(n for n, trained in sizes if trained), sum(n for n, _ in sizes)


def is_mergeable(recipe) -> bool:
    return adapter_mergeable(recipe.adapter)
