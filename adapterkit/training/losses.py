"""Causal-LM cross-entropy without materializing the full [tokens, vocab] logits.

The logits of a causal LM dominate activation memory at large vocabularies (Llama-3's 128k vocabulary
at 8 x 1,024 tokens is 4 GiB of fp32 logits, plus as much again for their gradient). Here the hidden
states go through the output projection a chunk of tokens at a time; each chunk's loss gradient is
computed right away (softmax - onehot) and only the [tokens, hidden] input gradient is kept, so peak
extra memory is one chunk's logits. Our own function because torch and transformers have no fused
linear + cross-entropy for CPU/SDPA; the math is the standard one, checked against F.cross_entropy.
"""

from __future__ import annotations

import torch

from ..heads import IGNORE


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Next-token targets aligned with positions, as transformers' ForCausalLMLoss does (last position ignored)."""
    return torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[..., 1:]


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean over targets != -100 of CE(hidden @ weight^T (+ bias), targets), `chunk` rows at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int):
        # Only positions with a target go through the projection: prompts and padding (often most of a causal-LM
        # batch trained on completions) cost neither the [tokens, vocab] product nor its gradient.
        rows = (targets != IGNORE).nonzero().squeeze(1)
        n = int(rows.numel())
        denom = max(n, 1)
        kept_h, kept_t = hidden.index_select(0, rows), targets.index_select(0, rows)
        grad_kept = torch.empty_like(kept_h) if hidden.requires_grad else None
        acc = torch.promote_types(hidden.dtype, torch.float32)  # losses and sums in fp32 at least (fp64 stays fp64)
        grad_weight = torch.zeros_like(weight, dtype=acc) if weight.requires_grad else None
        grad_bias = torch.zeros_like(bias, dtype=acc) if bias is not None and bias.requires_grad else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, n, chunk):
            h = kept_h[start : start + chunk]
            t = kept_t[start : start + chunk]
            logits = torch.nn.functional.linear(h, weight, bias).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
            # d(mean CE)/d logits = (softmax - onehot) / n; computed in place on logits.
            g = logits.sub_(lse.unsqueeze(1)).exp_()
            g[torch.arange(g.shape[0], device=g.device), t] -= 1.0
            g.div_(denom)
            if grad_kept is not None:
                grad_kept[start : start + chunk] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += g.t() @ h.to(acc)
            if grad_bias is not None:
                grad_bias += g.sum(0)
        grad_hidden = None
        if grad_kept is not None:
            grad_hidden = torch.zeros_like(hidden).index_copy_(0, rows, grad_kept)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        return total / denom

    @staticmethod
    def backward(ctx, grad_out):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        gh = grad_hidden * grad_out.to(grad_hidden.dtype) if grad_hidden is not None else None
        gw = (grad_weight * grad_out).to(ctx.weight_dtype) if grad_weight is not None else None
        gb = (grad_bias * grad_out).to(ctx.weight_dtype) if grad_bias is not None else None
        return gh, gw, gb, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight^T + bias` against `targets` (-100 ignored), [..., H] / [...]."""
    h = hidden.reshape(-1, hidden.shape[-1])
    return ChunkedLinearCrossEntropy.apply(h, weight, bias, targets.reshape(-1), int(chunk))


def _decoder_and_head(model, task: str | None = None):
    """(decoder body, output projection) of a causal LM, looking through DDP, torch.compile and PEFT wrappers
    (and, for a multi-task model, into the task's own model)."""
    inner = model
    for attr in ("module", "_orig_mod"):  # DDP, torch.compile
        inner = getattr(inner, attr, inner)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if task is not None:
        inner = inner.tasks[task]
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    body = getattr(inner, getattr(inner, "base_model_prefix", "model"), None)
    if head is None or body is None:
        raise ValueError(f"{type(inner).__name__} is not a causal LM with an output projection")
    if hasattr(head, "base_layer"):  # an adapter on the LM head: its delta would be skipped by using .weight
        raise ValueError(
            "training.loss_chunk_tokens: the LM head carries an adapter; chunked loss needs a plain LM head"
        )
    # ZeRO-3 gathers a weight only inside its module's forward: read directly, it is an empty placeholder.
    if hasattr(head.weight, "ds_id"):
        raise ValueError("training.loss_chunk_tokens: DeepSpeed ZeRO-3 partitions the LM head; use ZeRO-2 or FSDP")
    return body, head


def causal_lm_loss(model, batch: dict, chunk: int = 1024, task: str | None = None) -> torch.Tensor:
    """Training loss of a causal LM (same value as `model(**batch).loss`) with chunked cross-entropy.
    The whole model still runs through its wrappers (PEFT, DDP's gradient sync), without labels and with
    logits_to_keep=1 so the LM head projects a single position; a forward hook takes the decoder's final
    hidden states, and the LM head + loss then go chunk by chunk."""
    body, head = _decoder_and_head(model, task)
    captured = {}

    def grab(module, args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    handle = body.register_forward_hook(grab)
    try:
        kwargs = {k: v for k, v in batch.items() if k != "labels"}
        kwargs.setdefault("use_cache", False)
        if task is not None:
            kwargs["task"] = task
        model(**kwargs, logits_to_keep=1)
    finally:
        handle.remove()
    hidden = captured["hidden"]
    weight = head.weight
    return chunked_cross_entropy(hidden, weight, shift_labels(batch["labels"]), getattr(head, "bias", None), chunk)
