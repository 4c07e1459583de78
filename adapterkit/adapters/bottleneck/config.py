"""`BottleneckConfig`: a PEFT config for bottleneck adapters h + s * up(act(down(h))) (Houlsby et al. 2019,
Pfeiffer et al. 2020, He et al. 2021 for the parallel form)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

PLACEMENTS = ("houlsby", "pfeiffer", "parallel")


@dataclass
class BottleneckConfig(PeftConfig):
    """Bottleneck adapters for BERT-family encoders and Llama-family decoders.

    placement: `houlsby` (after the attention output and after the feed-forward output projection of each layer),
    `pfeiffer` (after the feed-forward output only) or `parallel` (beside the feed-forward block, reading its input,
    added to its output times `scaling`). `bottleneck_size` wins over `reduction_factor` (size = hidden // factor).
    With `init_weights` the up-projection starts at zero, so the adapted model starts equal to the base model.
    """

    placement: str = field(default="pfeiffer", metadata={"help": "houlsby, pfeiffer or parallel"})
    bottleneck_size: Optional[int] = field(default=None, metadata={"help": "Adapter width; hidden // reduction_factor when None."})
    reduction_factor: int = field(default=16, metadata={"help": "hidden size / bottleneck size, used when bottleneck_size is None."})
    activation: str = field(default="relu", metadata={"help": "A transformers activation name (relu, gelu, silu, tanh, ...)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout after the activation."})
    scaling: float = field(default=1.0, metadata={"help": "Multiplier on the adapter output (He et al. use 4 for parallel)."})
    layer_norm: bool = field(default=False, metadata={"help": "LayerNorm on the adapter input."})
    init_weights: bool = field(default=True, metadata={"help": "Zero up-projection (identity at start); False: random (tests)."})
    layers_to_transform: Optional[list[int]] = field(default=None, metadata={"help": "Layer indices to adapt; all when None."})
    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Regex of modules to wrap; derived from placement and model type when None."})
    exclude_modules: Optional[Union[list[str], str]] = field(default=None, metadata={"help": "Modules never to adapt."})
    modules_to_save: Optional[list[str]] = field(default=None, metadata={"help": "Extra modules trained fully and saved."})
    # Filled in from the model family when the adapter is injected (saved, so loading needs no guessing):
    # for `parallel`, whether the wrapped block adds its residual itself (BERT's BertOutput(h, residual)).
    residual_inside: Optional[bool] = field(default=None, metadata={"help": "Derived: the wrapped FFN block adds the residual itself."})
    target_parameters: Optional[list[str]] = field(default=None, metadata={"help": "Unused; PEFT's matcher reads it."})

    def __post_init__(self):
        super().__post_init__()
        from peft.utils import PeftType  # BOTTLENECK is added when adapterkit.adapters.bottleneck is imported

        self.peft_type = PeftType.BOTTLENECK
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement: {self.placement!r} is not one of {list(PLACEMENTS)}")
        if self.bottleneck_size is not None and self.bottleneck_size <= 0:
            raise ValueError("bottleneck_size must be positive")
        if self.reduction_factor <= 0:
            raise ValueError("reduction_factor must be positive")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)

    def size_for(self, hidden: int) -> int:
        return self.bottleneck_size or max(1, hidden // self.reduction_factor)
