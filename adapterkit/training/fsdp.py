"""FSDP2 (torch `fully_shard`, prepared by Accelerate): what the loop and the checkpointer do differently when the
parameters are DTensors sharded over the processes.

- `check`: refusals before anything loads (an int8 backbone cannot be sharded).
- `enable_on_cpu`: CPU processes (gloo) get Accelerate's own FSDP2 preparation too.
- `save` / `load` / `verify`: the checkpoint's trained weights, best weights and optimizer state as a sharded torch
  distributed checkpoint (DCP), each process writing its own shards.
- `snapshot`: the best weights kept during training, still sharded.
- `gather_for_saving`: the trained weights gathered into the main process's model before the run folder is written,
  so the run holds plain, unsharded files and `export`, `eval` and `predict` treat it as any other run.

Why DCP's Hugging Face storage (`HuggingFaceStorageWriter(save_distributed=True)` / `HuggingFaceStorageReader`) and
not its default `FileSystemWriter`: the default writes a pickled `.metadata` file that loading unpickles, and a
checkpoint must never unpickle. The Hugging Face storage writes one safetensors file per process, whose header holds
the shard offsets as JSON; the reader builds the checkpoint's metadata from those headers. DCP also reshards on load,
so these files can be read back by a different number of processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import RecipeError, RunDirError

SHARDED_DIR = "sharded"  # inside a checkpoint folder: the DCP files, one safetensors file per process
INT8_REFUSAL = (
    "backbone.quantization: int8 cannot be sharded by FSDP (it shards only floating-point storage); use DDP "
    "(recipes/accelerate/multi-gpu-ddp.yaml) or nf4, whose bnb_4bit_quant_storage packs the 4-bit weights in "
    "backbone.dtype (recipes/accelerate/fsdp-4bit.yaml)"
)


def requested() -> bool:
    """The launcher asked for FSDP (`distributed_type: FSDP` in the Accelerate config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check(recipe) -> None:
    """Before any model loads: what FSDP cannot shard."""
    if requested() and recipe.backbone.quantization == "int8":
        raise RecipeError(INT8_REFUSAL)


def active(accelerator) -> bool:
    return bool(getattr(accelerator, "is_fsdp2", False))


def enable_on_cpu(accelerator) -> None:
    """CPU processes joined with `cpu=True` (distributed.accelerator_kwargs) get FSDP2 too. On GPUs Accelerate has
    already chosen FSDP and this does nothing."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not requested() or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables, as Accelerator() reads them
    if plugin.fsdp_version != 2:
        raise RecipeError(
            "FSDP on CPU processes needs fsdp_version: 2 in the Accelerate config (recipes/accelerate/cpu-fsdp2.yaml)"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    # Bridge: Accelerate 1.16 switches a MULTI_CPU state to FSDP nowhere (its switch lists only GPU-like devices),
    # though fully_shard runs on a CPU mesh over gloo; set what its switch would have set. In PartialState too:
    # every later AcceleratorState() copies the distributed type from it.
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


def wrap_blocks_only(accelerator, model) -> None:
    """Before Accelerate prepares the model: the units `TRANSFORMER_BASED_WRAP` shards one by one are the model's
    `_no_split_modules` classes, less any that holds the input embeddings (BERT lists `BertEmbeddings`)."""
    from accelerate.utils.dataclasses import get_module_class_from_name
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = accelerator.state.fsdp_plugin if active(accelerator) else None
    if plugin is None or plugin.auto_wrap_policy != transformer_auto_wrap_policy:
        return
    if plugin.transformer_cls_names_to_wrap is not None:  # named in the Accelerate config: as given
        return
    # Bridge: Accelerate 1.16 then shards the input embeddings as a unit of their own; inside an already sharded
    # unit their weight is a DTensor and fully_shard fails ("Invariant encountered: value was None").
    embed = model.get_input_embeddings()
    holders = {type(m).__name__ for m in model.modules() if any(c is embed for c in m.modules())}
    plugin.transformer_cls_names_to_wrap = [
        n
        for n in getattr(model, "_no_split_modules", None) or []
        if n not in holders and get_module_class_from_name(model, n) is not None
    ]


def snapshot(tensors: dict) -> dict:
    """A copy of weights to keep (the best ones so far): sharded DTensors stay sharded, on their device."""
    from torch.distributed.tensor import DTensor

    return {k: v.detach().clone() if isinstance(v, DTensor) else v.detach().cpu().clone() for k, v in tensors.items()}


def sharded_params(model, keys: set[str] | None) -> dict:
    """The parameters named in `keys` (all when None) as sharded DTensors. The root unit keeps its parameters
    gathered after an evaluation's forward (no backward reshards them): reshard every unit first."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
    return {k: p for k, p in model.named_parameters() if keys is None or k in keys}


def _raw(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the torch one


def save(folder: Path, model, optimizer, keys: set[str] | None, best_state: dict | None) -> dict:
    """Every process: write its shards of the trained weights, the best weights and the optimizer state under
    `folder/sharded`. Returns the optimizer's non-tensor state (param groups), which state.json keeps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    trainable = sharded_params(model, keys)
    osd = get_optimizer_state_dict(model, _raw(optimizer))  # keyed by parameter name, not by position
    state = {"model": {k: v.detach() for k, v in trainable.items()}, "optim": osd["state"]}
    if best_state is not None:
        state["best"] = best_state
    dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(folder / SHARDED_DIR), save_distributed=True))
    return {"param_groups": osd["param_groups"]}


def verify(ckpt: Path, processes: int) -> None:
    """Every process's shard file is there and its header reads (the tensors are read when loading)."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    where = ckpt / SHARDED_DIR
    found = len(list(where.glob("*.safetensors"))) if where.is_dir() else 0
    if found != processes:
        raise RunDirError(f"{where}: {found} shard file(s) for the {processes} process(es) that wrote the checkpoint")
    try:
        HuggingFaceStorageReader(str(where)).read_metadata()
    except Exception as e:  # safetensors raises its own error types for truncated or corrupted files
        raise RunDirError(f"{where}: a shard is corrupted or truncated ({str(e).splitlines()[0][:120]})") from None


def shapes(ckpt: Path, model, keys: set[str] | None) -> tuple[dict, dict]:
    """(this model's, the checkpoint's) shapes of the trained parameters, read from the shards' headers."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    stored = HuggingFaceStorageReader(str(ckpt / SHARDED_DIR)).read_metadata().state_dict_metadata
    expected = {k: tuple(v.shape) for k, v in sharded_params(model, keys).items()}
    return expected, {k[len("model.") :]: tuple(m.size) for k, m in stored.items() if k.startswith("model.")}


def load(ckpt: Path, model, optimizer, keys: set[str] | None, saved: dict, has_best: bool) -> dict | None:
    """Every process: read its shards back into the model, the optimizer and (when saved) the best weights.
    `saved`: what `save` returned, from state.json. Returns the best weights (sharded) or None."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    trainable = sharded_params(model, keys)
    reader = HuggingFaceStorageReader(str(ckpt / SHARDED_DIR))
    raw = _raw(optimizer)
    osd = get_optimizer_state_dict(model, raw)  # creates the optimizer's state tensors for the load to fill
    best = {k: v.detach().clone() for k, v in trainable.items()} if has_best else None
    state = {"model": {k: v.detach() for k, v in trainable.items()}, "optim": osd["state"]}
    if best is not None:
        state["best"] = best
    dcp.load(state, storage_reader=reader)
    groups = saved["param_groups"]
    set_optimizer_state_dict(model, raw, {"state": osd["state"], "param_groups": groups})
    return best


def gather_for_saving(model, keys: set[str] | None) -> None:
    """Every process: gather the parameters named in `keys` (all when None); the main process's model then gives
    them, unsharded, wherever its state_dict() is read (save_pretrained, the head file), so it saves like any other.
    FSDP's own state_dict pre-hook puts the sharded parameters back on the modules: a post-hook swaps in the full
    ones. Nothing runs the model afterwards."""
    from torch.distributed.tensor import DTensor

    main = torch.distributed.get_rank() == 0
    for name, p in sharded_params(model, keys).items():
        if not isinstance(p, DTensor):
            continue
        full = p.full_tensor()  # a collective: every process walks the parameters in the same order
        if main:
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            module.register_state_dict_post_hook(_put(leaf, full.detach().cpu()))
        del full


def _put(leaf: str, tensor: torch.Tensor):
    def hook(module, state_dict, prefix, local_metadata) -> None:
        state_dict[prefix + leaf] = tensor

    return hook
