"""`BottleneckConfig`: a PEFT config for bottleneck adapters h + s * up(act(down(h))) (Houlsby et al. 2019,
Pfeiffer et al. 2020, He et al. 2021 for the parallel form)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

from .families import PLACEMENTS

INPUTS = ("projection", "post_norm")
INITS = (True, False, "bert")


@dataclass
class BottleneckConfig(PeftConfig):
    """Bottleneck adapters for BERT-family encoders and Llama-family decoders.

    placement: `houlsby` (after the attention output and after the feed-forward output projection of each layer),
    `pfeiffer` (after the feed-forward output only) or `parallel` (beside the feed-forward block, reading its input,
    added to its output times `scaling`). `bottleneck_size` wins over `reduction_factor` (size = hidden // factor).
    With `init_weights` the up-projection starts at zero, so the adapted model starts equal to the base model;
    `"bert"` draws both projections from N(0, 0.02) (AdapterHub's default), a small non-identity start.
    `adapter_input`: `projection` reads the output projection (before the block's residual and LayerNorm);
    `post_norm` (post-norm encoders) reads LayerNorm(projection + residual) and adds its output to the projection
    before that same LayerNorm, as AdapterHub's `original_ln_before=True, residual_before_ln=True` do.
    """

    placement: str = field(default="pfeiffer", metadata={"help": "houlsby, pfeiffer or parallel"})
    bottleneck_size: Optional[int] = field(
        default=None, metadata={"help": "Adapter width; hidden // reduction_factor when None."}
    )
    reduction_factor: int = field(
        default=16, metadata={"help": "hidden size / bottleneck size, used when bottleneck_size is None."}
    )
    activation: str = field(
        default="relu", metadata={"help": "A transformers activation name (relu, gelu, silu, tanh, ...)."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout after the activation."})
    scaling: float = field(
        default=1.0, metadata={"help": "Multiplier on the adapter output (He et al. use 4 for parallel)."}
    )
    layer_norm: bool = field(default=False, metadata={"help": "LayerNorm on the adapter input."})
    init_weights: Union[bool, str] = field(
        default=True,
        metadata={
            "help": "True: zero up-projection (identity at start); 'bert': N(0, 0.02) for both projections; False: random (tests)."
        },
    )
    adapter_input: str = field(
        default="projection", metadata={"help": "projection or post_norm (post-norm encoders only)."}
    )
    layers_to_transform: Optional[list[int]] = field(
        default=None, metadata={"help": "Layer indices to adapt; all when None."}
    )
    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Regex of modules to wrap; derived from placement and model type when None."}
    )
    exclude_modules: Optional[Union[list[str], str]] = field(default=None, metadata={"help": "Modules never to adapt."})
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Extra modules trained fully and saved."}
    )
    # Filled in from the model family when the adapter is injected (saved, so loading needs no guessing):
    # for `parallel`, whether the wrapped block adds its residual itself (BERT's BertOutput(h, residual)).
    residual_inside: Optional[bool] = field(
        default=None, metadata={"help": "Derived: the wrapped FFN block adds the residual itself."}
    )
    target_parameters: Optional[list[str]] = field(default=None, metadata={"help": "Unused; PEFT's matcher reads it."})
    # Composition over trained adapters (compose.py): their weights are copied in and stay frozen.
    compose: Optional[str] = field(
        default=None,
        metadata={"help": "fusion (attention over the sources' outputs) or stack (sources, then this one)."},
    )
    sources: Optional[list[dict]] = field(
        default=None,
        metadata={
            "help": "The composed adapters: run, sha256 of its weights, bottleneck_size, activation, layer_norm, scaling."
        },
    )
    fusion_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the fusion attention."})

    def __post_init__(self):
        super().__post_init__()
        from peft.utils import PeftType  # BOTTLENECK is added when adapterkit.adapters.bottleneck is imported

        self.peft_type = PeftType.BOTTLENECK
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement: {self.placement!r} is not one of {list(PLACEMENTS)}")
        if self.adapter_input not in INPUTS:
            raise ValueError(f"adapter_input: {self.adapter_input!r} is not one of {list(INPUTS)}")
        if self.adapter_input == "post_norm" and self.placement == "parallel":
            raise ValueError("adapter_input: post_norm is for the sequential placements (houlsby, pfeiffer)")
        if self.init_weights not in INITS:
            raise ValueError(f"init_weights: {self.init_weights!r} is not one of {list(INITS)}")
        if self.bottleneck_size is not None and self.bottleneck_size <= 0:
            raise ValueError("bottleneck_size must be positive")
        if self.reduction_factor <= 0:
            raise ValueError("reduction_factor must be positive")
        if self.compose not in (None, "fusion", "stack"):
            raise ValueError(f"compose: {self.compose!r} is not one of fusion, stack")
        if self.compose and not self.sources:
            raise ValueError(f"compose: {self.compose} needs sources")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)

    def size_for(self, hidden: int) -> int:
        return self.bottleneck_size or max(1, hidden // self.reduction_factor)
