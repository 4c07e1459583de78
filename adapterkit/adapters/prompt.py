"""Prompt tuning (trained virtual input tokens) and prefix tuning (trained keys/values in every layer) through PEFT.

Both need a PEFT task type (the head's `peft_task_type`). For SEQ_CLS, PEFT wraps `classifier`/`score` in a
ModulesToSaveWrapper; adapterkit trains and saves the head itself, so `release_head` unwraps it again."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.schema import MAX_WIDTH
from ..errors import ModelError
from .registry import Method, MethodSettings, register_method


class PromptTuningSettings(MethodSettings):
    num_virtual_tokens: int = Field(
        20, gt=0, le=MAX_WIDTH, description="Trained soft-prompt tokens prepended to every input."
    )
    init: Literal["random", "text"] = Field(
        "random", description="Start the prompt from random vectors or from the embeddings of init_text."
    )
    init_text: str | None = Field(None, description="Text whose token embeddings initialise the prompt (init: text).")


class PrefixTuningSettings(MethodSettings):
    num_virtual_tokens: int = Field(
        20, gt=0, le=MAX_WIDTH, description="Trained key/value positions prepended in every layer."
    )
    projection: bool = Field(False, description="Reparametrise the prefix through a two-layer MLP (Li & Liang).")
    projection_hidden: int | None = Field(
        None, gt=0, le=MAX_WIDTH, description="Hidden width of that MLP; the model's hidden size when omitted."
    )


def _task_type(ctx, method: str) -> str:
    if not ctx.peft_task_type:
        raise ModelError(
            f"adapter.method: {method} needs a task with a PEFT task type; task.type {ctx.task_type_name!r} has none"
        )
    return ctx.peft_task_type


def _prompt_tuning(s: PromptTuningSettings, model, ctx):
    from peft import PromptTuningConfig

    kw = {}
    if s.init == "text":
        if not s.init_text:
            raise ModelError("adapter.init_text: required when adapter.init is text")
        kw = dict(
            prompt_tuning_init="TEXT", prompt_tuning_init_text=s.init_text, tokenizer_name_or_path=ctx.tokenizer_path
        )
    elif s.init_text:
        raise ModelError("adapter.init_text: only used with adapter.init: text")
    return PromptTuningConfig(task_type=_task_type(ctx, "prompt_tuning"), num_virtual_tokens=s.num_virtual_tokens, **kw)


def _prefix_tuning(s: PrefixTuningSettings, model, ctx):
    from peft import PrefixTuningConfig

    if s.projection_hidden is not None and not s.projection:
        raise ModelError("adapter.projection_hidden: only used with adapter.projection: true")
    kw = dict(encoder_hidden_size=s.projection_hidden or model.config.hidden_size) if s.projection else {}
    return PrefixTuningConfig(
        task_type=_task_type(ctx, "prefix_tuning"),
        num_virtual_tokens=s.num_virtual_tokens,
        prefix_projection=s.projection,
        **kw,
    )


def accept_prefix_cache(model) -> None:
    """transformers 5 renamed `past_key_values` to `cache`; PEFT's prefix tuning looks for the old name in the task
    model's forward signature and gives up without it. Give the instance a forward that takes the old name."""
    import inspect
    import types

    if "past_key_values" in inspect.signature(model.forward).parameters:
        return
    original = model.forward

    def forward(
        self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, past_key_values=None, **kwargs
    ):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return original(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, labels=labels, **kwargs
        )

    model.forward = types.MethodType(forward, model)


register_method(
    Method(
        "prompt_tuning",
        PromptTuningSettings,
        _prompt_tuning,
        mergeable=False,
        description="Soft prompt: trained virtual tokens prepended to the input.",
    )
)


def _prefix_after_wrap(model) -> None:
    accept_prefix_cache(model.base_model)


register_method(
    Method(
        "prefix_tuning",
        PrefixTuningSettings,
        _prefix_tuning,
        mergeable=False,
        after_wrap=_prefix_after_wrap,
        description="Prefix tuning: trained key/value prefixes in every attention layer.",
    )
)
