"""Batched generation with a causal LM (a run, its base model or a merged export): greedy decoding with continuous
batching (continuous.py) where it applies, else prompts left-padded into batches through transformers' generate;
stop strings cut, one completion per prompt."""

from __future__ import annotations

import torch

from ..progress import chunks
from . import continuous


def decoder(model):
    """The generating model inside a run's model: through PEFT (the adapter stays active) and label-word wrappers."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "backbone", None) if hasattr(inner, "word_ids") else model


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[list[int]], settings) -> list[str]:
    """Completions of token-id prompts. `settings`: a GenerationSettings (max_new_tokens, beams, sampling, stop strings,
    batch_size). Left padding keeps every prompt's last token at the end of its row, so one batch decodes as each
    prompt would alone (greedy outputs are the same token for token)."""
    lm = decoder(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = lm.training
    lm.eval()
    try:
        if continuous.supported(lm, settings):
            tokens = continuous.greedy(
                lm, prompts, settings.batch_size, settings.max_new_tokens, pad, tokenizer.eos_token_id
            )
            return [_cut(tokenizer.decode(t, skip_special_tokens=True), settings.stop) for t in tokens]
        return _plain(lm, tokenizer, prompts, settings, pad)
    finally:
        if was_training:
            lm.train()


def _cut(text: str, stop: list[str]) -> str:
    for s in stop:
        text = text.split(s)[0]
    return text


def _plain(lm, tokenizer, prompts, settings, pad) -> list[str]:
    """transformers' generate, one batch of `batch_size` prompts at a time."""
    device = next(lm.parameters()).device
    kw = dict(
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        do_sample=settings.do_sample,
        repetition_penalty=settings.repetition_penalty,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
    )
    if settings.do_sample:
        kw.update(temperature=settings.temperature, top_p=settings.top_p)
    out: list[str] = []
    size = settings.batch_size
    for i in chunks(len(prompts), size, "generating", min_items=2 * size):
        batch = prompts[i : i + size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        gen = lm.generate(input_ids=ids, attention_mask=mask, **kw)
        out += [_cut(tokenizer.decode(row, skip_special_tokens=True), settings.stop) for row in gen[:, width:]]
    return out
