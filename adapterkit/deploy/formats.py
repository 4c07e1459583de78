"""The registry of export formats: `adapterkit export --format NAME` -> a typed `ExportFormat` record of how a run
is checked and written. A leaf module: it imports nothing of adapterkit above the errors. The built-ins (merged,
adapter, onnx, gguf) register from deploy/artifacts.py; a plugin adds its own with `register_format(...)` and is
imported with `adapterkit export ... --plugin MODULE`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import AdapterkitError


@dataclass(frozen=True)
class ExportOptions:
    """What the export command's options say; every format reads the ones it takes."""

    dtype: str = "float32"  # float32, bfloat16 or float16
    verify_samples: Optional[int] = None  # validation examples for the agreement check (all by default)
    tolerance: Optional[float] = None  # max merged-vs-unmerged logit difference, relative to the largest logit
    requantize: bool = True  # merged: also score the export re-quantized to int8 on load
    quantize: Optional[str] = None  # onnx: `int8` also writes a dynamic-quantized graph
    gguf_type: str = "f16"  # gguf: f32, f16 or q8_0 weights
    from_merged: Optional[str] = None  # onnx, gguf: a float32 merged export of the same run, converted without merging


@dataclass(frozen=True)
class ExportFormat:
    name: str
    # (run_dir, folder to write into, options) -> the report; it verifies what it wrote and raises if that fails.
    write: Callable[[Path, Path, ExportOptions], dict]
    # (run recipe or None, options) -> None: refusals before any model loads.
    check: Optional[Callable[[Any, ExportOptions], None]] = None
    merges: bool = False  # merges the adapter into the weights: refused for methods that cannot merge
    takes: tuple[str, ...] = ()  # format-specific options it reads (`quantize` is refused elsewhere)
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise AdapterkitError(f"register_format: name must be a non-empty string, got {self.name!r}")
        if not callable(self.write) or (self.check is not None and not callable(self.check)):
            raise AdapterkitError(f"register_format({self.name!r}): write and check must be callable")


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    if not isinstance(fmt, ExportFormat):
        raise AdapterkitError(f"register_format: expected an ExportFormat record, got {type(fmt).__name__}")
    FORMATS[fmt.name] = fmt
    return fmt


def names() -> str:
    """`merged, adapter, onnx or gguf` (and any plugin's), for messages."""
    keys = list(FORMATS)
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " or " + keys[-1]
