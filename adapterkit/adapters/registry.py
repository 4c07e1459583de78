"""The registry of adapter methods: recipe name (`adapter.method`) -> a typed `Method` record.

A leaf module: it imports nothing of adapterkit above the errors. Built-in methods register from the package
`__init__`; a plugin adds its own with `register_method(Method(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from ..errors import AdapterkitError


class MethodSettings(BaseModel):
    """Base of every method's own `adapter:` keys (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class MethodContext:
    """What a method's `build` may know about the model it adapts, beside the model itself."""

    head_modules: tuple[str, ...] = ()  # module names of the task head: never adapted
    peft_task_type: Optional[str] = None  # PEFT task type of the head (prompt and prefix tuning need one)
    task_type_name: str = ""  # the recipe's task.type, for error messages
    tokenizer_path: Optional[str] = None  # folder of the backbone's tokenizer (prompt tuning's text init)
    checkpoint_dir: Optional[str] = None  # folder of the backbone's full-precision weights (LoftQ reads them)
    quantization: str = "none"  # how the backbone was loaded: none, int8 or nf4


@dataclass(frozen=True)
class Method:
    """One adapter method. Every hook is a named field; an unknown keyword is a TypeError at construction."""

    name: str
    settings: type[MethodSettings]
    # (settings, model, MethodContext) -> a peft.PeftConfig to wrap the model with, or None when the method
    # changes the model in place (full fine-tuning).
    build: Callable[[Any, Any, MethodContext], Any]
    mergeable: bool = False  # merges into the base weights on export
    mergeable_for: Optional[Callable[[Any], bool]] = None  # (settings) -> mergeable, when it depends on the settings
    trains_base: bool = False  # every backbone weight trains: needs a full-precision base, saved as a whole model
    combinable: bool = False  # `adapterkit merge` combines runs of it (PEFT add_weighted_adapter on A/B factors)
    after_wrap: Optional[Callable[[Any], None]] = None  # fix-ups on the PEFT model after wrapping or loading
    # (peft_model, settings, MethodContext) after wrapping a freshly built model only (not when a run is loaded):
    # initialisations PEFT does on a wrapped model, e.g. LoftQ's from the original weights.
    init_weights: Optional[Callable[[Any, Any, MethodContext], None]] = None
    # (settings) -> whether runs of it share one PEFT model and mix in one batch, each row its own adapter (PEFT's
    # `adapter_names`); None: never (each run is its own model over the shared base, one adapter per batch).
    mixes_in_batch: Optional[Callable[[Any], bool]] = None
    # (PEFT model, one adapter name per row, rows grouped by adapter) -> a context manager yielding the keyword
    # arguments of the forward pass that runs each row through its adapter; None: PEFT's `adapter_names`.
    mixed_rows: Optional[Callable[[Any, list], Any]] = None
    default_lr: Optional[float] = None  # training.lr when a recipe gives none; None: the generic 5e-4
    default_warmup: Optional[float] = None  # training.warmup_ratio when a recipe gives none; None: the generic 0.06
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise AdapterkitError(f"register_method: name must be a non-empty string, got {self.name!r}")
        if not (isinstance(self.settings, type) and issubclass(self.settings, BaseModel)):
            raise AdapterkitError(
                f"register_method({self.name!r}): settings must be a pydantic model class (e.g. a MethodSettings subclass)"
            )
        if self.default_lr is not None and not (
            isinstance(self.default_lr, (int, float))
            and not isinstance(self.default_lr, bool)
            and 0 < self.default_lr < float("inf")
        ):
            raise AdapterkitError(
                f"register_method({self.name!r}): default_lr must be a positive number, got {self.default_lr!r}"
            )
        if self.default_warmup is not None and not (
            isinstance(self.default_warmup, (int, float))
            and not isinstance(self.default_warmup, bool)
            and 0 <= self.default_warmup < 1
        ):
            raise AdapterkitError(
                f"register_method({self.name!r}): default_warmup must be a share of steps in [0, 1), got {self.default_warmup!r}"
            )
        for f in ("build", "after_wrap", "mergeable_for", "init_weights", "mixes_in_batch", "mixed_rows"):
            value = getattr(self, f)
            if value is not None and not callable(value):
                raise AdapterkitError(
                    f"register_method({self.name!r}): {f} must be callable, got {type(value).__name__}"
                )


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if not isinstance(method, Method):
        raise AdapterkitError(f"register_method: expected a Method record, got {type(method).__name__}")
    METHODS[method.name] = method
    return method


def is_mergeable(adapter_cfg) -> bool:
    """Whether the recipe's adapter merges into the base weights (a merged export)."""
    method = METHODS[adapter_cfg.method]
    return method.mergeable_for(method_settings(adapter_cfg)) if method.mergeable_for is not None else method.mergeable


def method_settings(adapter_cfg):
    """The recipe's `adapter:` section as its method's own settings object (validated, defaults filled in)."""
    return METHODS[adapter_cfg.method].settings.model_validate(adapter_cfg.settings())
