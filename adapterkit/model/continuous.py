"""Greedy decoding with continuous batching: `batch_size` prompts decode together and a finished row's place goes to
the next prompt at once, instead of every row waiting for the longest one in its batch as transformers' `generate`
does (a SmolLM2 decode step on CPU with 16 rows costs 1.3x one with 8: finished rows cost steps, not only rows).
Prompts are taken longest first, so the rows prefilled together need little padding, and the tokens every prompt
starts with (a chat template's system turn: half of a short WebNLG prompt) run once, their KV shared by every row.

Our own loop because transformers' continuous batching (`generate_batch`, paged attention) was not faster than
plain `generate` on CPU at this size (benchmarks/results/performance_iii.md); here the cache is transformers'
DynamicCache and the model is called as `generate` calls it (2-D attention mask, position ids), so each prompt's
greedy tokens are the ones `generate` picks. Used for greedy decoding of models whose cache is one plain
DynamicLayer per layer (no sliding windows) and whose generation config adds no logits processors; everything else
goes through `generate` (generation.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Generation-config fields that add logits processors or stopping rules greedy decoding here does not apply.
_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
}


def supported(lm, settings) -> bool:
    """Greedy, and a model whose generation config adds nothing greedy decoding here leaves out (not PEFT prompt or
    prefix tuning: their virtual tokens need PEFT's own generate)."""
    if settings.do_sample or settings.num_beams != 1 or settings.repetition_penalty != 1.0:
        return False
    if getattr(getattr(lm, "active_peft_config", None), "is_prompt_learning", False):
        return False
    cfg = getattr(lm, "generation_config", None)
    if cfg is None or any(getattr(cfg, k, None) not in ok for k, ok in _PROCESSORS.items()):
        return False
    layer_types = getattr(lm.config, "layer_types", None)
    return not layer_types or all(t == "full_attention" for t in layer_types)


@dataclass
class _Batch:
    """The rows decoding together: the KV cache, attention mask (0 over padding), next position and next input."""

    cache: Any  # a transformers DynamicCache
    mask: torch.Tensor  # [rows, cache length]
    pos: torch.Tensor  # [rows] position id of the next input
    nxt: torch.Tensor  # [rows] the token to feed next (the last one generated)
    rows: list[int]  # prompt index of each row
    out: list[list[int]]  # tokens generated so far, per row


@dataclass
class _Prefix:
    """The tokens every prompt starts with (a chat template's system turn) and their KV, computed once."""

    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, len, dim]


def _shared_prefix(lm, prompts: list[list[int]]) -> _Prefix | None:
    """The common start of all prompts (each keeps at least one token of its own), when it is worth computing once."""
    from transformers import DynamicCache

    if len(prompts) < 2:
        return None
    n = 0
    shortest = min(len(p) for p in prompts)
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    if n < 4:
        return None
    cache = DynamicCache(config=lm.config)
    ids = torch.tensor([prompts[0][:n]], device=lm.device)
    lm(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache, use_cache=True, logits_to_keep=1)
    return _Prefix(prompts[0][:n], [(layer.keys, layer.values) for layer in cache.layers])


def _prefill(lm, prompts: list[list[int]], pad: int, prefix: _Prefix | None):
    """Left-padded prompts through the model as `generate` does: (cache, mask, next position, first token). With a
    shared prefix, only each prompt's own tokens run: the prefix's KV leads every row, padding sits after it."""
    from transformers import DynamicCache

    n = len(prefix.ids) if prefix is not None else 0
    rest = [p[n:] for p in prompts]
    width = max(len(p) for p in rest)
    device = lm.device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in rest], device=device)
    mask = torch.tensor([[1] * n + [0] * (width - len(p)) + [1] * len(p) for p in rest], device=device)
    pos = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1)[:, n:]
    if prefix is not None:
        cache = DynamicCache([(k.expand(len(rest), -1, -1, -1), v.expand(len(rest), -1, -1, -1)) for k, v in prefix.kv])
    else:
        cache = DynamicCache(config=lm.config)
    logits = lm(
        input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
    ).logits
    return cache, mask, mask.sum(-1), logits[:, -1].argmax(-1)


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    extra = width - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim)


def _join(a: _Batch | None, b: _Batch) -> _Batch:
    """Two groups of rows as one: the shorter cache left-padded (masked out) to the longer."""
    if a is None:
        return b
    width = max(a.mask.shape[1], b.mask.shape[1])
    for la, lb in zip(a.cache.layers, b.cache.layers):
        la.keys = torch.cat([_left_pad(la.keys, width, 2), _left_pad(lb.keys, width, 2)])
        la.values = torch.cat([_left_pad(la.values, width, 2), _left_pad(lb.values, width, 2)])
    mask = torch.cat([_left_pad(a.mask, width, 1), _left_pad(b.mask, width, 1)])
    return _Batch(a.cache, mask, torch.cat([a.pos, b.pos]), torch.cat([a.nxt, b.nxt]), a.rows + b.rows, a.out + b.out)


def _split(b: _Batch) -> list[_Batch]:
    """One batch per row, its cache holding only the columns the row attends to (padding dropped: its keys carry
    their positions already)."""
    from transformers import DynamicCache

    out = []
    for r in range(len(b.rows)):
        cols = b.mask[r].nonzero().squeeze(1)
        kv = [(layer.keys[r : r + 1, :, cols], layer.values[r : r + 1, :, cols]) for layer in b.cache.layers]
        out.append(
            _Batch(
                DynamicCache(kv), b.mask[r : r + 1, cols], b.pos[r : r + 1], b.nxt[r : r + 1], [b.rows[r]], [b.out[r]]
            )
        )
    return out


def _keep(b: _Batch, keep: list[int]) -> _Batch | None:
    """Only rows `keep` (indices into the batch); left columns no row attends to any more are dropped."""
    if not keep:
        return None
    idx = torch.tensor(keep, device=b.mask.device)
    mask = b.mask.index_select(0, idx)
    first = int((mask.sum(0) > 0).nonzero()[0])  # leading columns that are padding in every remaining row
    for layer in b.cache.layers:
        layer.keys = layer.keys.index_select(0, idx)[:, :, first:]
        layer.values = layer.values.index_select(0, idx)[:, :, first:]
    return _Batch(b.cache, mask[:, first:], b.pos[idx], b.nxt[idx], [b.rows[i] for i in keep], [b.out[i] for i in keep])


@torch.no_grad()
def greedy(lm, prompts: list[list[int]], slots: int, max_new_tokens: int, pad: int, eos) -> list[list[int]]:
    """Greedy completions (token ids, the eos token included when one was generated) of every prompt."""
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    done: list[list[int] | None] = [None] * len(prompts)
    queue = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # popped from the end: longest first
    batch: _Batch | None = None
    ready: list[_Batch] = []  # prefilled rows waiting for a free place
    prefix = _shared_prefix(lm, prompts)
    while queue or ready or batch is not None:
        free = slots - (len(batch.rows) if batch is not None else 0)
        if not ready and queue and free > 0:
            # `slots` prompts prefill together even when fewer places are free: one call instead of one per place
            take = [queue.pop() for _ in range(min(slots, len(queue)))]
            cache, mask, pos, first = _prefill(lm, [prompts[i] for i in take], pad, prefix)
            ready = _split(_Batch(cache, mask, pos, first, take, [[int(t)] for t in first]))
        while ready and free > 0:
            batch, free = _join(batch, ready.pop(0)), free - 1
        assert batch is not None
        live = []
        for i, (row, toks) in enumerate(zip(batch.rows, batch.out)):
            if toks[-1] in stops or len(toks) >= max_new_tokens:
                done[row] = toks
            else:
                live.append(i)
        if len(live) < len(batch.rows):
            batch = _keep(batch, live)
            continue  # refill before the next step
        mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], 1)
        logits = lm(
            input_ids=batch.nxt[:, None],
            attention_mask=mask,
            position_ids=batch.pos[:, None],
            cache=batch.cache,
            use_cache=True,
        ).logits
        batch.mask, batch.pos, batch.nxt = mask, batch.pos + 1, logits[:, -1].argmax(-1)
        for toks, t in zip(batch.out, batch.nxt.tolist()):
            toks.append(t)
    return [d or [] for d in done]
