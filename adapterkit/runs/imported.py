"""`adapterkit import-adapter FOLDER --out RUN`: an adapter trained elsewhere becomes a run folder that eval,
predict, serve, export and `adapter.sources` (fusion, stack) accept. Today: AdapterHub's bottleneck adapters with
their classification head (adapters/bottleneck/adapterhub.py has the mapping and what it refuses)."""

from __future__ import annotations

import time
from pathlib import Path

from ..adapters.bottleneck.adapterhub import adapter_weights, head_weights, read_adapter
from ..adapters.bottleneck.compose import block_key
from ..config import resolve_paths
from ..errors import ModelError
from ..model import build, recipe_from_dict
from ..model.backbone import load_config, load_tokenizer
from .rundir import RunWriter


def _recipe(hub, base: str, quantization: str, out: Path, overwrite: bool):
    adapter = dict(hub.settings)
    data = {
        "backbone": {"path": base, "quantization": quantization},
        "adapter": adapter,
        "task": {"type": "sequence_classification", "labels": hub.labels},
        "training": {"output_dir": str(out), "overwrite": overwrite},
    }
    recipe = resolve_paths(recipe_from_dict(data))
    if hub.leave_out:  # our `layers` lists the adapted ones: the base's depth decides the complement
        depth = int(load_config(recipe.backbone).num_hidden_layers)
        adapter["layers"] = [i for i in range(depth) if i not in hub.leave_out]
        recipe = resolve_paths(recipe_from_dict(data))
    return recipe


def _load_adapter(model, hub) -> None:
    import torch

    from ..adapters.bottleneck.layer import BottleneckLayer

    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, BottleneckLayer):
            key = block_key(name) or name
            layers[key.removesuffix(".dense")] = module
    filled = set()
    for (block, part, param), value in adapter_weights(hub).items():
        module = layers.get(block)
        if module is None:
            raise ModelError(
                f"import-adapter: {hub.folder}: an adapter at {block}, where this base has no {hub.settings['placement']} place"
            )
        target = getattr(getattr(module, f"bottleneck_{part}")["default"], param)
        if target.shape != value.shape:
            raise ModelError(
                f"import-adapter: {hub.folder}: {block} {part}.{param} has shape {list(value.shape)}, this base "
                f"needs {list(target.shape)} (another base model?)"
            )
        with torch.no_grad():
            target.copy_(value.to(target.dtype))
        filled.add((block, part, param))
    wanted = {
        (b, n.split(".")[0].removeprefix("bottleneck_"), n.split(".")[-1])
        for b, m in layers.items()
        for n, _ in m.named_parameters()
        if n.startswith("bottleneck_")
    }
    missing = sorted(wanted - filled)
    if missing:
        raise ModelError(f"import-adapter: {hub.folder}: no weight for {'.'.join(missing[0])}")


def _load_head(model, hub) -> None:
    import torch

    inner = model.get_base_model()
    own = inner.state_dict()
    state = head_weights(hub, inner.base_model_prefix)
    for key, value in state.items():
        if key not in own or own[key].shape != value.shape:
            raise ModelError(f"import-adapter: {hub.folder}: the head's {key} does not fit this base's head")
    with torch.no_grad():
        inner.load_state_dict(state, strict=False)


def import_adapter(folder, out, base: str | None = None, quantization: str = "none", overwrite: bool = False) -> dict:
    """Convert `folder` into the run folder `out`; returns what run.json records about the import."""
    hub = read_adapter(Path(folder))
    base = base or hub.base
    if not base:
        raise ModelError(f"import-adapter: {folder}: the adapter names no base model; give --base")
    recipe = _recipe(hub, base, quantization, Path(out), overwrite)
    writer = RunWriter(Path(out), recipe)
    writer.check_writable()
    tokenizer = load_tokenizer(recipe.backbone)
    model, head_modules = build(recipe, hub.labels)
    _load_adapter(model, hub)
    _load_head(model, hub)
    model.eval()
    record = {"from": str(Path(folder).resolve()), "format": "adapterhub", "name": hub.name, "base": base}
    writer.start(tokenizer, hub.labels, {"imported": record})
    writer.save_weights(model, head_modules)
    writer.finish({"imported": dict(record, at=time.strftime("%Y-%m-%dT%H:%M:%S"))})
    return record
