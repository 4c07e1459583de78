"""Dropout on CPU that draws about n*p random numbers for n elements instead of n.

Why our own: torch's CPU dropout draws one Bernoulli sample per element from its Mersenne Twister, about 2 ms for a
32 x 30 x 384 activation on these machines, and a LoRA step on all-MiniLM-L6-v2 runs 49 of them (one per adapted
layer's input, plus the model's own): a quarter of a bf16 step (benchmarks/results/profile_sst2.md). Here, for
p <= 0.25, the dropped positions are drawn as the gaps of the Bernoulli process (geometric, from one uniform each:
exact, not an approximation, about 0.2 ms for that activation); for larger p, each 64-bit draw is read as four
16-bit words (p rounded to 1/65536). Backward keeps the dropped positions (or a bool mask), not a mask in the
activation's dtype. Draws come from torch's default generator (seeding and checkpointed RNG states apply); GPUs
keep torch's own dropout.
"""

from __future__ import annotations

import math
import types

import torch


class _MaskedScale(torch.autograd.Function):
    """y = x * scale where keep, else 0; backward the same mask on the gradient. Saves only the bool mask."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0.0)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0.0), None, None


class _ZeroAtScale(torch.autograd.Function):
    """y = x * scale with the flat positions `drop` zeroed; backward the same on the gradient. Saves the positions."""

    @staticmethod
    def forward(ctx, x, drop, scale):
        ctx.save_for_backward(drop)
        ctx.scale = scale
        y = (x * scale).contiguous()
        y.view(-1).index_fill_(0, drop, 0)
        return y

    @staticmethod
    def backward(ctx, grad):
        (drop,) = ctx.saved_tensors
        g = (grad * ctx.scale).contiguous()
        g.view(-1).index_fill_(0, drop, 0)
        return g, None, None


def keep_mask(shape, p: float) -> torch.Tensor:
    """A bool mask, True with probability 1 - p (p rounded to 1/65536), from torch's default CPU generator."""
    n = math.prod(shape)
    # The full signed range: a bare random_() stops at 2**63 - 1, so every fourth word would never be negative.
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None).view(torch.int16)[:n]
    return (words >= round(p * 65536) - 32768).view(shape)


def drop_positions(n: int, p: float) -> torch.Tensor:
    """Sorted flat positions in [0, n) each dropped independently with probability p: the successes of a Bernoulli
    process, drawn as its geometric gaps floor(log(1 - U) / log(1 - p)) + 1. (U is float32: a gap longer than
    log(2**-24) / log(1 - p), probability below 1e-7, is cut to that length.)"""
    mean = n * p
    m = int(mean + 6 * math.sqrt(mean) + 16)  # enough gaps to pass n but for odds below 1e-9; then draw more
    log_keep = math.log1p(-p)
    chunks, last = [], -1
    while last < n:
        gaps = torch.empty(m).uniform_().neg_().log1p_().div_(log_keep).floor_().add_(1)
        pos = gaps.to(torch.int64).cumsum_(0).add_(last)
        chunks.append(pos)
        last = int(pos[-1])
    pos = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    return pos[: int(torch.searchsorted(pos, n))]


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return torch.nn.functional.dropout(x, p, True)
    if p <= 0.25:
        return _ZeroAtScale.apply(x, drop_positions(x.numel(), p), 1.0 / (1.0 - p))
    return _MaskedScale.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


def _forward(self, x):
    return (
        dropout(x, self.p, self.training)
        if not self.inplace
        else torch.nn.functional.dropout(x, self.p, self.training, True)
    )


def use_fast_dropout(model) -> int:
    """Route every torch.nn.Dropout of `model` (the backbone's and each adapter's) through `dropout` above.
    Returns the number of modules switched; classes, state dicts and PEFT wrapping are unchanged."""
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout and module.p > 0:
            module.forward = types.MethodType(_forward, module)
            n += 1
    return n
