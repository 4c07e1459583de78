"""Non-finite loss or gradients during training: stop with the step number (the last checkpoint stays the last good
one), or skip that optimizer step, as `training.on_nonfinite` says."""

from __future__ import annotations

import math

import torch

from .checkpoint import list_checkpoints


class NonFiniteError(FloatingPointError):
    """Training hit a NaN/inf loss or gradient (the CLI exits with code 3)."""


class NonFiniteGuard:
    def __init__(self, mode: str, accelerator, writer, run_dir):
        self.mode, self.acc, self.writer, self.run_dir = mode, accelerator, writer, run_dir
        self.bad_loss: float | None = None  # a non-finite loss seen in the current accumulation window
        self.skipped: list[int] = []

    def loss(self, loss: torch.Tensor) -> bool:
        """Per forward pass: record a non-finite loss. Returns whether the loss is finite."""
        value = float(loss.detach().float())
        if not math.isfinite(value):
            self.bad_loss = value
            return False
        return True

    def step_ok(self, grad_norm, step: int) -> bool:
        """At an optimizer step: True to take it. A non-finite gradient norm only counts without a grad scaler
        (fp16's scaler skips such steps by itself). All processes agree, so DDP never diverges."""
        bad_grad = (
            grad_norm is not None
            and self.acc.scaler is None
            and not bool(torch.isfinite(torch.as_tensor(grad_norm)).all())
        )
        flag = torch.tensor(float(self.bad_loss is not None or bad_grad), device=self.acc.device)
        bad = self.acc.reduce(flag, "sum").item() > 0
        what = (
            f"loss is {self.bad_loss}"
            if self.bad_loss is not None
            else "gradient norm is not finite"
            if bad_grad
            else "another process saw a non-finite value"
        )
        self.bad_loss = None
        if not bad:
            return True
        if self.mode == "skip":
            self.skipped.append(step)
            if self.acc.is_main_process:
                self.writer.log(dict(event="skipped_step", step=step, reason=what))
            return False
        found = list_checkpoints(self.run_dir)
        last = (
            f"last good checkpoint: {found[-1]} (continue with --resume)"
            if found
            else "no checkpoint was written yet (training.checkpoint_every)"
        )
        if self.acc.is_main_process:
            self.writer.log(dict(event="stopped", step=step, reason=what))
        raise NonFiniteError(
            f"training stopped at step {step}: {what}; {last}. "
            f"Lower training.lr, check the data, or set training.on_nonfinite=skip"
        )
