"""Process-group helpers shared by the single-task and multi-task trainers."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import PeerStopped
from ..launch import TIMEOUT_ENV  # set by `adapterkit launch --timeout`
from ..model.backbone import deepspeed_launch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def accelerator_kwargs(find_unused_parameters: bool = False) -> dict:
    """Extra `Accelerator(...)` arguments for the launch we are in.

    CPU-only multi-process runs: `accelerate launch --cpu --num_processes N` starts a single process unless an
    MPI hostfile is configured, so CPU runs are launched through torchrun (`--multi_gpu` or
    recipes/accelerate/cpu-multiprocess.yaml, or plain `torchrun`). Those processes only join one gloo group
    when the Accelerator is told to use the CPU, which is what this does when no GPU-like device exists.

    DeepSpeed on CPU: `cpu=True` would silently drop the DeepSpeed plugin (plain DDP instead), and without it
    Accelerate finds no backend for the CPU and counts one process per rank. Naming gloo keeps DeepSpeed and
    the real world size (DeepSpeed's CPU accelerator uses gloo when oneCCL is not installed)."""
    kw: dict[str, object] = {}
    handlers: list[object] = []
    init: dict[str, object] = {}  # process-group settings
    if world_size() > 1 and not torch.accelerator.is_available():
        if deepspeed_launch():
            init["backend"] = "gloo"
        else:
            kw["cpu"] = True
    if world_size() > 1 and os.environ.get(TIMEOUT_ENV):
        from datetime import timedelta

        init["timeout"] = timedelta(seconds=float(os.environ[TIMEOUT_ENV]))
    if init:
        from accelerate.utils import InitProcessGroupKwargs

        handlers.append(InitProcessGroupKwargs(**init))
    if find_unused_parameters:  # multi-task: each step trains one task's head, the other heads get no gradient
        from accelerate.utils import DistributedDataParallelKwargs

        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    if handlers:
        kw["kwargs_handlers"] = handlers
    return kw


# How gloo, NCCL and the store report a dead or silent peer; other collective errors (a wrong dtype, mismatched
# calls) are bugs a resume would meet again, so they keep their own message.
_PEER_LOST = re.compile(
    r"closed by peer|reset by peer|broken pipe|connection refused|timed out|timeout|remote process|aborted",
    re.IGNORECASE,
)


def peer_failure(e: BaseException, run_dir: Path) -> PeerStopped | None:
    """The one-line error for a collective that failed because another process of the run is gone, else None."""
    if world_size() < 2 or not isinstance(e, RuntimeError):
        return None
    if not (isinstance(e, torch.distributed.DistNetworkError) or _PEER_LOST.search(str(e))):
        return None
    from .checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    where = f"the last checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    detail = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0][:160]  # gloo prefixes its source file
    rank = os.environ.get("RANK", "?")
    return PeerStopped(
        f"process {rank} lost the other processes of this run ({detail}); {where}: "
        f"start every machine again with the same command and --resume"
    )


def check(recipe, resume_from) -> None:
    """What a DeepSpeed launch refuses, before anything loads."""
    if not deepspeed_launch():
        return
    from ..errors import RecipeError

    compiler = os.environ.get("CXX", "c++")
    if not torch.accelerator.is_available() and shutil.which(compiler) is None:
        # DeepSpeed's CPU backend compiles its shared-memory collective op when the process group starts
        raise RecipeError(
            f"DeepSpeed on CPU compiles an op at its first launch and needs a C++ compiler ({compiler} not found): "
            f"install one (apt-get install g++), or use cpu-multiprocess.yaml or cpu-fsdp2.yaml"
        )
    if recipe.tasks:  # its per-task loaders are prepared apart from the model, which DeepSpeed's set-up needs together
        raise RecipeError(
            "tasks: multi-task recipes do not train under DeepSpeed yet; use multi-gpu-ddp.yaml or an FSDP config"
        )
    if recipe.backbone.quantization == "int8":
        raise RecipeError(
            "backbone.quantization: int8 does not train under DeepSpeed (ZeRO shards floating-point storage only, as "
            "FSDP does); use recipes/accelerate/multi-gpu-ddp.yaml, or nf4 with backbone.dtype: bfloat16"
        )
    if recipe.training.loss_chunk_tokens and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise RecipeError(
            "training.loss_chunk_tokens: the chunked loss reads the LM head's weight, which ZeRO-3 partitions; "
            "leave it unset (the model's own loss is used) or use deepspeed-zero2.yaml"
        )
    # adapterkit's checkpoints hold the main process's optimizer state, while ZeRO splits it over the ranks (and
    # wraps it in objects a checkpoint cannot store): refused rather than written unusable.
    if recipe.training.checkpoint_every or resume_from is not None:
        raise RecipeError(
            "training.checkpoint_every / --resume: checkpoints are not supported under DeepSpeed yet (ZeRO splits "
            "the optimizer state over the ranks): add --set training.checkpoint_every=null, or use "
            "multi-gpu-ddp.yaml or an FSDP config for a resumable run"
        )


def configure_deepspeed(accelerator, training) -> None:
    """The recipe's gradient clipping where the DeepSpeed config leaves it `auto` (Accelerate would fill in 1.0).
    DeepSpeed clips inside its own step, so Accelerate's clip_grad_norm_ only reports the norm there."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    cfg = plugin.deepspeed_config
    if cfg.get("gradient_clipping", "auto") == "auto":
        cfg["gradient_clipping"] = training.max_grad_norm or 0.0  # 0: DeepSpeed does not clip


@contextmanager
def gathered(model, keys: set[str] | None, write: bool = False) -> Iterator[None]:
    """The trained parameters whole on every rank while the block runs: ZeRO-3 partitions every parameter (a rank
    holds a slice, the module an empty placeholder). `write`: rank 0's values are kept after the block. Every rank
    must enter (it is a collective); elsewhere it does nothing. `keys` None: every parameter (full fine-tuning)."""
    params = [p for n, p in model.named_parameters() if (keys is None or n in keys) and hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0 if write else None):
        yield
