"""`training.on_collapse: recover`: when the collapse guard fires (training/collapse.py), go back to the best weights an
evaluation without findings chose, or to the weights training started from, multiply the learning rate and the rest
of its schedule by `collapse_lr_factor`, clear the optimizer's moments (they point where the run collapsed) and go
on; at most `collapse_retries` times. A run whose final weights are still collapsed after a recovery fails (exit 3);
one whose collapse only the final weights show (no step was left to recover in) finishes with its warning.

Everything a recovery changes is in the next checkpoint (weights, optimizer and schedule state, the recovery records
in the loop's position), so a resume after a recovery continues exactly as the uninterrupted run does."""

from __future__ import annotations

from .. import console
from ..errors import Collapsed
from . import distributed, fsdp


def start_weights(s) -> dict | None:
    """A copy of the trained weights before the first step (recover only; for full fine-tuning, every weight)."""
    if s.recipe.training.on_collapse != "recover":
        return None
    unwrapped = s.accelerator.unwrap_model(s.model)
    with distributed.gathered(unwrapped, s.trained_keys):
        return fsdp.snapshot({k: v for k, v in unwrapped.state_dict().items() if k in s.trained_keys})


def recover_or_fail(s, state, monitor, at: int, msg: str, at_end: bool) -> None:
    """Recover from the collapse `msg` describes, or raise Collapsed when no recovery is left or no step is."""
    t = s.recipe.training
    done = len(state.recoveries)
    if at_end:  # the weights the run ends with
        if not done:
            return  # no step was left to recover in and none was tried: the warning stands, as with `warn`
        reason = f"the weights the run ends with, after {done} recover{'y' if done == 1 else 'ies'}"
    elif state.step >= s.total_steps:
        return  # the last evaluation: the run ends with its best weights, which the final check looks at
    elif done >= t.collapse_retries:
        reason = f"after {done} recover{'y' if done == 1 else 'ies'} (training.collapse_retries: {t.collapse_retries})"
    else:
        reason = ""
    if reason:
        if s.main:
            s.writer.log(dict(event="stopped", step=at, reason="collapsed", recoveries=done))
        raise Collapsed(f"{msg}; still collapsed: {reason}")
    clean = state.best_state is not None and not state.best_collapsed
    weights = state.best_state if clean else state.start_state
    if weights is None:  # cannot happen with recover set (the start is kept); a guard for plugin layouts
        raise Collapsed(f"{msg}; no weights to go back to")
    unwrapped = s.accelerator.unwrap_model(s.model)
    with distributed.gathered(unwrapped, s.trained_keys, write=True):
        unwrapped.load_state_dict(weights, strict=False)
    lr = _scale_learning_rate(s, t.collapse_lr_factor)
    record = dict(
        step=at,
        attempt=done + 1,
        restored=f"step {state.best_step}" if clean else "the start",
        lr_factor=t.collapse_lr_factor,
        lr=lr,
    )
    state.recoveries.append(record)
    state.bad_evals = 0
    monitor.findings = {}  # the next finding needs two evaluations in a row again
    monitor.since = len(monitor.warnings)
    if s.main:
        s.writer.log(dict(event="recovered", **record))
        console.echo(
            f"adapterkit: recovering (attempt {done + 1} of {t.collapse_retries}): back to the weights of "
            f"{record['restored']}, learning rate x{t.collapse_lr_factor} (now {lr:.3g}), optimizer moments cleared",
            err=True,
        )


def _scale_learning_rate(s, factor: float) -> float:
    """Every group's learning rate and the schedule ahead of it times `factor`; the learning rate now."""
    optimizer = getattr(s.optimizer, "optimizer", s.optimizer)  # Accelerate's wrapper holds the torch optimizer
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    scheduler = getattr(s.scheduler, "scheduler", s.scheduler)
    scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    optimizer.state.clear()
    return optimizer.param_groups[0]["lr"]
