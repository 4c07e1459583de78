"""Bottleneck adapters as a PEFT method: `peft.get_peft_model(model, BottleneckConfig(...))`, `save_pretrained`
and `PeftModel.from_pretrained` work once this package is imported (adapterkit imports it)."""

from .._peft_registry import register_peft_method
from .config import PLACEMENTS, BottleneckConfig
from .layer import BottleneckLayer
from .method import BottleneckSettings  # registers `adapter.method: bottleneck`
from .model import FAMILIES, BottleneckModel, placement_targets

PEFT_TYPE = register_peft_method("bottleneck", BottleneckConfig, BottleneckModel, prefix="bottleneck_")

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
