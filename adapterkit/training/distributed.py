"""Process-group helpers shared by the single-task and multi-task trainers."""

from __future__ import annotations

import os

import torch


def accelerator_kwargs(find_unused_parameters: bool = False) -> dict:
    """Extra `Accelerator(...)` arguments for the launch we are in.

    CPU-only multi-process runs: `accelerate launch --cpu --num_processes N` starts a single process unless an
    MPI hostfile is configured, so CPU runs are launched through torchrun (`--multi_gpu` or
    recipes/accelerate/cpu-multiprocess.yaml, or plain `torchrun`). Those processes only join one gloo group
    when the Accelerator is told to use the CPU, which is what this does when no GPU-like device exists."""
    kw: dict[str, object] = {}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        kw["cpu"] = True
    if find_unused_parameters:  # multi-task: each step trains one task's head, the other heads get no gradient
        from accelerate.utils import DistributedDataParallelKwargs

        kw["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    return kw
