"""Causal LM on decoder backbones: prompt/completion and chat data with the loss on completion tokens only,
perplexity, generation, and classification by label words (the decoder scores one word per class after a prompt).

Two heads, registered on import (heads.py imports this module at its end):
  causal_lm    native AutoModelForCausalLM; metric: perplexity = exp(validation loss).
  label_words  a causal LM read as a classifier; metrics: accuracy and F1 from the scored label words.
Both reuse the pretrained LM head (tied to the input embeddings in small decoders such as SmolLM2): it is
never trained and never adapted, so these heads save no weights of their own; only the adapter trains.
"""
from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .errors import DataError, RecipeError
from .heads import Head, register_head

_SLOT = "\x00TEXT\x00"  # marks where the example text goes when a prompt is rendered once to find its fixed parts


class CausalLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelWordsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_words: dict[str, str] = Field(description="One word per label (label name -> word), e.g. {'0': negative, '1': positive}. "
                                                    "Each class is scored by the LM's probability of its word's first token after the prompt.")
    prompt_template: str = Field("{text}", description="Prompt around each example: `{text}` (and `{text_pair}`) are replaced; "
                                                      "the label word is scored right after it (inside the chat template when that is on).")


def _settings(recipe) -> LabelWordsSettings:
    from .tasks import task_settings

    return task_settings(recipe.task)


# ---------------------------------------------------------------- prompts and chat rendering

def use_chat_template(recipe, tokenizer) -> bool:
    want = recipe.data.chat_template
    has = bool(getattr(tokenizer, "chat_template", None))
    if want and not has:
        raise RecipeError("data.chat_template: true, but the backbone's tokenizer has no chat template")
    return has if want is None else bool(want)


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool, chat: bool) -> str:
    if chat:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    # Without a chat template (base models), a plain "role: content" transcript.
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + ("assistant: " if add_generation_prompt else "")


def render_prompt(recipe, tokenizer, text: str, text_pair: str | None = None) -> str:
    """The full model input for one example of a label-words task (template filled, chat-wrapped if on)."""
    template = _settings(recipe).prompt_template
    prompt = template.replace("{text}", text).replace("{text_pair}", text_pair or "")
    if use_chat_template(recipe, tokenizer):
        return render_chat(tokenizer, [{"role": "user", "content": prompt}], True, True)
    return prompt


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None else []


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- prompt/completion and chat data

def check_lm_columns(ds, cfg, path: str, field: str, need_label: bool = True) -> None:
    cols = list(ds.column_names)
    if cfg.messages_column not in cols:
        for key, col in (("data.prompt_column", cfg.prompt_column), ("data.completion_column", cfg.completion_column)):
            if col not in cols:
                raise DataError(f"{key}: column {col!r} not in {path} (columns there: {cols}); causal_lm reads "
                                f"{cfg.prompt_column!r}/{cfg.completion_column!r} or a {cfg.messages_column!r} list")
    if len(ds) == 0:
        raise DataError(f"{field}: {path} has no rows")


def _check_messages(messages, row: int, path: str, column: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"data.messages_column: row {row} of {path}: {column!r} must be a non-empty list of {{role, content}} objects")
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"data.messages_column: row {row} of {path}: every message needs string 'role' and 'content' (got {m!r})")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"data.messages_column: row {row} of {path} has no assistant message: nothing to learn from")
    return out


def chat_example(tokenizer, messages: list[dict], chat: bool, row: int, path: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant turns (the only trained text).
    Spans come from rendering growing prefixes of the conversation, so any template that renders turn by turn works."""
    full = render_chat(tokenizer, messages, False, chat)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], True, chat) if i else ""
        upto = render_chat(tokenizer, messages[:i + 1], False, chat)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(f"data.chat_template: row {row} of {path}: the chat template does not render turn by turn, "
                            f"so the assistant tokens cannot be located; set data.chat_template: false")
        spans.append((len(before), len(upto)))
    return full, spans


def encode_spans(tokenizer, text: str, spans, max_length: int, add_eos: bool, row: int, path: str) -> dict:
    """input_ids, attention_mask and labels: token ids inside `spans`, -100 everywhere else (prompt, template)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = _bos(tokenizer) + enc["input_ids"]
    labels = [-100] * len(_bos(tokenizer)) + [tok if any(a <= s < b for a, b in spans) else -100
                                               for tok, (s, _) in zip(enc["input_ids"], enc["offset_mapping"])]
    if add_eos and tokenizer.eos_token_id is not None:  # learn to stop after the completion
        ids, labels = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]
    ids, labels = ids[:max_length], labels[:max_length]
    if all(l == -100 for l in labels):
        raise DataError(f"data.max_length: row {row} of {path}: no completion tokens left within {max_length} tokens "
                        f"(the prompt fills it, or the completion is empty)")
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def tokenize_lm(ds, tokenizer, recipe, labels, path: str):
    """Tokenize prompt/completion or chat rows for causal_lm, with loss only on completion/assistant tokens."""
    import datasets

    cfg = recipe.data
    chat = use_chat_template(recipe, tokenizer)
    rows = []
    is_chat = cfg.messages_column in ds.column_names
    for n, ex in enumerate(ds, 1):
        if is_chat:
            messages = _check_messages(ex[cfg.messages_column], n, path, cfg.messages_column)
            text, spans = chat_example(tokenizer, messages, chat, n, path)
            add_eos = not chat
        else:
            prompt, completion = ex[cfg.prompt_column], ex[cfg.completion_column]
            if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
                raise DataError(f"data.completion_column: row {n} of {path}: {cfg.prompt_column!r} and a non-empty "
                                f"{cfg.completion_column!r} must be strings")
            if chat:
                text, spans = chat_example(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
                                           True, n, path)
            else:
                text, spans = prompt + completion, [(len(prompt), len(prompt) + len(completion))]
            add_eos = not chat
        rows.append(encode_spans(tokenizer, text, spans, cfg.max_length, add_eos, n, path))
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("input_ids", "attention_mask", "labels")})


# ---------------------------------------------------------------- label words

def label_word_config(recipe, labels: list[str]) -> dict[str, str]:
    task = _settings(recipe)
    if "{text}" not in task.prompt_template:
        raise RecipeError("task.prompt_template: must contain {text} where the example text goes")
    missing = [l for l in labels if l not in task.label_words]
    extra = [k for k in task.label_words if k not in labels]
    if missing or extra:
        raise RecipeError(f"task.label_words: keys must be the labels {labels}" + (f"; missing {missing}" if missing else "")
                          + (f"; not a label: {extra}" if extra else ""))
    return task.label_words


def label_word_ids(recipe, tokenizer, labels: list[str]) -> list[int]:
    """The token each class's word starts with, as it follows the rendered prompt (so BPE sees the same context).
    A space is put before the word when the prompt ends in a non-space character, as a writer (or the model) would."""
    words = label_word_config(recipe, labels)
    prompt = render_prompt(recipe, tokenizer, "x")
    base = _ids(tokenizer, prompt)
    ids = []
    for label in labels:
        word = words[label]
        if prompt and not prompt[-1].isspace() and not word[:1].isspace():
            word = " " + word
        full = _ids(tokenizer, prompt + word)
        if full[:len(base)] != base or len(full) == len(base):
            raise RecipeError(f"task.label_words: {words[label]!r} merges with the end of the prompt into one token; "
                              f"end task.prompt_template with a space, colon or newline")
        ids.append(full[len(base)])
    if len(set(ids)) < len(ids):
        clash = [labels[i] for i, t in enumerate(ids) if ids.count(t) > 1]
        raise RecipeError(f"task.label_words: the words of labels {clash} start with the same token; choose words that differ in their first token")
    return ids


def tokenize_label_words(ds, tokenizer, recipe, labels, path: str):
    """Prompts for label-word classification; an over-long text is cut (never the template around it)."""
    import datasets

    from .data import encode_labels

    cfg = recipe.data
    label_word_ids(recipe, tokenizer, labels)  # fails early on a bad label_words / template
    prefix, _, suffix = render_prompt(recipe, tokenizer, _SLOT).partition(_SLOT)
    bos = _bos(tokenizer)
    rows = []
    for n, ex in enumerate(ds, 1):
        text = "" if ex[cfg.text_column] is None else str(ex[cfg.text_column])
        if not text.strip():
            raise DataError(f"data.text_column: row {n} of {path} has an empty {cfg.text_column!r}")
        pair = str(ex[cfg.text_pair_column]) if cfg.text_pair_column else None
        full = render_prompt(recipe, tokenizer, text, pair)
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        excess = len(bos) + len(ids) - cfg.max_length
        if excess > 0:
            start, end = len(prefix), len(prefix) + len(text)
            in_text = [i for i, (s, _) in enumerate(offsets) if start <= s < end]
            if len(in_text) <= excess:
                raise RecipeError(f"data.max_length: {cfg.max_length} tokens do not fit the prompt template around any text "
                                  f"({len(bos) + len(ids) - len(in_text)} template tokens)")
            drop = set(in_text[-excess:])
            ids = [t for i, t in enumerate(ids) if i not in drop]
        ids = bos + ids
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    cols = {k: [r[k] for r in rows] for k in ("input_ids", "attention_mask")}
    if cfg.label_column in ds.column_names:
        cols["labels"] = encode_labels(ds[cfg.label_column], labels, "class", path, cfg.label_column)
    return datasets.Dataset.from_dict(cols)


class LabelWordsModel(nn.Module):
    """A causal LM read as a classifier. Class logits: the LM's log-probabilities of each class's label word at the
    last prompt token. Loss: the LM loss of the right label word (cross-entropy over the whole vocabulary), so the
    tuned model also *generates* the label word."""

    def __init__(self, lm, word_ids: list[int]):
        super().__init__()
        self.backbone = lm
        self.config = lm.config
        self.register_buffer("word_ids", torch.tensor(word_ids, dtype=torch.long), persistent=False)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self):
        return self.backbone.get_output_embeddings()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Position of the last real token per row (works for left or right padding).
        last = (attention_mask * torch.arange(attention_mask.shape[1], device=attention_mask.device)).argmax(-1)
        hidden = self.backbone.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # LM head on the last token only: full-vocabulary logits at every position would dominate memory.
        lm_head = self.backbone.get_output_embeddings()
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logprobs = lm_head(h.to(lm_head.weight.dtype)).float().log_softmax(-1)
        logits = logprobs[:, self.word_ids]
        loss = nn.functional.nll_loss(logprobs, self.word_ids[labels]) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ---------------------------------------------------------------- heads

def _wrap_causal_lm(model, recipe, labels):
    return model, []  # the LM head is pretrained and tied to the embeddings: no head modules to train


def _wrap_label_words(model, recipe, labels):
    from .backbone import load_tokenizer

    return LabelWordsModel(model, label_word_ids(recipe, load_tokenizer(recipe.backbone), labels)), []


def perplexity(loss: float) -> dict[str, float]:
    return {"perplexity": round(math.exp(min(loss, 700.0)), 6)}


def _auto_causal_lm():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


register_head(Head(
    name="causal_lm", metrics=(), label_kind="text", auto_class=_auto_causal_lm(), predict=None, peft_task_type="CAUSAL_LM",
    extra={"loss_metrics": perplexity, "wrap": _wrap_causal_lm, "tokenize": tokenize_lm, "check_columns": check_lm_columns,
           "settings": CausalLMSettings, "zero_shot": True},
))
register_head(Head(
    name="label_words", metrics=("accuracy", "f1"), label_kind="class", auto_class=_auto_causal_lm(),
    extra={"wrap": _wrap_label_words, "tokenize": tokenize_label_words, "zero_shot": True, "settings": LabelWordsSettings},
))


# ---------------------------------------------------------------- generation

@torch.no_grad()
def generate(run_dir, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.0, zero_shot: bool = False) -> list[dict]:
    """Complete prompts with a trained causal_lm (or label_words) run. Prompts get the run's chat template (causal_lm)
    or prompt template (label_words) exactly as in training. Greedy unless temperature > 0."""
    from .inference import load_for_eval

    model, tokenizer, recipe, labels = load_for_eval(run_dir, zero_shot=zero_shot)
    if recipe.task.type not in ("causal_lm", "label_words"):
        raise RecipeError(f"generate: the run's task.type is {recipe.task.type!r}; generate needs causal_lm or label_words")
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm = inner.backbone if isinstance(inner, LabelWordsModel) else inner
    chat = use_chat_template(recipe, tokenizer)
    device = next(lm.parameters()).device
    rows = []
    for prompt in prompts:
        if recipe.task.type == "label_words":
            text = render_prompt(recipe, tokenizer, prompt)
        else:
            text = render_chat(tokenizer, [{"role": "user", "content": prompt}], True, True) if chat else prompt
        ids = torch.tensor([_bos(tokenizer) + _ids(tokenizer, text)], device=device)
        kw = dict(do_sample=True, temperature=temperature) if temperature > 0 else dict(do_sample=False)
        out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kw)
        rows.append({"prompt": prompt, "completion": tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)})
    return rows
