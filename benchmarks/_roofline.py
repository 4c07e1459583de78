"""The machine's practical matrix-product peak, measured in the running process (shared machines: never assumed)."""
from __future__ import annotations

import time

import torch


def matmul_peaks(n: int = 2048, seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s of an n x n x n matrix product in float32 and bfloat16, best of the repeats in `seconds` each."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        best, end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[str(dtype).removeprefix("torch.")] = round(2 * n ** 3 / best / 1e9, 1)
    return out


def training_flops(model, examples: int, tokens: int) -> int:
    """FLOPs of training on `tokens` real (unpadded) tokens in `examples` sequences, from the model's linear layers:
    2*in*out a token forward, the same again for the input gradient, and again for the weight gradient of a trainable
    weight. Pooler and classifier run once per sequence. Attention scores (about 1% at these lengths) are left out."""
    total = 0
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear) or any(True for _ in m.children()):
            continue
        per = 2 * m.in_features * m.out_features
        count = examples if any(k in name for k in ("pooler", "classifier", "score")) else tokens
        passes = 2 + (1 if m.weight.requires_grad else 0)
        total += per * count * passes
    return total
