"""LoRA and its variants (DoRA, rsLoRA) through PEFT."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from ..config.schema import MAX_WIDTH
from ..errors import ModelError
from .mixing import lora_rows
from .registry import Method, MethodSettings, register_method
from .targets import BLOCKS, LayerSpec, Targets, check_targets, exclude_pattern, linear_leaf_names, resolve_layers

# init_lora_weights values that move the base weights (W - BA residual): saved converted to a plain LoRA delta
# against the original base (PEFT's path_initial_model_for_weight_conversion), so runs reload and merge as usual.
RESIDUAL_INITS = ("pissa", "olora")


class LoraSettings(MethodSettings):
    r: int = Field(8, gt=0, le=MAX_WIDTH, description="LoRA rank.")
    alpha: float = Field(
        16, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) for rsLoRA)."
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: Annotated[list[str] | Literal["all-linear"] | None, Targets] = Field(
        None, description="Module names to adapt; all linear layers of the backbone when omitted."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    layers: LayerSpec = Field(
        None, description="Blocks to adapt: `top:N`, `bottom:N` or a list of indices; every block when omitted."
    )
    layers_to_transform: Annotated[list[int] | None, BLOCKS] = Field(
        None, description="PEFT's own name for explicit block indices (use `layers` or this)."
    )
    layers_pattern: str | list[str] | None = Field(
        None, description="PEFT: the name of the block list when PEFT cannot find it (e.g. `layer`, `layers`)."
    )
    init_lora_weights: Union[bool, str] = Field(
        True,
        description="PEFT's initialisation: true (A random, B zero), gaussian, pissa, pissa_niter_K, "
        "olora, orthogonal, ... PiSSA/OLoRA runs are saved as a plain LoRA delta.",
    )
    rank_pattern: dict[str, int] | None = Field(None, description="PEFT: per-module rank, e.g. {'query': 16}.")
    alpha_pattern: dict[str, float] | None = Field(None, description="PEFT: per-module alpha.")
    use_rslora: bool = Field(False, description="Scale by alpha / sqrt(r) (rsLoRA).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    loraplus_lr_ratio: float | None = Field(
        None,
        gt=0,
        description="LoRA+: the B matrices learn at this multiple of training.lr (Hayou et al. "
        "use 16); adapter A matrices and the head keep theirs.",
    )


def _lora_config(settings: LoraSettings, model, ctx, **variant):
    from peft import LoraConfig

    exclude = list(ctx.head_modules)
    targets = settings.target_modules
    check_targets(model, targets)
    if targets is None:
        targets = linear_leaf_names(model, exclude)
    if settings.layers is not None and settings.layers_to_transform is not None:
        raise ModelError("adapter.layers: give adapter.layers or adapter.layers_to_transform, not both")
    layers = resolve_layers(settings.layers, model) if settings.layers is not None else settings.layers_to_transform
    init = settings.init_lora_weights
    if init == "eva":
        raise ModelError(
            "adapter.init_lora_weights: eva initialises from activations over training batches (PEFT's "
            "initialize_lora_eva_weights), which adapterkit does not run yet; use gaussian, pissa, olora or loftq"
        )
    if init == "loftq":
        if ctx.quantization != "nf4":
            raise ModelError(
                "adapter.init_lora_weights: loftq initialises LoRA against a 4-bit backbone's quantization error; "
                "set backbone.quantization: nf4"
            )
        init = True  # LoRA is built as usual; loftq_init (below) then sets A and B from the original weights
    variant = {"use_rslora": settings.use_rslora, "use_dora": settings.use_dora, **variant}
    try:
        return LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=targets,
            exclude_modules=exclude_pattern(exclude),
            bias=settings.bias,
            layers_to_transform=layers,
            layers_pattern=settings.layers_pattern,
            init_lora_weights=init,
            rank_pattern=settings.rank_pattern or {},
            alpha_pattern=settings.alpha_pattern or {},
            **variant,
        )
    except (TypeError, ValueError) as e:
        raise ModelError(f"adapter: PEFT's LoraConfig refused these settings: {str(e).splitlines()[0][:240]}") from None


def _keep_int8_scale(module, args):
    # PEFT's DoRA (bnb path) leaves weight.CB set after each step, so bitsandbytes re-runs init_8bit_state and copies
    # weight.SCB (already moved to state) as None: the next forward fails. Hand the scale back before that happens.
    w = module.weight
    if getattr(w, "CB", None) is not None and getattr(w, "SCB", None) is None and module.state.SCB is not None:
        w.SCB = module.state.SCB


def keep_int8_scales(model) -> None:
    """Install _keep_int8_scale on every int8 linear layer (once); needed for DoRA on int8 backbones."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not getattr(module, "_adapterkit_scale_hook", False):
            module.register_forward_pre_hook(_keep_int8_scale)
            module._adapterkit_scale_hook = True


def _dora_config(settings, model, ctx):
    keep_int8_scales(model)
    return _lora_config(settings.model_copy(update={"use_dora": True}), model, ctx)


def _lora_after_wrap(model) -> None:
    cfg = getattr(model, "active_peft_config", None)
    if cfg is not None and getattr(cfg, "use_dora", False):
        keep_int8_scales(model)


def loftq_init(model, settings, ctx) -> None:
    """LoftQ (Li et al.), one step: A and B are the rank-r SVD of W - dequant(Q(W)), so the 4-bit weight plus the
    adapter starts closest to the original weight W, read from the backbone's safetensors. The base weights stay as
    loaded, so runs save, reload and merge like any LoRA run. Our own loop rather than PEFT's
    replace_lora_weights_loftq: that one computes on CUDA/XPU only and leaves out LoRA's scale (alpha / r), so its
    adapter adds scale x the residual; here B is divided by the scale."""
    if getattr(settings, "init_lora_weights", None) != "loftq":
        return
    import bitsandbytes as bnb
    import torch
    from peft.tuners.lora import Linear4bit
    from peft.utils.loftq_utils import _low_rank_decomposition, _SafetensorLoader

    loader = _SafetensorLoader(model, ctx.checkpoint_dir)
    done = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, Linear4bit) or "default" not in module.lora_A:
                continue
            try:
                weight = loader.get_tensor(name.removeprefix("base_model.model.") + ".weight").to(torch.float32)
            except (KeyError, ValueError) as e:
                raise ModelError(
                    f"adapter.init_lora_weights: loftq cannot read the original weight of {name}: {e}"
                ) from None
            base = module.get_base_layer().weight
            residual = weight.to(base.device) - bnb.functional.dequantize_4bit(base.data, base.quant_state).to(
                torch.float32
            )
            parts = _low_rank_decomposition(residual, reduced_rank=module.r["default"])
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            a.copy_(parts["R"].to(a.dtype))
            b.copy_((parts["L"] / module.scaling["default"]).to(b.dtype))
            done += 1
    if not done:
        raise ModelError("adapter.init_lora_weights: loftq found no 4-bit LoRA layers to initialise")


def residual_init(settings) -> bool:
    """Whether the adapter starts from a slice of the base weights (PiSSA, OLoRA), which then hold the residual."""
    init = getattr(settings, "init_lora_weights", None)
    return isinstance(init, str) and init.split("_")[0] in RESIDUAL_INITS


register_method(
    Method(
        "lora",
        LoraSettings,
        _lora_config,
        mergeable=True,
        combinable=True,
        after_wrap=_lora_after_wrap,
        init_weights=loftq_init,
        mixes_in_batch=lambda s: not s.use_dora,
        mixed_rows=lora_rows,
        description="Low-rank update W + BA (PEFT LoRA).",
    )
)
register_method(
    Method(
        "dora",
        LoraSettings,
        _dora_config,
        mergeable=True,
        after_wrap=keep_int8_scales,
        description="Weight-decomposed LoRA (magnitude + direction).",
    )
)
register_method(
    Method(
        "rslora",
        LoraSettings,
        lambda s, m, c: _lora_config(s.model_copy(update={"use_rslora": True}), m, c),
        mergeable=True,
        combinable=True,
        mixes_in_batch=lambda s: not s.use_dora,
        mixed_rows=lora_rows,
        description="LoRA scaled by alpha/sqrt(r), stable at high rank.",
    )
)
