"""The registry of task heads: recipe `task.type` -> a typed `Head` record of how the task model is built,
trained, scored and decoded.

A leaf module: it imports nothing of adapterkit above the errors. Built-in heads register from the package
`__init__`; a plugin adds its own with `register_head(Head(...))` (see examples/custom_head.py).

A head is either *native* (`auto_class`, a transformers task class such as AutoModelForSequenceClassification,
so the export loads with plain transformers) or *custom* (`module` + `loss`: a small module on the backbone's
hidden states), or both (native when `task.pooling` is `auto`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import AdapterkitError

IGNORE = -100  # the label index torch's cross-entropy (and our metrics) skip

LABEL_KINDS = ("class", "float", "multi", "tokens", "text")


@dataclass(frozen=True)
class HeadContext:
    """What a head's `wrap` hook may use to finish the task model: the single-task recipe, its labels and tokenizer."""

    recipe: Any
    labels: Optional[list]
    tokenizer: Any


def _no_kwargs(task, labels) -> dict:
    return {}


def _argmax(logits):
    return logits.argmax(-1)


@dataclass(frozen=True)
class Head:
    """One task head. Every hook is a named field; an unknown keyword is a TypeError at construction."""

    name: str
    metrics: tuple[str, ...] = ()  # evaluate modules scored on (predictions, references); see metrics/
    # How labels in the data files are read: "class" (one label name), "float", "multi" (several names),
    # "tokens" (one tag per word) or "text" (no label column: the text itself is the target).
    label_kind: str = "class"
    # Native: the transformers auto class (or its name in `transformers`, so registering a head imports no torch;
    # `auto()` returns the class), and (task_cfg, labels) -> extra config kwargs for it.
    auto_class: Any = None
    config_kwargs: Callable[[Any, Optional[list]], dict] = _no_kwargs
    # Custom: (hidden_size, task_cfg, labels) -> nn.Module mapping (hidden_states, attention_mask) to logits, and its loss.
    module: Optional[Callable] = None
    loss: Optional[Callable] = None
    # logits -> predictions (same leading shape as the labels); None: metrics come from the loss (`loss_metrics`).
    predict: Optional[Callable] = _argmax
    peft_task_type: Optional[str] = None  # PEFT task type for methods that need one (prompt and prefix tuning)
    settings: Optional[type] = None  # pydantic model of the head's own `task:` keys
    metrics_fn: Optional[Callable] = None  # (preds, refs, labels, task) -> dict; replaces the `metrics` modules
    loss_metrics: Optional[Callable] = None  # (mean loss) -> dict, e.g. perplexity
    fit: Optional[Callable] = None  # (task_cfg, training label values) before tokenizing, e.g. target statistics
    # (task_cfg, labels, tokenized training split) -> per-class loss weights (a list) or None: the training loss
    # becomes a weighted cross-entropy over the logits (evaluation losses stay unweighted).
    class_weights: Optional[Callable] = None
    target_norm: Optional[Callable] = None  # (task_cfg) -> (mean, std) applied to float targets, or None
    decode: Optional[Callable] = None  # (prediction, task_cfg, labels) -> dict, one row of `adapterkit predict`
    wrap: Optional[Callable] = None  # (loaded auto_class model, HeadContext) -> (task model, head module names)
    inputs: str = "text"  # the data encoder that turns rows into model inputs (data/encoders.py)
    zero_shot: bool = False  # its base model can score without training (the head reuses the LM head)
    # Capabilities the rest of adapterkit reads instead of comparing head names:
    lm_training: bool = False  # trained with the causal-LM loss on the text: packing, chunked loss, GGUF export
    generates: bool = False  # `adapterkit generate` completes prompts with it

    def auto(self):
        """The transformers auto class of a native head (resolved from its name on first use), or None."""
        if isinstance(self.auto_class, str):
            import transformers

            return getattr(transformers, self.auto_class)
        return self.auto_class

    @property
    def named_labels(self) -> bool:
        """Its labels are names read from the data (a label map, labels.json), not numbers or the text itself."""
        return self.label_kind in ("class", "multi", "tokens")

    @property
    def has_labels(self) -> bool:
        """Its data has a label column (the text is not the target)."""
        return self.label_kind != "text"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise AdapterkitError(f"register_head: name must be a non-empty string, got {self.name!r}")
        if self.label_kind not in LABEL_KINDS:
            raise AdapterkitError(
                f"register_head({self.name!r}): label_kind {self.label_kind!r}; expected one of {list(LABEL_KINDS)}"
            )
        if not isinstance(self.metrics, tuple):
            object.__setattr__(self, "metrics", tuple(self.metrics))
        for f in (
            "config_kwargs",
            "module",
            "loss",
            "predict",
            "metrics_fn",
            "loss_metrics",
            "fit",
            "target_norm",
            "decode",
            "wrap",
        ):
            value = getattr(self, f)
            if value is not None and not callable(value):
                raise AdapterkitError(f"register_head({self.name!r}): {f} must be callable, got {type(value).__name__}")
        if self.auto_class is None and (self.module is None or self.loss is None):
            raise AdapterkitError(
                f"register_head({self.name!r}): give auto_class (a transformers task class) or module and loss"
            )
        if self.settings is not None and not hasattr(self.settings, "model_validate"):
            raise AdapterkitError(f"register_head({self.name!r}): settings must be a pydantic model class")


HEADS: dict[str, Head] = {}


def register_head(head: Head) -> Head:
    if not isinstance(head, Head):
        raise AdapterkitError(f"register_head: expected a Head record, got {type(head).__name__}")
    HEADS[head.name] = head
    return head


def task_settings(task):
    """The head's own settings from the recipe's `task:` extras (validated, defaults filled in), or None."""
    model = HEADS[task.type].settings
    return model.model_validate(dict(task.model_extra or {})) if model else None
