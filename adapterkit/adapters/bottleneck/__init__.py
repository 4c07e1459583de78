"""Bottleneck adapters as a PEFT method: `peft.get_peft_model(model, BottleneckConfig(...))`, `save_pretrained`
and `PeftModel.from_pretrained` work once `BottleneckConfig` (or `registration`) is imported; the model layer does.

    method.py        `adapter.method: bottleneck`: recipe keys and checks (registered on import, torch-free)
    families.py      where adapters go in each model family (placements)
    config.py        BottleneckConfig, the PEFT config
    layer.py         BottleneckLayer, the adapter module
    model.py         BottleneckModel, the PEFT tuner
    registration.py  the method registered with PEFT
    compose.py       `fusion` and `stack`: compositions of trained bottleneck adapters (registered on import)
"""

from ...lazy import lazy_attributes
from .compose import FusionSettings, StackSettings  # registers `fusion` and `stack`  # noqa: E402
from .families import FAMILIES, PLACEMENTS, placement_targets
from .method import BottleneckSettings  # registers `adapter.method: bottleneck`

# PEFT and torch load on first use: the recipe checks import neither.
__getattr__ = lazy_attributes(
    __name__,
    {**dict.fromkeys(("BottleneckConfig", "BottleneckModel", "PEFT_TYPE"), "registration"), "BottleneckLayer": "layer"},
)


__all__ = [
    "BottleneckConfig",
    "BottleneckLayer",
    "BottleneckModel",
    "FAMILIES",
    "PLACEMENTS",
    "placement_targets",
    "PEFT_TYPE",
    "BottleneckSettings",
    "FusionSettings",
    "StackSettings",
]
