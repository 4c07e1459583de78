"""The bottleneck method registered with PEFT: importing this module makes `peft.get_peft_model(model,
BottleneckConfig(...))`, `save_pretrained` and `PeftModel.from_pretrained` work (the model layer imports it)."""

from __future__ import annotations

from .._peft_registry import register_peft_method
from .config import BottleneckConfig
from .model import BottleneckModel

PEFT_TYPE = register_peft_method("bottleneck", BottleneckConfig, BottleneckModel, prefix="bottleneck_")

__all__ = ["BottleneckConfig", "BottleneckModel", "PEFT_TYPE"]
