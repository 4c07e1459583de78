"""Which compute dtype a recipe's `training.mixed_precision` means on this machine, for training (through
Accelerate) and for scoring a finished run the same way (`adapterkit eval`)."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matrix products run several times faster than float32 there (profile_sst2.md);
    without them bf16 is emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    return any(
        bool(getattr(cpu, name, lambda: False)()) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def mixed_precision(setting: str) -> str:
    """`auto` resolved: bf16 on GPUs that support it, else fp16; bf16 on CPUs with bf16 matrix instructions, else no."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "no"


def autocast(setting: str, device_type: str):
    """The autocast context training ran its forward passes in, so a finished run is scored as it was trained."""
    mode = mixed_precision(setting) if device_type == "cpu" or torch.cuda.is_available() else "no"
    if mode == "no" or (device_type == "cpu" and mode == "fp16"):
        return nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)
