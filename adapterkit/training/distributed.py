"""Process-group helpers shared by the single-task and multi-task trainers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import PeerStopped
from ..launch import TIMEOUT_ENV  # set by `adapterkit launch --timeout`


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def accelerator_kwargs(find_unused_parameters: bool = False) -> dict:
    """Extra `Accelerator(...)` arguments for the launch we are in.

    CPU-only multi-process runs: `accelerate launch --cpu --num_processes N` starts a single process unless an
    MPI hostfile is configured, so CPU runs are launched through torchrun (`--multi_gpu` or
    recipes/accelerate/cpu-multiprocess.yaml, or plain `torchrun`). Those processes only join one gloo group
    when the Accelerator is told to use the CPU, which is what this does when no GPU-like device exists."""
    kw: dict[str, object] = {}
    handlers: list = []
    if world_size() > 1 and not torch.accelerator.is_available():
        kw["cpu"] = True
    if find_unused_parameters:  # multi-task: each step trains one task's head, the other heads get no gradient
        from accelerate.utils import DistributedDataParallelKwargs

        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    if world_size() > 1 and os.environ.get(TIMEOUT_ENV):
        from datetime import timedelta

        from accelerate.utils import InitProcessGroupKwargs

        handlers.append(InitProcessGroupKwargs(timeout=timedelta(seconds=float(os.environ[TIMEOUT_ENV]))))
    if handlers:
        kw["kwargs_handlers"] = handlers
    return kw


# gloo reports a dead or silent peer as a RuntimeError naming its transport; NCCL and the store as DistError.
_PEER_LOST = re.compile(r"closed by peer|reset by peer|timed out|timeout|gloo", re.IGNORECASE)


def peer_failure(e: BaseException, run_dir: Path) -> PeerStopped | None:
    """The one-line error for a collective that failed because another process of the run is gone, else None."""
    if world_size() < 2 or not isinstance(e, RuntimeError):
        return None
    if not (isinstance(e, torch.distributed.DistError) or _PEER_LOST.search(str(e))):
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
