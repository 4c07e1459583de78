"""Full fine-tuning, the reference method: every weight of the (full-precision) backbone trains, no PEFT wrapper."""
from __future__ import annotations

from .registry import Method, MethodSettings, register_method


class FullSettings(MethodSettings):
    pass


def _full(settings, model, ctx):
    for p in model.parameters():
        p.requires_grad_(True)
    return None


register_method(Method("full", FullSettings, _full, mergeable=True, trains_base=True,
                       description="Full fine-tuning (reference; needs quantization: none)."))
