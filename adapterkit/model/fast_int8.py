"""Frozen LLM.int8 weights through dequantize + dense GEMM instead of bitsandbytes' int8 matmul.

The int8 storage (bitsandbytes' row-major CB int8 matrix and per-row absmax SCB) stays as it is, so the
memory saving is kept: one layer's weight is dequantized to the compute dtype right before its GEMM and
freed right after. Backward dequantizes again rather than keeping the dense copy alive (weights are frozen,
so only the input gradient is needed and the input itself is not saved).

Why our own path: on GPU bitsandbytes' int8 matmul also quantizes the activations (the anchor measured it
slower than dequantize + bf16 GEMM, 1.48 vs 1.05 ms a layer, and less accurate); on CPU bitsandbytes already
dequantizes in training, so there the two are equal in speed (benchmarks/switches_cpu.py). Numerics: the
result equals a dense GEMM with the dequantized weight, i.e. the error is the weight-quantization error alone.
"""

from __future__ import annotations

import types

import torch

INT8_MATMULS = ("bitsandbytes", "dequantize")


def int8_parts(module) -> tuple[torch.Tensor, torch.Tensor]:
    """(CB int8 [out, in], SCB float [out]) of a quantized bnb Linear8bitLt, wherever bitsandbytes keeps them."""
    state = module.state
    cb = state.CB if state.CB is not None else getattr(module.weight, "CB", None)
    scb = state.SCB if state.SCB is not None else getattr(module.weight, "SCB", None)
    if cb is None:
        cb = module.weight.data
    if cb.dtype != torch.int8 or scb is None:
        raise ValueError("layer is not quantized to int8 (move it to its device first)")
    return cb, scb


def dequantize(cb: torch.Tensor, scb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Row-wise absmax scheme: W = CB * SCB / 127 (bitsandbytes' int8_vectorwise_dequant, in the compute dtype).
    return cb.to(dtype) * (scb.to(dtype) * (1.0 / 127.0)).unsqueeze(1)


class DequantLinear(torch.autograd.Function):
    """y = x @ dequant(CB, SCB)^T + b with a frozen weight: saves only the int8 weight for backward."""

    @staticmethod
    def forward(ctx, x, cb, scb, bias):
        w = dequantize(cb, scb, x.dtype)
        ctx.save_for_backward(cb, scb)
        return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        cb, scb = ctx.saved_tensors
        grad_x = grad @ dequantize(cb, scb, grad.dtype) if ctx.needs_input_grad[0] else None
        grad_b = None
        if ctx.needs_input_grad[3]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, None, None, grad_b


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _fast_forward(self, x: torch.Tensor) -> torch.Tensor:
    cb, scb = int8_parts(self)
    dtype = _autocast_dtype(x)
    # Autocast is switched off inside: the dtype is chosen here once, so forward and backward agree.
    with torch.autocast(x.device.type, enabled=False):
        return DequantLinear.apply(x.to(dtype), cb, scb, self.bias)


def use_dequantize_path(model) -> int:
    """Route every frozen bitsandbytes Linear8bitLt in `model` through dequantize + dense GEMM.
    Returns the number of layers switched. Storage, state dicts and PEFT wrapping are unchanged."""
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not module.state.has_fp16_weights:
            if getattr(module.weight, "requires_grad", False):
                continue  # trainable int8 weights are not a thing we support; leave bitsandbytes in charge
            module.forward = types.MethodType(_fast_forward, module)
            n += 1
    return n
