"""Decoder inputs: prompt/completion and chat rows for causal_lm (loss on completion / assistant tokens only), and
label-word prompts for label_words. Prompts are rendered by heads/lm.py, exactly as generation renders them."""

from __future__ import annotations

from ..errors import DataError, RecipeError
from ..heads import IGNORE
from ..heads.lm import SLOT, bos_ids, label_word_ids, render_chat, render_prompt, text_ids, use_chat_template
from .encoders import Encoder, register_encoder
from .labels import encode_labels
from .readers import column, delimiter_hint
from .text import check_columns


def check_lm_columns(ds, cfg, path: str, field: str, need_label: bool = True) -> None:
    cols = list(ds.column_names)
    if cfg.messages_column not in cols:
        for key, col in (("data.prompt_column", cfg.prompt_column), ("data.completion_column", cfg.completion_column)):
            if col not in cols:
                raise DataError(
                    f"{key}: column {col!r} not in {path} (columns there: {cols}); causal_lm reads "
                    f"{cfg.prompt_column!r}/{cfg.completion_column!r} or a {cfg.messages_column!r} list{delimiter_hint(cols)}"
                )
    if len(ds) == 0:
        raise DataError(f"{field}: {path} has no rows")


def _check_messages(messages, row: int, path: str, column: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DataError(
            f"data.messages_column: row {row} of {path}: {column!r} must be a non-empty list of {{role, content}} objects"
        )
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(
                f"data.messages_column: row {row} of {path}: every message needs string 'role' and 'content' (got {m!r})"
            )
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
        upto = render_chat(tokenizer, messages[: i + 1], False, chat)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(
                f"data.chat_template: row {row} of {path}: the chat template does not render turn by turn, "
                f"so the assistant tokens cannot be located; set data.chat_template: false"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def encode_spans(tokenizer, text: str, spans, max_length: int, add_eos: bool, row: int, path: str) -> dict:
    """input_ids, attention_mask and labels: token ids inside `spans`, -100 everywhere else (prompt, template)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = bos_ids(tokenizer) + enc["input_ids"]
    labels = [IGNORE] * len(bos_ids(tokenizer)) + [
        tok if any(a <= s < b for a, b in spans) else IGNORE
        for tok, (s, _) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    if add_eos and tokenizer.eos_token_id is not None:  # learn to stop after the completion
        ids, labels = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]
    ids, labels = ids[:max_length], labels[:max_length]
    if all(l == IGNORE for l in labels):
        raise DataError(
            f"data.max_length: row {row} of {path}: no completion tokens left within {max_length} tokens "
            f"(the prompt fills it, or the completion is empty)"
        )
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def tokenize_lm(ds, tokenizer, recipe, labels, path: str):
    """Tokenize prompt/completion or chat rows for causal_lm, with loss only on completion/assistant tokens."""
    import datasets

    cfg = recipe.data
    chat = use_chat_template(recipe.data, tokenizer)
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
                raise DataError(
                    f"data.completion_column: row {n} of {path}: {cfg.prompt_column!r} and a non-empty "
                    f"{cfg.completion_column!r} must be strings"
                )
            if chat:
                text, spans = chat_example(
                    tokenizer,
                    [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
                    True,
                    n,
                    path,
                )
            else:
                text, spans = prompt + completion, [(len(prompt), len(prompt) + len(completion))]
            add_eos = not chat
        rows.append(encode_spans(tokenizer, text, spans, cfg.max_length, add_eos, n, path))
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("input_ids", "attention_mask", "labels")})


def tokenize_label_words(ds, tokenizer, recipe, labels, path: str):
    """Prompts for label-word classification; an over-long text is cut (never the template around it)."""
    import datasets

    cfg = recipe.data
    label_word_ids(recipe, tokenizer, labels)  # fails early on a bad label_words / template
    prefix, _, suffix = render_prompt(recipe, tokenizer, SLOT).partition(SLOT)
    bos = bos_ids(tokenizer)
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
                raise RecipeError(
                    f"data.max_length: {cfg.max_length} tokens do not fit the prompt template around any text "
                    f"({len(bos) + len(ids) - len(in_text)} template tokens)"
                )
            drop = set(in_text[-excess:])
            ids = [t for i, t in enumerate(ids) if i not in drop]
        ids = bos + ids
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    cols = {k: [r[k] for r in rows] for k in ("input_ids", "attention_mask")}
    if cfg.label_column in ds.column_names:
        cols["labels"] = encode_labels(column(ds, cfg.label_column), labels, "class", path, cfg.label_column)
    return datasets.Dataset.from_dict(cols)


def generation_inputs(ds, tokenizer, recipe, path: str) -> tuple[list[list[int]], list[list[str]]]:
    """(prompt token ids, references) of causal_lm rows, for generated-text metrics: the prompt as generation sees
    it (chat template with the generation prompt, or the plain prompt), and every reference of the row."""
    cfg = recipe.data
    chat = use_chat_template(recipe.data, tokenizer)
    prompts, refs = [], []
    for n, ex in enumerate(ds, 1):
        if cfg.messages_column in ds.column_names:
            messages = _check_messages(ex[cfg.messages_column], n, path, cfg.messages_column)
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            text, target = render_chat(tokenizer, messages[:last], True, chat), messages[last]["content"]
        else:
            text = (
                render_chat(tokenizer, [{"role": "user", "content": ex[cfg.prompt_column]}], True, True)
                if chat
                else ex[cfg.prompt_column]
            )
            target = ex[cfg.completion_column] if cfg.completion_column in ds.column_names else None
        given = ex.get(cfg.references_column) if cfg.references_column in ds.column_names else None
        references = (
            [str(r) for r in given]
            if isinstance(given, list) and given
            else ([str(target)] if target is not None else [])
        )
        if not references:
            raise DataError(
                f"data.references_column: row {n} of {path} has no {cfg.references_column!r} list and no completion to score against"
            )
        prompts.append(bos_ids(tokenizer) + text_ids(tokenizer, text)[-(cfg.max_length - 1) :])
        refs.append(references)
    return prompts, refs


register_encoder(
    Encoder(
        "completion",
        check_lm_columns,
        lambda ds, tok, recipe, head, labels, path, train=False: tokenize_lm(ds, tok, recipe, labels, path),
        generation=lambda ds, tok, recipe, path: generation_inputs(ds, tok, recipe, path),
    )
)
register_encoder(
    Encoder(
        "label_words",
        check_columns,
        lambda ds, tok, recipe, head, labels, path, train=False: tokenize_label_words(ds, tok, recipe, labels, path),
    )
)
