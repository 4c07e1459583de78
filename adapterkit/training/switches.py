"""The speed/memory switches of a recipe, wired into training in one place, for single- and multi-task runs.

backbone.int8_matmul: dequantize    model/fast_int8.py (applied when the model is built)
backbone.gradient_checkpointing     model/assemble.py (non-reentrant, so it works with a frozen PEFT-wrapped base)
training.packing                    data/packing.py: the training collator
training.loss_chunk_tokens          losses.py: the training loss
training.compile                    Accelerate's dynamo backend (torch.compile)
"""

from __future__ import annotations

import torch

from ..data.packing import PackingCollator, check_packing_support, examples
from ..errors import RecipeError
from ..heads import HEADS
from ..heads.registry import IGNORE
from .losses import _decoder_and_head, causal_lm_loss


def _lm_heads() -> list[str]:
    return [n for n, h in HEADS.items() if h.lm_training]


def check(recipe, task_types: list[str] | None = None) -> None:
    """Switches that only make sense for a causal LM are refused, with the field named, for other heads
    (in a multi-task recipe: when any task is not a causal LM)."""
    t = recipe.training
    task_types = task_types or [recipe.task.type]
    for key, on in (("training.packing", t.packing), ("training.loss_chunk_tokens", t.loss_chunk_tokens)):
        other = next((tt for tt in task_types if not HEADS[tt].lm_training), None)
        if on and other is not None:
            raise RecipeError(
                f"{key}: only for task.type {' or '.join(_lm_heads())} (this recipe trains {other!r}); remove it"
            )


def accelerator_kwargs(training) -> dict:
    return {"dynamo_backend": "inductor"} if training.compile else {}


def train_collator(recipe, tokenizer):
    """The training batch collator when packing is on; None means the data module's padding collator."""
    if not recipe.training.packing:
        return None
    return PackingCollator(tokenizer.pad_token_id, recipe.data.max_length)


def prepare_model(training, model) -> None:
    if training.packing:
        check_packing_support(model)


def training_loss(recipe, model, batch, task: str | None = None, class_weights=None):
    """(loss, outputs or None): the chunked causal-LM loss when loss_chunk_tokens is set, else the model's own, or
    with `class_weights` (Head.class_weights) a weighted cross-entropy over its logits. `task`: the task of a
    multi-task model (its forward takes the task name)."""
    chunk = recipe.training.loss_chunk_tokens
    kw = {"task": task} if task is not None else {}
    if chunk:
        return causal_lm_loss(model, batch, chunk, task), None
    if chunk is None and HEADS[recipe.task.type].lm_training and auto_chunk_fits(model, task):
        return causal_lm_loss(model, batch, AUTO_CHUNK_TOKENS, task), None
    out = model(**kw, **batch)
    if class_weights is None:
        return out.loss, out
    logits = out.logits.float()
    weight = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)  # no copy on CPU
    labels = batch["labels"].to(logits.device)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), weight=weight, ignore_index=IGNORE
    )
    return loss, out


AUTO_CHUNK_TOKENS = 256  # target tokens per chunk: 1024 held 140 MB more at the same speed (SmolLM2, 2026-12-07)


def auto_chunk_fits(model, task: str | None = None) -> bool:
    """The chunked loss by default needs a plain LM head (an adapter on it would be skipped): else the model's loss."""
    try:
        _decoder_and_head(model, task)
    except ValueError:
        return False
    return True


def batch_examples(batch) -> int:
    return examples(batch)
