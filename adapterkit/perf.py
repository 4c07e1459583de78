"""The speed/memory switches of a recipe, wired into training in one place (issue #7).

  backbone.int8_matmul: dequantize    fast_int8.py (applied in model.build)
  backbone.gradient_checkpointing     model.build (non-reentrant, so it works with a frozen PEFT-wrapped base)
  training.packing                    packing.py: the training collator
  training.loss_chunk_tokens          losses.py: the training loss
  training.compile                    Accelerate's dynamo backend (torch.compile)
"""
from __future__ import annotations

from .errors import RecipeError

LM_HEADS = ("causal_lm",)


def check(recipe) -> None:
    """Switches that only make sense for a causal LM are refused, with the field named, for other heads."""
    t = recipe.training
    for key, on in (("training.packing", t.packing), ("training.loss_chunk_tokens", t.loss_chunk_tokens)):
        if on and recipe.task.type not in LM_HEADS:
            raise RecipeError(f"{key}: only for task.type {' or '.join(LM_HEADS)} (this recipe trains {recipe.task.type!r}); remove it")


def accelerator_kwargs(recipe) -> dict:
    return {"dynamo_backend": "inductor"} if recipe.training.compile else {}


def train_collator(recipe, tokenizer):
    """The training batch collator when packing is on; None means the data module's padding collator."""
    if not recipe.training.packing:
        return None
    from .packing import PackingCollator

    return PackingCollator(tokenizer.pad_token_id, recipe.data.max_length)


def prepare_model(recipe, model) -> None:
    if recipe.training.packing:
        from .packing import check_packing_support

        check_packing_support(model)


def training_loss(recipe, model, batch):
    """(loss, outputs or None): the chunked causal-LM loss when loss_chunk_tokens is set, else the model's own."""
    chunk = recipe.training.loss_chunk_tokens
    if chunk:
        from .losses import causal_lm_loss

        return causal_lm_loss(model, batch, chunk), None
    out = model(**batch)
    return out.loss, out


def batch_examples(batch) -> int:
    from .packing import examples

    return examples(batch)
