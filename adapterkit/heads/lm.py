"""Causal LM on decoder backbones: prompt/completion and chat data with the loss on completion tokens only,
perplexity, and classification by label words (the decoder scores one word per class after a prompt). Prompt and
chat rendering live here too: data preparation (data/lm.py) and generation (runs/generate.py) render the same way.

Two heads, registered on import (the package `__init__` imports this module):
  causal_lm    native AutoModelForCausalLM; metric: perplexity = exp(validation loss).
  label_words  a causal LM read as a classifier; metrics: accuracy and F1 from the scored label words.
Both reuse the pretrained LM head (tied to the input embeddings in small decoders such as SmolLM2): it is
never trained and never adapted, so these heads save no weights of their own; only the adapter trains.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config.schema import MAX_BATCH, MAX_TOKENS, MAX_WIDTH
from ..errors import RecipeError
from .registry import Head, register_head, task_settings

SLOT = "\x00TEXT\x00"  # marks where the example text goes when a prompt is rendered once to find its fixed parts


class GenerationSettings(BaseModel):
    """How text is generated for generated-text metrics and `adapterkit generate` (transformers' generate)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(64, gt=0, le=MAX_TOKENS, description="Tokens to generate at most per prompt.")
    num_beams: int = Field(
        1, gt=0, le=MAX_WIDTH, description="Beam search with this many beams; 1 = greedy (or sampling)."
    )
    do_sample: bool = Field(False, description="Sample instead of greedy/beam decoding.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling share (with do_sample).")
    repetition_penalty: float = Field(1.0, gt=0, description="transformers' repetition penalty; 1 = none.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a generation (cut there).")
    batch_size: int = Field(
        16,
        gt=0,
        le=MAX_BATCH,
        description="Rows decoding together (KV-cached; greedy decoding refills a finished row's place with the next prompt).",
    )


class CausalLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings, description="Generation settings (see task.generation.*)."
    )
    generation_metrics: list[Literal["bleu", "chrf", "rouge", "exact_match"]] = Field(
        default_factory=list,
        description="Generated-text metrics on the validation split at every evaluation and on each split at the end: "
        "bleu, chrf (sacrebleu), rouge (rouge-score), exact_match; against every reference in data.references_column "
        "when the data has it, else the completion. Bounded by data.max_eval_samples.",
    )


class LabelWordsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_words: dict[str, str] = Field(
        description="One word per label (label name -> word), e.g. {'0': negative, '1': positive}. "
        "Each class is scored by the LM's probability of its word's first token after the prompt."
    )
    prompt_template: str = Field(
        "{text}",
        description="Prompt around each example: `{text}` (and `{text_pair}`) are replaced; "
        "the label word is scored right after it (inside the chat template when that is on).",
    )


def _settings(task) -> LabelWordsSettings:
    return task_settings(task)


# ---------------------------------------------------------------- prompts and chat rendering


def use_chat_template(data, tokenizer) -> bool:
    """data.chat_template, or whether the tokenizer has a chat template when the recipe does not say."""
    want = data.chat_template
    has = bool(getattr(tokenizer, "chat_template", None))
    if want and not has:
        raise RecipeError("data.chat_template: true, but the backbone's tokenizer has no chat template")
    return has if want is None else bool(want)


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool, chat: bool) -> str:
    if chat:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    # Without a chat template (base models), a plain "role: content" transcript.
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + (
        "assistant: " if add_generation_prompt else ""
    )


def render_prompt(recipe, tokenizer, text: str, text_pair: str | None = None) -> str:
    """The full model input for one example of a label-words task (template filled, chat-wrapped if on)."""
    template = _settings(recipe.task).prompt_template
    prompt = template.replace("{text}", text).replace("{text_pair}", text_pair or "")
    if use_chat_template(recipe.data, tokenizer):
        return render_chat(tokenizer, [{"role": "user", "content": prompt}], True, True)
    return prompt


def bos_ids(tokenizer) -> list[int]:
    return (
        [tokenizer.bos_token_id]
        if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None
        else []
    )


def text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- label words


def label_word_config(recipe, labels: list[str]) -> dict[str, str]:
    task = _settings(recipe.task)
    if "{text}" not in task.prompt_template:
        raise RecipeError("task.prompt_template: must contain {text} where the example text goes")
    # In Unicode NFC, as label names are read from the data (data/labels.py): a key typed with a combining accent
    # still names its label, and a word tokenizes as the model saw it in (mostly NFC) text.
    words = {unicodedata.normalize("NFC", k): unicodedata.normalize("NFC", w) for k, w in task.label_words.items()}
    missing = [l for l in labels if unicodedata.normalize("NFC", l) not in words]
    extra = [k for k in words if k not in {unicodedata.normalize("NFC", l) for l in labels}]
    if missing or extra:
        raise RecipeError(
            f"task.label_words: keys must be the labels {labels}"
            + (f"; missing {missing}" if missing else "")
            + (f"; not a label: {extra}" if extra else "")
        )
    return {l: words[unicodedata.normalize("NFC", l)] for l in labels}


def label_word_ids(recipe, tokenizer, labels: list[str]) -> list[int]:
    """The token each class's word starts with, as it follows the rendered prompt (so BPE sees the same context).
    A space is put before the word when the prompt ends in a non-space character, as a writer (or the model) would."""
    words = label_word_config(recipe, labels)
    prompt = render_prompt(recipe, tokenizer, "x")
    base = text_ids(tokenizer, prompt)
    ids = []
    for label in labels:
        word = words[label]
        if prompt and not prompt[-1].isspace() and not word[:1].isspace():
            word = " " + word
        full = text_ids(tokenizer, prompt + word)
        if full[: len(base)] != base or len(full) == len(base):
            raise RecipeError(
                f"task.label_words: {words[label]!r} merges with the end of the prompt into one token; "
                f"end task.prompt_template with a space, colon or newline"
            )
        ids.append(full[len(base)])
    if len(set(ids)) < len(ids):
        clash = [labels[i] for i, t in enumerate(ids) if ids.count(t) > 1]
        raise RecipeError(
            f"task.label_words: the words of labels {clash} start with the same token; choose words that differ in their first token"
        )
    return ids


# ---------------------------------------------------------------- heads


def _wrap_causal_lm(model, ctx):
    return model, []  # the LM head is pretrained and tied to the embeddings: no head modules to train


def _wrap_label_words(model, ctx):
    from .modules import LabelWordsModel

    return LabelWordsModel(model, label_word_ids(ctx.recipe, ctx.tokenizer, ctx.labels)), []


def perplexity(loss: float) -> dict[str, float]:
    return {"perplexity": round(math.exp(min(loss, 700.0)), 6)}


register_head(
    Head(
        name="causal_lm",
        metrics=(),
        label_kind="text",
        auto_class="AutoModelForCausalLM",
        predict=None,
        peft_task_type="CAUSAL_LM",
        loss_metrics=perplexity,
        wrap=_wrap_causal_lm,
        inputs="completion",
        settings=CausalLMSettings,
        zero_shot=True,
        lm_training=True,
        generates=True,
    )
)
register_head(
    Head(
        name="label_words",
        metrics=("accuracy", "f1"),
        label_kind="class",
        auto_class="AutoModelForCausalLM",
        wrap=_wrap_label_words,
        inputs="label_words",
        zero_shot=True,
        settings=LabelWordsSettings,
        generates=True,
    )
)
