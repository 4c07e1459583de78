"""The training loop, on Accelerate: mixed precision, gradient accumulation, warmup + schedule, periodic
evaluation, early stopping, best-checkpoint selection, JSON-lines logging. Runs unchanged under
`accelerate launch` with several processes (logging and saving happen on the main process only)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from . import data as data_mod
from . import metrics as metrics_mod
from . import distributed, report, tracking
from . import checkpoint
from . import perf
from .config import Recipe
from .errors import RecipeError
from .nonfinite import NonFiniteGuard
from .heads import HEADS
from .progress import progress, stage  # bars quiet in non-interactive logs; see progress.py


def mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _lower_is_better(metric: str, mode: str) -> bool:
    if mode != "auto":
        return mode == "min"
    return metric in ("loss", "perplexity", "mse", "mae", "rmse") or metric.endswith("loss")


@torch.no_grad()
def evaluate(model, loader, head, accelerator=None, desc="eval", labels=None, task=None) -> dict[str, float]:
    """Loss and the head's metrics over a dataloader (gathered across processes, padding duplicates dropped).
    Token-level predictions of different widths are padded with -100, which metrics ignore."""
    model.eval()
    preds, refs, losses, n = [], [], 0.0, 0
    for batch in progress(loader, desc=desc, leave=False):
        out = model(**batch)
        bs = batch["input_ids"].shape[0]
        loss = out.loss.detach().float() * bs
        p = head.predict(out.logits) if head.predict is not None else None
        r = batch["labels"]
        if accelerator is not None:
            loss = accelerator.reduce(loss, "sum")
            bs = accelerator.reduce(torch.tensor(bs, device=loss.device), "sum").item()
            if p is not None:
                if p.ndim > 1 and r.ndim > 1 and head.label_kind == "tokens":
                    p = accelerator.pad_across_processes(p, dim=1, pad_index=-100)
                    r = accelerator.pad_across_processes(r, dim=1, pad_index=-100)
                p, r = accelerator.gather_for_metrics((p, r))
        losses += loss.item()
        n += bs
        if p is not None:
            preds.append(p.cpu())
            refs.append(r.cpu())
    model.train()
    result = {"loss": round(losses / max(n, 1), 6)}
    if preds:
        result.update(head_metrics(head, _cat_padded(preds), _cat_padded(refs), labels, task))
    elif "loss_metrics" in head.extra:
        result.update(head.extra["loss_metrics"](result["loss"]))
    return result


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    if parts[0].ndim < 2 or all(p.shape[1:] == parts[0].shape[1:] for p in parts):
        return torch.cat(parts)
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=-100) for p in parts])


def head_metrics(head, preds: torch.Tensor, refs: torch.Tensor, labels=None, task=None) -> dict[str, float]:
    if "metrics_fn" in head.extra:
        import inspect

        fn = head.extra["metrics_fn"]
        params = inspect.signature(fn).parameters
        kw = {k: v for k, v in (("labels", labels), ("task", task)) if k in params}  # older hooks take (preds, refs) only
        return fn(preds, refs, **kw)
    return metrics_mod.compute(head.metrics, preds.tolist(), refs.tolist())


def param_groups(model, recipe: Recipe, head_modules):
    """AdamW groups: no decay on biases and norms; the head may have its own learning rate."""
    t = recipe.training
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = any(f".{h}." in f".{name}" or name.startswith(f"{h}.") for h in head_modules)
        decay = p.ndim >= 2 and "norm" not in name.lower()
        key = (is_head, decay)
        groups.setdefault(key, {"params": [], "lr": (t.head_lr or t.lr) if is_head else t.lr,
                                "weight_decay": t.weight_decay if decay else 0.0})["params"].append(p)
    return list(groups.values())


def train(recipe: Recipe, run_dir: Path | None = None, resume: str | None = None) -> dict:
    """Train the recipe; write the run directory; return the final metrics per split.
    `resume`: "latest" (the newest checkpoint in the run directory), a checkpoint folder, or a run folder."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from .backbone import load_tokenizer
    from .model import build, trainable_parameters
    from .rundir import RunWriter

    t = recipe.training
    run_dir = Path(run_dir or t.output_dir)
    writer = RunWriter(run_dir, recipe)
    writer.check_writable()
    resume_from = checkpoint.check_output_dir(recipe, resume, run_dir)
    perf.check(recipe)
    accelerator = Accelerator(mixed_precision=mixed_precision(t.mixed_precision), gradient_accumulation_steps=t.gradient_accumulation,
                              **tracking.accelerator_kwargs(t.trackers, run_dir), **distributed.accelerator_kwargs(),
                              **perf.accelerator_kwargs(recipe))
    tracking.start(accelerator, recipe, writer, run_dir)
    set_seed(t.seed)
    head = HEADS[recipe.task.type]
    tokenizer = load_tokenizer(recipe.backbone)
    with stage("reading and tokenizing data"):
        splits, labels = data_mod.prepare(recipe, tokenizer, head)
    set_seed(t.seed)
    with stage("loading backbone and adapter"):
        model, head_modules = build(recipe, labels, device=accelerator.device if accelerator.device.type == "cuda" else None)
    n_train, n_total = trainable_parameters(model)
    perf.prepare_model(recipe, model)

    train_dl = data_mod.dataloader(splits["train"], tokenizer, t.batch_size, True, t.seed, t.group_by_length, accelerator.num_processes,
                                   collate_fn=perf.train_collator(recipe, tokenizer))
    eval_dl = data_mod.dataloader(splits["validation"], tokenizer, t.eval_batch_size, False, t.seed, False) if "validation" in splits else None
    steps_per_epoch = math.ceil(len(train_dl) / (t.gradient_accumulation * accelerator.num_processes))
    total_steps = t.max_steps or max(1, math.ceil(steps_per_epoch * t.epochs))
    optimizer = torch.optim.AdamW(param_groups(model, recipe, head_modules), lr=t.lr)
    # Accelerate's prepared scheduler steps once per process per optimizer step: count the schedule in those units.
    n_proc = accelerator.num_processes
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=int(t.warmup_ratio * total_steps) * n_proc,
                              num_training_steps=total_steps * n_proc)
    model, optimizer, train_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, scheduler)
    if eval_dl is not None:
        eval_dl = accelerator.prepare(eval_dl)

    es = t.early_stopping
    lower = _lower_is_better(es.metric, es.mode)
    best, best_step, bad_evals = None, None, 0
    best_state = None
    ckpt = checkpoint.Checkpointer(run_dir, accelerator, model, optimizer, scheduler, checkpoint.sampler_generator(train_dl), t.keep_checkpoints)
    pos = checkpoint.Position()
    if resume_from is not None:
        pos, best_state = ckpt.load(resume_from)
        best, best_step, bad_evals = pos.best, pos.best_step, pos.bad_evals
    else:
        ckpt.clear()
    guard = NonFiniteGuard(t.on_nonfinite, accelerator, writer, run_dir)
    if accelerator.is_main_process:
        writer.start(tokenizer, labels, dict(trainable_params=n_train, total_params=n_total, total_steps=total_steps,
                                             head_modules=head_modules), resume=resume_from is not None)
        if resume_from is not None:
            writer.log(dict(event="resume", checkpoint=str(resume_from), step=pos.step))
        writer.log(dict(event="start", trainable_params=n_train, total_params=n_total, trainable_share=round(n_train / n_total, 6),
                        total_steps=total_steps, processes=accelerator.num_processes))
    model.train()
    step, seen, window_loss, window_n = pos.step, pos.seen, pos.window_loss, pos.window_n
    t0 = time.perf_counter() - pos.elapsed_s
    eval_s = pos.eval_s  # evaluation time is kept out of the training throughput
    bar = progress(total=total_steps, initial=step, desc="train", disable=not accelerator.is_main_process)
    stop = False
    epoch = 0
    while not stop:
        for batch in ckpt.batches(train_dl, pos):
            with accelerator.accumulate(model):
                loss, out = perf.training_loss(recipe, model, batch)
                finite = guard.loss(loss)
                accelerator.backward(loss)  # also when not finite: every DDP process must reach the gradient all-reduce
                grad_norm = None
                if accelerator.sync_gradients and (t.max_grad_norm or accelerator.scaler is None):
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf)
                if not accelerator.sync_gradients or guard.step_ok(grad_norm, step + 1):
                    optimizer.step()
                scheduler.step()  # also on a skipped step, as with AMP's skipped steps: the schedule follows the step count
                optimizer.zero_grad(set_to_none=True)
            if finite:
                window_loss += loss.detach().float().item()
                window_n += 1
            seen += perf.batch_examples(batch) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % t.log_every == 0 or step == total_steps:
                mean_loss = accelerator.reduce(torch.tensor(window_loss / max(window_n, 1), device=accelerator.device), "mean").item()
                if not math.isfinite(mean_loss):
                    writer.log(dict(event="stopped", step=step, reason="non-finite loss"))
                    raise FloatingPointError(f"training loss is {mean_loss} at step {step}: lower training.lr or check the data")
                elapsed = time.perf_counter() - t0 - eval_s
                if accelerator.is_main_process:
                    writer.log(dict(step=step, epoch=round(seen / (len(splits["train"]) or 1), 4), loss=round(mean_loss, 6),
                                    lr=scheduler.get_last_lr()[0], examples_per_s=round(seen / elapsed, 2)))
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                window_loss, window_n = 0.0, 0
            at_epoch_end = step % steps_per_epoch == 0
            if eval_dl is not None and ((t.eval_every and step % t.eval_every == 0) or (not t.eval_every and at_epoch_end) or step == total_steps):
                e0 = time.perf_counter()
                result = evaluate(model, eval_dl, head, accelerator, desc="validation", labels=labels, task=recipe.task)
                eval_s += time.perf_counter() - e0
                value = result.get(es.metric)
                if value is None:
                    raise RecipeError(f"training.early_stopping.metric: {es.metric!r} is not among the validation metrics {sorted(result)}")
                improved = best is None or (value < best if lower else value > best)
                if improved:
                    best, best_step, bad_evals = value, step, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()
                                  if k in _trainable_keys(accelerator.unwrap_model(model))}
                else:
                    bad_evals += 1
                if accelerator.is_main_process:
                    writer.log(dict(event="eval", split="validation", step=step, best=improved,
                                    **{k: v for k, v in result.items() if k != "report"}))  # the text report goes to metrics.json only
                if es.patience and bad_evals >= es.patience:
                    writer.log(dict(event="early_stop", step=step, best_step=best_step)) if accelerator.is_main_process else None
                    stop = True
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < total_steps and not stop:
                ckpt.save(checkpoint.Position(step=step, epoch=pos.epoch, batch_in_epoch=pos.batch_in_epoch, seen=seen, best=best,
                                              best_step=best_step, bad_evals=bad_evals, window_loss=window_loss, window_n=window_n,
                                              elapsed_s=time.perf_counter() - t0, eval_s=eval_s), best_state, len(train_dl))
            if step >= total_steps or stop:
                stop = True
                break
        epoch += 1
    bar.close()
    train_s = time.perf_counter() - t0 - eval_s
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None and best_step != step:
        unwrapped.load_state_dict(best_state, strict=False)
    final = {}
    if eval_dl is not None:
        final["validation"] = evaluate(model, eval_dl, head, accelerator, desc="validation", labels=labels, task=recipe.task)
    if "test" in splits:
        test_dl = accelerator.prepare(data_mod.dataloader(splits["test"], tokenizer, t.eval_batch_size, False, t.seed, False))
        final["test"] = evaluate(model, test_dl, head, accelerator, desc="test", labels=labels, task=recipe.task)
    final["train"] = dict(steps=step, examples=seen, seconds=round(train_s, 2), examples_per_s=round(seen / train_s, 2),
                          best_step=best_step, trainable_params=n_train)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        writer.finish(unwrapped, head_modules, final)
        tracking.log_final(accelerator, final, step)
        report.write_report_safely(run_dir)
    accelerator.end_training()
    return final


def _trainable_keys(model) -> set[str]:
    return {k for k, p in model.named_parameters() if p.requires_grad}
