"""bitsandbytes wraps a few kernels in torch.compile when it is imported (PEFT imports it), and torch.compile
imports torch's inductor: about 0.75 s of every training command's start-up, for kernels an LLM.int8 run on CPU
never calls (blockwise and 4-bit dequantization, 8-bit optimizers). While bitsandbytes imports, torch.compile
compiles on a kernel's first call instead; a kernel that is called compiles then, as before, and falls back the
same way when compiling fails (bitsandbytes' own wrapper catches the error)."""

from __future__ import annotations

import functools
import sys


def _compile_on_first_call(real):
    def deferred(model=None, **kwargs):
        if model is None:  # used as @torch.compile(...)
            return lambda fn: deferred(fn, **kwargs)
        compiled = None

        @functools.wraps(model)
        def call(*args, **kw):
            nonlocal compiled
            if compiled is None:
                compiled = real(model, **kwargs)
            return compiled(*args, **kw)

        return call

    return deferred


def import_bitsandbytes() -> None:
    """Import bitsandbytes (if installed) with torch.compile deferred to each kernel's first call."""
    if "bitsandbytes" in sys.modules:
        return
    import torch

    real = torch.compile
    torch.compile = _compile_on_first_call(real)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    finally:
        torch.compile = real


def import_peft() -> None:
    """PEFT, with bitsandbytes imported first as above, and the bottleneck method registered with it."""
    import_bitsandbytes()
    from ..adapters.bottleneck import registration  # noqa: F401
