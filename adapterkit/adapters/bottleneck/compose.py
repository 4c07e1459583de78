"""Compositions of trained bottleneck adapters (`adapter.method: fusion | stack`): the source runs' adapters are
copied into the new run's adapter, frozen, with the sha256 of each source's weights in its adapter_config.json.

    fusion  AdapterFusion (Pfeiffer et al. 2021): per block, attention over the sources' outputs; the fusion layers
            and the task head train.
    stack   the sources in sequence (a domain or language adapter under a task adapter, as MAD-X), then a new
            bottleneck adapter on top that trains with the head.

Neither merges into the base weights (the adapters are non-linear): exports keep them as adapters.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from ...errors import ModelError
from ...files import check_safetensors, read_json, sha256
from ..registry import Method, MethodSettings, register_method
from ..targets import exclude_pattern
from .method import BottleneckSettings, design

FIELD = "adapter.sources"
# What every source must share: the composed adapters wrap the same modules and read the same input.
SHARED = ("placement", "adapter_input", "target_modules", "residual_inside")
_BLOCK = re.compile(r"(?:^|\.)(layers?\.\d+\..*)$")


class FusionSettings(MethodSettings):
    sources: list[str] = Field(
        ...,
        min_length=2,
        description="Run folders of trained bottleneck adapters on this backbone (same placement); their weights are copied into this run and stay frozen.",
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the fusion attention.")


class StackSettings(BottleneckSettings):
    sources: list[str] = Field(
        ...,
        min_length=1,
        description="Run folders of trained bottleneck adapters applied first, in this order (frozen); the adapter these keys describe goes on top and trains.",
    )


def read_source(i: int, where: str, model) -> dict:
    """One source run's adapter settings, checked: a bottleneck adapter on this backbone, weights in safetensors."""
    run = Path(where).expanduser()
    cfg_file = run / "adapter" / "adapter_config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{FIELD}[{i}]: {run} is not a finished adapterkit run (no adapter/adapter_config.json)")
    cfg = read_json(cfg_file, "adapter config")
    if str(cfg.get("peft_type")).upper() != "BOTTLENECK":
        raise ModelError(
            f"{FIELD}[{i}]: {run} holds a {cfg.get('peft_type')} adapter; fusion and stack compose bottleneck adapters "
            "(LoRA runs combine with `adapterkit merge`: PEFT's add_weighted_adapter)"
        )
    if cfg.get("compose"):
        raise ModelError(f"{FIELD}[{i}]: {run} is itself a {cfg['compose']} run; compose its sources directly")
    if cfg.get("modules_to_save"):
        raise ModelError(
            f"{FIELD}[{i}]: {run} also trained the backbone's layer norms (train_layer_norms); a frozen composition "
            "cannot keep them"
        )
    base = getattr(getattr(model, "config", None), "_name_or_path", None)
    if base and cfg.get("base_model_name_or_path") and str(cfg["base_model_name_or_path"]) != str(base):
        raise ModelError(
            f"{FIELD}[{i}]: {run} was trained on {cfg['base_model_name_or_path']}, this recipe's backbone is {base}"
        )
    weights = run / "adapter" / "adapter_model.safetensors"
    check_safetensors(weights, "adapter")
    hidden = model.config.hidden_size
    size = cfg.get("bottleneck_size") or max(1, hidden // int(cfg.get("reduction_factor") or 16))
    return {
        "run": str(run),
        "sha256": sha256(weights),
        "bottleneck_size": int(size),
        "activation": cfg.get("activation", "relu"),
        "layer_norm": bool(cfg.get("layer_norm")),
        "scaling": float(cfg.get("scaling", 1.0)),
        **{k: cfg.get(k) for k in SHARED},
    }


def read_sources(paths: list[str], model) -> list[dict]:
    specs = [read_source(i, p, model) for i, p in enumerate(paths)]
    for i, spec in enumerate(specs[1:], 1):
        for key in SHARED:
            if spec[key] != specs[0][key]:
                raise ModelError(
                    f"{FIELD}[{i}]: {spec['run']} has {key} {spec[key]!r}, {specs[0]['run']} has {specs[0][key]!r}; "
                    "composed adapters must sit in the same places"
                )
    return specs


def _common(specs: list[dict], ctx) -> dict:
    return dict(
        placement=specs[0]["placement"],
        adapter_input=specs[0]["adapter_input"] or "projection",
        target_modules=specs[0]["target_modules"],
        residual_inside=specs[0]["residual_inside"],
        exclude_modules=exclude_pattern(ctx.head_modules),
        sources=[{k: v for k, v in s.items() if k not in SHARED} for s in specs],
    )


def _fusion_config(s: FusionSettings, model, ctx):
    from .registration import BottleneckConfig

    return BottleneckConfig(
        compose="fusion", fusion_temperature=s.temperature, **_common(read_sources(s.sources, model), ctx)
    )


def _stack_config(s: StackSettings, model, ctx):
    from .registration import BottleneckConfig

    specs = read_sources(s.sources, model)
    common = _common(specs, ctx)
    for key in ("placement", "adapter_input"):
        if key in s.model_fields_set and getattr(s, key) != common[key]:
            raise ModelError(
                f"adapter.{key}: {getattr(s, key)} differs from the sources' {common[key]}; the adapter on top sits "
                "where they sit (leave it out)"
            )
    d = design(s.model_copy(update={"placement": common["placement"]}), model.config.model_type)
    return BottleneckConfig(
        compose="stack",
        bottleneck_size=s.bottleneck_size,
        reduction_factor=s.reduction_factor,
        dropout=s.dropout,
        scaling=s.scaling,
        layer_norm=s.layer_norm,
        activation=d["activation"],
        init_weights=d["init_weights"],
        **common,
    )


def block_key(name: str) -> str | None:
    """`layer.3.output` of any model class's module path (bert.encoder.layer.3.output, base_model.model...)."""
    m = _BLOCK.search(name)
    return m.group(1) if m else None


def load_sources(model, settings, ctx) -> None:
    """Copy each source run's adapter weights into the composition's frozen source adapters (a fresh build only: a
    trained composition reloads them from its own adapter file). Refuses weights that do not fit."""
    import torch
    from safetensors.torch import load_file

    from .layer import BottleneckLayer

    layers = {block_key(n): m for n, m in model.named_modules() if isinstance(m, BottleneckLayer)}
    for i, where in enumerate(settings.sources):
        state = load_file(Path(where).expanduser() / "adapter" / "adapter_model.safetensors")
        filled = set()
        for key, value in state.items():
            path, _, leaf = key.rpartition(".bottleneck_")
            part, _, param = leaf.partition(".")
            layer = layers.get(block_key(path))
            if layer is None or part not in ("down", "up", "ln"):
                raise ModelError(f"{FIELD}[{i}]: {where}: weight {key} has no place in this model")
            target = getattr(layer.bottleneck_sources["default"][i], part)
            own = getattr(target, param)
            if own.shape != value.shape:
                raise ModelError(
                    f"{FIELD}[{i}]: {where}: {key} has shape {list(value.shape)}, this model needs {list(own.shape)}"
                )
            with torch.no_grad():
                own.copy_(value.to(own.dtype))
            filled.add((id(layer), part, param))
        if len(filled) != sum(
            sum(1 for _ in layer.bottleneck_sources["default"][i].parameters()) for layer in layers.values()
        ):
            raise ModelError(f"{FIELD}[{i}]: {where}: the adapter file does not cover every adapted block")


register_method(
    Method(
        "fusion",
        FusionSettings,
        _fusion_config,
        mergeable=False,
        init_weights=load_sources,
        description="AdapterFusion over trained bottleneck adapters (frozen): attention per block and a new head train.",
    )
)
register_method(
    Method(
        "stack",
        StackSettings,
        _stack_config,
        mergeable=False,
        init_weights=load_sources,
        default_lr=1.5e-3,  # the bottleneck method's: the adapter on top is one
        default_warmup=0.1,
        description="Trained bottleneck adapters in sequence (frozen), a new bottleneck adapter on top.",
    )
)
