"""The training loop, on Accelerate: mixed precision, gradient accumulation, warmup + schedule, periodic
evaluation, early stopping, best-checkpoint selection, JSON-lines logging. Runs unchanged under
`accelerate launch` with several processes (logging and saving happen on the main process only)."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from . import data as data_mod
from . import metrics as metrics_mod
from .config import Recipe
from .heads import HEADS


def mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def progress(iterable=None, **kw):
    from tqdm.auto import tqdm

    # Quiet in non-interactive logs (CI, files): the JSON log has the numbers.
    off = kw.pop("disable", False) or not sys.stderr.isatty()
    return tqdm(iterable, disable=off, dynamic_ncols=True, **kw)


def _lower_is_better(metric: str, mode: str) -> bool:
    if mode != "auto":
        return mode == "min"
    return metric in ("loss", "perplexity", "mse", "mae", "rmse") or metric.endswith("loss")


@torch.no_grad()
def evaluate(model, loader, head, accelerator=None, desc="eval") -> dict[str, float]:
    """Loss and the head's metrics over a dataloader (gathered across processes, padding duplicates dropped)."""
    model.eval()
    preds, refs, losses, n = [], [], 0.0, 0
    for batch in progress(loader, desc=desc, leave=False):
        out = model(**batch)
        bs = batch["input_ids"].shape[0]
        loss = out.loss.detach().float() * bs
        p, r = head.predict(out.logits), batch["labels"]
        if accelerator is not None:
            loss = accelerator.reduce(loss, "sum")
            bs = accelerator.reduce(torch.tensor(bs, device=loss.device), "sum").item()
            p, r = accelerator.gather_for_metrics((p, r))
        losses += loss.item()
        n += bs
        preds.append(p.cpu())
        refs.append(r.cpu())
    model.train()
    result = {"loss": round(losses / max(n, 1), 6)}
    result.update(head_metrics(head, torch.cat(preds), torch.cat(refs)))
    return result


def head_metrics(head, preds: torch.Tensor, refs: torch.Tensor) -> dict[str, float]:
    if "metrics_fn" in head.extra:
        return head.extra["metrics_fn"](preds, refs)
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


def train(recipe: Recipe, run_dir: Path | None = None) -> dict:
    """Train the recipe; write the run directory; return the final metrics per split."""
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
    accelerator = Accelerator(mixed_precision=mixed_precision(t.mixed_precision), gradient_accumulation_steps=t.gradient_accumulation)
    set_seed(t.seed)
    head = HEADS[recipe.task.type]
    tokenizer = load_tokenizer(recipe.backbone)
    splits, labels = data_mod.prepare(recipe, tokenizer, head)
    set_seed(t.seed)
    model, head_modules = build(recipe, labels, device=accelerator.device if accelerator.device.type == "cuda" else None)
    n_train, n_total = trainable_parameters(model)

    train_dl = data_mod.dataloader(splits["train"], tokenizer, t.batch_size, True, t.seed, t.group_by_length)
    eval_dl = data_mod.dataloader(splits["validation"], tokenizer, t.eval_batch_size, False, t.seed, False) if "validation" in splits else None
    steps_per_epoch = math.ceil(len(train_dl) / (t.gradient_accumulation * accelerator.num_processes))
    total_steps = t.max_steps or max(1, math.ceil(steps_per_epoch * t.epochs))
    optimizer = torch.optim.AdamW(param_groups(model, recipe, head_modules), lr=t.lr)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=int(t.warmup_ratio * total_steps), num_training_steps=total_steps)
    model, optimizer, train_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, scheduler)
    if eval_dl is not None:
        eval_dl = accelerator.prepare(eval_dl)

    es = t.early_stopping
    lower = _lower_is_better(es.metric, es.mode)
    best, best_step, bad_evals = None, None, 0
    best_state = None
    if accelerator.is_main_process:
        writer.start(tokenizer, labels, dict(trainable_params=n_train, total_params=n_total, total_steps=total_steps,
                                             head_modules=head_modules))
        writer.log(dict(event="start", trainable_params=n_train, total_params=n_total, trainable_share=round(n_train / n_total, 6),
                        total_steps=total_steps, processes=accelerator.num_processes))
    model.train()
    step, seen, window_loss, window_n = 0, 0, 0.0, 0
    t0 = time.perf_counter()
    bar = progress(total=total_steps, desc="train", disable=not accelerator.is_main_process)
    stop = False
    epoch = 0
    while not stop:
        for batch in train_dl:
            with accelerator.accumulate(model):
                out = model(**batch)
                loss = out.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window_loss += loss.detach().float().item()
            window_n += 1
            seen += batch["input_ids"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % t.log_every == 0 or step == total_steps:
                mean_loss = accelerator.reduce(torch.tensor(window_loss / window_n, device=accelerator.device), "mean").item()
                if not math.isfinite(mean_loss):
                    writer.log(dict(event="stopped", step=step, reason="non-finite loss"))
                    raise FloatingPointError(f"training loss is {mean_loss} at step {step}: lower training.lr or check the data")
                elapsed = time.perf_counter() - t0
                if accelerator.is_main_process:
                    writer.log(dict(step=step, epoch=round(seen / (len(splits["train"]) or 1), 4), loss=round(mean_loss, 6),
                                    lr=scheduler.get_last_lr()[0], examples_per_s=round(seen / elapsed, 2)))
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                window_loss, window_n = 0.0, 0
            at_epoch_end = step % steps_per_epoch == 0
            if eval_dl is not None and ((t.eval_every and step % t.eval_every == 0) or (not t.eval_every and at_epoch_end) or step == total_steps):
                result = evaluate(model, eval_dl, head, accelerator, desc="validation")
                value = result.get(es.metric)
                if value is None:
                    raise KeyError(f"training.early_stopping.metric: {es.metric!r} is not among the validation metrics {sorted(result)}")
                improved = best is None or (value < best if lower else value > best)
                if improved:
                    best, best_step, bad_evals = value, step, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()
                                  if k in _trainable_keys(accelerator.unwrap_model(model))}
                else:
                    bad_evals += 1
                if accelerator.is_main_process:
                    writer.log(dict(event="eval", split="validation", step=step, **result, best=improved))
                if es.patience and bad_evals >= es.patience:
                    writer.log(dict(event="early_stop", step=step, best_step=best_step)) if accelerator.is_main_process else None
                    stop = True
            if step >= total_steps or stop:
                stop = True
                break
        epoch += 1
    bar.close()
    train_s = time.perf_counter() - t0
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None and best_step != step:
        unwrapped.load_state_dict(best_state, strict=False)
    final = {}
    if eval_dl is not None:
        final["validation"] = evaluate(model, eval_dl, head, accelerator, desc="validation")
    if "test" in splits:
        test_dl = accelerator.prepare(data_mod.dataloader(splits["test"], tokenizer, t.eval_batch_size, False, t.seed, False))
        final["test"] = evaluate(model, test_dl, head, accelerator, desc="test")
    final["train"] = dict(steps=step, examples=seen, seconds=round(train_s, 2), examples_per_s=round(seen / train_s, 2),
                          best_step=best_step, trainable_params=n_train)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        writer.finish(unwrapped, head_modules, final)
    accelerator.end_training()
    return final


def _trainable_keys(model) -> set[str]:
    return {k for k, p in model.named_parameters() if p.requires_grad}
