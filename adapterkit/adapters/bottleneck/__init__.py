"""Bottleneck adapters as a PEFT method: `peft.get_peft_model(model, BottleneckConfig(...))`, `save_pretrained`
and `PeftModel.from_pretrained` work once `BottleneckConfig` (or `registration`) is imported; the model layer does.

    method.py        `adapter.method: bottleneck`: recipe keys and checks (registered on import, torch-free)
    families.py      where adapters go in each model family (placements)
    config.py        BottleneckConfig, the PEFT config
    layer.py         BottleneckLayer, the adapter module
    model.py         BottleneckModel, the PEFT tuner
    registration.py  the method registered with PEFT
"""

from .families import FAMILIES, PLACEMENTS, placement_targets
from .method import BottleneckSettings  # registers `adapter.method: bottleneck`

_LAZY = {  # PEFT and torch load on first use: the recipe checks import neither
    "BottleneckConfig": "registration",
    "BottleneckModel": "registration",
    "PEFT_TYPE": "registration",
    "BottleneckLayer": "layer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BottleneckConfig",
    "BottleneckLayer",
    "BottleneckModel",
    "FAMILIES",
    "PLACEMENTS",
    "placement_targets",
    "PEFT_TYPE",
    "BottleneckSettings",
]
