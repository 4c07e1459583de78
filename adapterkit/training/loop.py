"""The training loop, on Accelerate, for single-task and multi-task recipes alike: mixed precision, gradient
accumulation, warmup + schedule, periodic evaluation, early stopping, best-checkpoint selection, resumable
checkpoints, the non-finite guard, trackers, the speed switches and a JSON-lines log. Runs unchanged under
`accelerate launch` with several processes (logging and saving happen on the main process only).

A single-task recipe is one task; a multi-task recipe is several tasks over one joint model (multitask.py),
with a `TaskSampler` choosing which task's next batch each step trains on. Everything else is the same code.
"""
from __future__ import annotations

import math
import os
import signal
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import console, environment
from .. import data as data_mod
from ..adapters import method_settings
from ..adapters.lora import residual_init
from ..config import Recipe
from ..data.audit import audit, to_dict as audit_dict
from ..errors import AdapterkitError, Collapsed, Interrupted, RecipeError
from ..heads import HEADS, Head
from ..model import build, trainable_parameters, warmstart
from ..model.backbone import load_tokenizer, pin_revision
from ..progress import progress, stage  # bars quiet in non-interactive logs; see progress.py
from ..runs import RunWriter, write_report_safely
from ..runs.lock import locked
from . import checkpoint, distributed, multitask, switches, tracking
from .interrupt import StopRequest
from . import collapse
from .evaluate import collect, generated_text_metrics, lower_is_better, score
from .nonfinite import NonFiniteGuard
from .precision import cpu_has_bf16, mixed_precision  # noqa: F401  (cpu_has_bf16: re-exported)


def param_groups(model, recipe: Recipe, head_modules):
    """AdamW groups: no decay on biases and norms; the head may have its own learning rate; with LoRA+
    (`adapter.loraplus_lr_ratio`) the B matrices learn at that multiple of training.lr. The same rule as PEFT's
    create_loraplus_optimizer, kept in these groups so the head's rate and the no-decay groups stay."""
    t = recipe.training
    plus = getattr(method_settings(recipe.adapter), "loraplus_lr_ratio", None)
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = any(f".{h}." in f".{name}" or name.startswith(f"{h}.") for h in head_modules)
        decay = p.ndim >= 2 and "norm" not in name.lower()
        is_b = bool(plus) and not is_head and ".lora_B." in name
        key = (is_head, decay, is_b)
        lr = (t.head_lr or t.lr) if is_head else t.lr * (plus if is_b else 1.0)
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": t.weight_decay if decay else 0.0})["params"].append(p)
    return list(groups.values())


@dataclass
class Task:
    """One task the loop trains: its own (single-task) recipe, head, labels, tokenized splits and loss weight."""
    name: str
    recipe: Recipe
    head: Head
    labels: list | None
    splits: dict
    weight: float = 1.0
    adapter: str | None = None     # the PEFT adapter to activate for this task (multi-task, per-task adapters)
    eval_loader: Any = None
    stream: checkpoint.Stream | None = None
    metric: str | None = None      # headline validation metric (multi-task summary)
    holdout: dict | None = None    # data.validation_split: which training rows went where
    generation: dict = field(default_factory=dict)  # split -> (prompt ids, references) for generated-text metrics


@dataclass
class Job:
    """What the loop trains: the model, its head modules (paths in the model) and the tasks feeding it."""
    model: Any
    head_modules: list[str]
    tasks: dict[str, Task]
    multi: bool = False
    sampler: multitask.TaskSampler | None = None
    joint: multitask.JointModel | None = None
    info: dict = field(default_factory=dict)

    def forward_task(self, name: str) -> str | None:
        """The `task=` argument of the model's forward (multi-task models take the task name)."""
        return name if self.multi else None


def _prepare_tasks(recipe: Recipe, tokenizer) -> dict[str, Task]:
    if not recipe.tasks:
        head = HEADS[recipe.task.type]
        data = data_mod.prepare(recipe, tokenizer, head)
        return {"main": Task("main", recipe, head, data.labels, data.splits, holdout=data.holdout, generation=data.generation)}
    tasks = {}
    for spec in recipe.tasks:
        sub = multitask.task_recipe(recipe, spec)
        head = HEADS[sub.task.type]
        data = data_mod.prepare(sub, tokenizer, head)
        tasks[spec.name] = Task(spec.name, sub, head, data.labels, data.splits, spec.weight, metric=spec.metric or "loss",
                                holdout=data.holdout)
    return tasks


def _build_job(recipe: Recipe, tasks: dict[str, Task], device, tokenizer) -> Job:
    if not recipe.tasks:
        task = tasks["main"]
        model, head_modules = build(recipe, task.labels, device=device, tokenizer=tokenizer)
        return Job(model, head_modules, tasks, info=dict(head_modules=head_modules))
    joint = multitask.build_joint(recipe, {n: k.recipe for n, k in tasks.items()}, {n: k.labels for n, k in tasks.items()},
                                  device, tokenizer)
    per_task = recipe.multitask.adapter == "per_task"
    for n, k in tasks.items():
        k.adapter = joint.adapters[n] if per_task else None
    return Job(joint.model, joint.head_paths, tasks, multi=True, joint=joint)


def selection(results: dict[str, dict], metric: str, multi: bool) -> float:
    """The value early stopping and best-checkpoint selection compare. Multi-task: `TASK/METRIC` is one task's
    metric, a plain name the mean of that metric over every evaluated task."""
    if not multi:
        result = results["main"]
        if metric not in result:
            raise RecipeError(f"training.early_stopping.metric: {metric!r} is not among the validation metrics {sorted(result)}")
        return result[metric]
    if "/" in metric:
        name, _, key = metric.partition("/")
        if name not in results or key not in results[name]:
            known = sorted(f"{n}/{k}" for n, r in results.items() for k in r if k != "report")
            raise RecipeError(f"training.early_stopping.metric: {metric!r} is not among the validation metrics {known}")
        return results[name][key]
    missing = [n for n, r in results.items() if metric not in r]
    if missing:
        raise RecipeError(f"training.early_stopping.metric: {metric!r} is not reported by task(s) {missing}; "
                          f"name one task's metric as TASK/METRIC")
    return sum(r[metric] for r in results.values()) / len(results)


def train(recipe: Recipe, run_dir: Path | None = None, resume: str | None = None,
          on_eval: Callable[[int, float], None] | None = None, started: float | None = None) -> dict:
    """Train the recipe; write the run directory (and, for multi-task recipes, one per task); return the final
    metrics. `resume`: "latest" (the newest checkpoint in the run directory), a checkpoint folder, or a run folder.
    `on_eval(step, value)` sees the early-stopping metric after each evaluation (a search's pruner; it may raise to stop).
    `started`: when the command began (time.time()), so the timings name its start-up too."""
    run_dir = Path(run_dir or recipe.training.output_dir)
    writer = RunWriter(run_dir, recipe)
    writer.check_writable()
    # One writer per folder; under `accelerate launch` the main process holds the lock for all ranks.
    main_rank = os.environ.get("RANK", "0") == "0"
    with locked(run_dir, "training.output_dir") if main_rank else nullcontext(), StopRequest() as stop_request:
        try:
            return _train(recipe, run_dir, writer, resume, on_eval, stop_request, Timings(started))
        except Interrupted:
            raise
        except BaseException as e:
            if writer.info is not None and writer.info.get("status") == "running":  # the run started: say why it stopped
                reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {str(e)[:500]}"
                if not isinstance(e, (AdapterkitError, FloatingPointError, KeyboardInterrupt)):  # those already said why
                    writer.log(dict(event="error", error=reason, traceback=traceback.format_exc()))
                    e.add_note(f"adapterkit-log: {run_dir / 'log.jsonl'}")
                writer.set_status("failed", error=reason)
            raise


@dataclass
class Timings:
    """Wall seconds of each part of a training command, what the user waits for (metrics.json `timings`), and the
    process's peak resident memory at the end of each part (`peak_rss_mib`), which says which part raised it."""
    started: float | None = None
    parts: dict = field(default_factory=dict)
    peaks: dict = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        if self.started is not None:
            self.parts["start-up"] = round(max(time.time() - self.started, 0.0), 2)
            self.peaks["start-up"] = _peak_rss_mib()

    def lap(self, name: str, seconds: float | None = None) -> None:
        """Close the part `name` (the time since the last lap, or `seconds` when given)."""
        now = time.perf_counter()
        self.parts[name] = round(self.parts.get(name, 0.0) + (now - self._mark if seconds is None else seconds), 2)
        self.peaks[name] = _peak_rss_mib()
        self._mark = now

    def total(self) -> dict:
        return dict(self.parts, total=round(sum(self.parts.values()), 2))


def _peak_rss_mib() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _train(recipe: Recipe, run_dir: Path, writer: RunWriter, resume: str | None, on_eval, stop_request: StopRequest,
           timings: Timings) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    t = recipe.training
    multi = bool(recipe.tasks)
    resume_from = checkpoint.check_output_dir(recipe, resume, run_dir)
    switches.check(recipe, [s.task.type for s in recipe.tasks] if multi else [recipe.task.type])
    if multi:
        multitask.check_method(recipe)
    _fresh_state_for(mixed_precision(t.mixed_precision))
    accelerator = Accelerator(mixed_precision=mixed_precision(t.mixed_precision), gradient_accumulation_steps=t.gradient_accumulation,
                              **tracking.accelerator_kwargs(t.trackers, run_dir),
                              **distributed.accelerator_kwargs(find_unused_parameters=multi),
                              **switches.accelerator_kwargs(recipe))
    backbone = pin_revision(recipe.backbone)  # a Hub id: this run, its eval and its export read the same commit
    tracking.start(accelerator, recipe, writer, run_dir)
    set_seed(t.seed)
    tokenizer = load_tokenizer(recipe.backbone)
    timings.lap("set-up")
    with stage("reading and tokenizing data"):
        tasks = _prepare_tasks(recipe, tokenizer)
    timings.lap("reading and tokenizing data")
    source = None
    if recipe.adapter.init_from:  # checked before any model loads: a head fits only its own classes
        if multi:
            raise RecipeError("adapter.init_from: warm starts are for single-task recipes")
        source = warmstart.resolve(recipe.adapter.init_from)
        warmstart.check_labels(source, tasks["main"].labels, recipe.task.labels is not None)
    set_seed(t.seed)
    with stage("loading backbone and adapter"):
        job = _build_job(recipe, tasks, accelerator.device if accelerator.device.type == "cuda" else None, tokenizer)
    timings.lap("loading the model")
    model = job.model
    if source is not None:
        job.info["init_from"] = warmstart.apply(model, source, tasks["main"].labels)
    if residual_init(method_settings(recipe.adapter)) and accelerator.is_main_process:
        writer.save_initial_adapter(model)
    n_train, n_total = trainable_parameters(model)
    trained_keys = _trainable_keys(model)  # fixed now: per-task adapters switch requires_grad as training goes
    for task in tasks.values():
        switches.prepare_model(task.recipe, model)

    n_proc = accelerator.num_processes
    train_dls = {n: data_mod.dataloader(k.splits["train"], tokenizer, t.batch_size, True, t.seed, t.group_by_length, n_proc,
                                        collate_fn=switches.train_collator(k.recipe, tokenizer)) for n, k in tasks.items()}
    eval_dls = {n: data_mod.dataloader(k.splits["validation"], tokenizer, t.eval_batch_size, False, t.seed, False, by_length=True)
                for n, k in tasks.items() if "validation" in k.splits}
    sizes = {n: len(dl) for n, dl in train_dls.items()}  # batches per epoch of each task
    steps_per_epoch = math.ceil(sum(sizes.values()) / (t.gradient_accumulation * n_proc))
    total_steps = t.max_steps or max(1, math.ceil(steps_per_epoch * t.epochs))
    optimizer = torch.optim.AdamW(param_groups(model, recipe, job.head_modules), lr=t.lr)
    # Accelerate's prepared scheduler steps once per process per optimizer step: count the schedule in those units.
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=int(t.warmup_ratio * total_steps) * n_proc,
                              num_training_steps=total_steps * n_proc)
    if multi:
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        train_dls = {n: accelerator.prepare(dl) for n, dl in train_dls.items()}
        job.sampler = multitask.TaskSampler(sizes, recipe.multitask.sampling, recipe.multitask.temperature, t.seed)
    else:
        model, optimizer, train_dls["main"], scheduler = accelerator.prepare(model, optimizer, train_dls["main"], scheduler)
    for n, k in tasks.items():
        k.stream = checkpoint.Stream(train_dls[n])
        k.eval_loader = accelerator.prepare(eval_dls[n]) if n in eval_dls else None
    views = {n: (multitask.TaskView(model, n, k.adapter) if multi else model) for n, k in tasks.items()}

    es = t.early_stopping
    lower = lower_is_better(es.metric, es.mode)
    ckpt = checkpoint.Checkpointer(run_dir, accelerator, model, optimizer, scheduler, {n: k.stream for n, k in tasks.items()},
                                   job.sampler, t.keep_checkpoints, trained_keys, checkpoint.settings(recipe))
    pos, best_state = checkpoint.Position(), None
    if resume_from is not None:
        pos, best_state = ckpt.load(resume_from)
    guard = NonFiniteGuard(t.on_nonfinite, accelerator, writer, run_dir)
    if accelerator.is_main_process:
        info = dict(trainable_params=n_train, total_params=n_total, total_steps=total_steps, backbone=backbone,
                    environment=environment.record(), **job.info)
        if multi:
            info.update(multitask=True, tasks=list(tasks), sampling=recipe.multitask.sampling, adapter=recipe.multitask.adapter,
                        sampling_weights=multitask.sampling_weights(sizes, recipe.multitask.sampling, recipe.multitask.temperature))
        writer.start(tokenizer, {n: k.labels for n, k in tasks.items()} if multi else tasks["main"].labels, info,
                     resume=resume_from is not None)
        # The data as read: rows, duplicates, labels, overlaps between splits. Token lengths need a second, untruncated
        # tokenization (it tripled the start-up of small runs): `adapterkit data check` reports them.
        audits = {n: audit(k.recipe, tokenizer, lengths=False) for n, k in tasks.items()}
        writer.write_json("data_audit.json", {n: audit_dict(a) for n, a in audits.items()} if multi else audit_dict(audits["main"]))
        writer.log(dict(event="data_audit", rows={n: {s: sa.rows for s, sa in a.splits.items()} for n, a in audits.items()},
                        truncated={n: {s: sa.truncated for s, sa in a.splits.items()} for n, a in audits.items()},
                        warnings=[w for a in audits.values() for w in a.warnings]))
        holdouts = {n: k.holdout for n, k in tasks.items() if k.holdout}
        if holdouts:
            writer.write_json("data_split.json", holdouts if multi else holdouts["main"])
        if resume_from is not None:
            writer.log(dict(event="resume", checkpoint=str(resume_from), step=pos.step))
        start = dict(event="start", trainable_params=n_train, total_params=n_total, trainable_share=round(n_train / n_total, 6),
                     total_steps=total_steps, processes=n_proc)
        writer.log(dict(start, tasks=sizes) if multi else start)
    if resume_from is None:  # after start() marked the folder unfinished: old checkpoints go only once it is
        ckpt.clear()

    warnings: list[str] = []  # metrics.json `warnings`: each finding once, with the step it was first seen
    # Early evaluations are often one-class (a healthy tiny NER run tagged all-O for its first quarter): a finding counts
    # when two evaluations in a row in the second half of training show it, or when the weights the run ends with do.
    collapse_from = max(int(t.warmup_ratio * total_steps), total_steps // 2)
    findings: dict[str, list[str]] = {}  # task -> findings of its latest validation evaluation

    def evaluate_split(n: str, k: Task, loader, split: str) -> dict:
        c = collect(views[n], loader, k.head, accelerator, desc=f"{n} {split}" if multi else split)
        result = score(c, k.head, k.labels, k.recipe.task)
        if not multi:  # generated-text metrics (causal LM): batched generation with the adapter in place
            result.update(generated_text_metrics(accelerator.unwrap_model(model), tokenizer, k.recipe.task, k.generation.get(split)))
        if split == "validation":
            findings[n] = collapse.findings(k.head, c.preds, c.refs, result, k.labels)
        return result

    def check_collapse(at: int, previous: dict[str, list[str]], at_end: bool) -> None:
        for n, found in findings.items():
            seen = found if at_end else [f for f in found if f in previous.get(n, ())] if at >= collapse_from else []
            report_collapse(at, f"task {n}: " if multi else "", seen)

    def report_collapse(at: int, prefix: str, found: list[str]) -> None:
        new = [f for f in found if not any(w.endswith(prefix + f) for w in warnings)]
        if not new:
            return
        msg = collapse.message(at, [prefix + f for f in new])
        warnings.extend(f"step {at}: {prefix}{f}" for f in new)
        if accelerator.is_main_process:
            writer.log(dict(event="warning", step=at, kind="collapse", message=msg))
            console.echo(f"adapterkit: warning: {msg}", err=True)
        if t.on_collapse == "stop":
            if accelerator.is_main_process:
                writer.log(dict(event="stopped", step=at, reason="collapsed"))
            raise Collapsed(msg)

    def evaluate_all() -> dict[str, dict]:
        return {n: evaluate_split(n, k, k.eval_loader, "validation") for n, k in tasks.items() if k.eval_loader is not None}

    def log_evals(results: dict[str, dict], step: int, **extra) -> None:
        if not accelerator.is_main_process:
            return
        for n, result in results.items():  # the text report goes to metrics.json only
            writer.log(dict(event="eval", **({"task": n} if multi else {}), split="validation", step=step, **extra,
                            **{k: v for k, v in result.items() if k != "report"}))

    # PEFT's AdaLoRA reallocates ranks during training from each step's gradients (its own training-loop hook).
    allocate = getattr(getattr(accelerator.unwrap_model(model), "base_model", None), "update_and_allocate", None)
    model.train()
    step, seen, windows = pos.step, pos.seen, {n: list(pos.windows.get(n, (0.0, 0))) for n in tasks}
    best, best_step, bad_evals = pos.best, pos.best_step, pos.bad_evals
    last_eval = None  # (step, results) of the latest evaluation: the final one reuses it when the weights are the same
    t0 = time.perf_counter() - pos.elapsed_s
    eval_s = pos.eval_s  # evaluation time is kept out of the training throughput
    counts = {n: pos.batches.get(n, 0) for n in tasks}
    bar = progress(total=total_steps, initial=step, desc="train", disable=not accelerator.is_main_process)
    stop = step >= total_steps

    def position() -> checkpoint.Position:
        return checkpoint.Position(step=step, seen=seen, best=best, best_step=best_step, bad_evals=bad_evals, windows=windows,
                                   batches=dict(counts), elapsed_s=time.perf_counter() - t0, eval_s=eval_s)

    timings.lap("set-up")
    stop_request.armed = True  # from here a signal waits for the end of the step
    while not stop:
        name = job.sampler.next() if job.sampler is not None else "main"
        task = tasks[name]
        batch = task.stream.next()
        if task.adapter:
            multitask.set_adapter(model, task.adapter)
        with accelerator.accumulate(model):
            raw, _ = switches.training_loss(task.recipe, model, batch, job.forward_task(name))
            loss = raw * task.weight if task.weight != 1.0 else raw
            finite = guard.loss(loss)
            accelerator.backward(loss)  # also when not finite: every DDP process must reach the gradient all-reduce
            grad_norm = None
            if accelerator.sync_gradients and (t.max_grad_norm or accelerator.scaler is None):
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf)
            if not accelerator.sync_gradients or guard.step_ok(grad_norm, step + 1):
                optimizer.step()
                if allocate is not None and accelerator.sync_gradients:
                    allocate(step + 1)  # AdaLoRA: rank budget from this step's gradients, before they are cleared
            scheduler.step()  # also on a skipped step, as with AMP's skipped steps: the schedule follows the step count
            optimizer.zero_grad(set_to_none=True)
        if finite:
            windows[name][0] += raw.detach().float().item()
            windows[name][1] += 1
        counts[name] += 1
        seen += switches.batch_examples(batch) * n_proc
        if not accelerator.sync_gradients:
            continue
        step += 1
        bar.update(1)
        if step % t.log_every == 0 or step == total_steps:
            record = dict(step=step) if multi else dict(step=step, epoch=round(seen / (len(tasks["main"].splits["train"]) or 1), 4))
            for n, (total, count) in windows.items():
                if multi and not count:
                    continue
                # Every rank trained the same tasks (same seeded order): reduce each task's mean loss.
                mean = accelerator.reduce(torch.tensor(total / max(count, 1), device=accelerator.device), "mean").item()
                if not math.isfinite(mean):
                    if accelerator.is_main_process:
                        writer.log(dict(event="stopped", step=step, reason="non-finite loss"))
                    of = f" of task {n}" if multi else ""
                    raise FloatingPointError(f"training loss{of} is {mean} at step {step}: lower training.lr or check the data")
                record[f"loss/{n}" if multi else "loss"] = round(mean, 6)
                bar.set_postfix(loss=f"{mean:.4f}")
            record.update(lr=scheduler.get_last_lr()[0], examples_per_s=round(seen / max(time.perf_counter() - t0 - eval_s, 1e-9), 2))
            if accelerator.is_main_process:
                writer.log(record)
            windows = {n: [0.0, 0] for n in tasks}
        at_epoch_end = step % steps_per_epoch == 0
        if eval_dls and ((t.eval_every and step % t.eval_every == 0) or (not t.eval_every and at_epoch_end) or step == total_steps):
            e0 = time.perf_counter()
            previous = dict(findings)
            results = evaluate_all()
            last_eval = (step, results)
            eval_s += time.perf_counter() - e0
            value = selection(results, es.metric, multi)
            improved = best is None or (value < best if lower else value > best)
            if improved:
                best, best_step, bad_evals = value, step, 0
                unwrapped = accelerator.unwrap_model(model)
                best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items() if k in trained_keys}
            else:
                bad_evals += 1
            log_evals(results, step, best=improved)
            if on_eval is not None:
                try:
                    on_eval(step, value)
                except Exception as e:  # the caller stopped the run (a search's pruner): not a failure
                    if accelerator.is_main_process:
                        writer.log(dict(event="stopped", step=step, reason=str(e)[:200] or type(e).__name__))
                        writer.set_status("stopped", step=step)
                    raise
            check_collapse(step, previous, at_end=step >= total_steps and best_step == step)
            if es.patience and bad_evals >= es.patience:
                if accelerator.is_main_process:
                    writer.log(dict(event="early_stop", step=step, best_step=best_step))
                stop = True
        saved = t.checkpoint_every and step % t.checkpoint_every == 0 and step < total_steps and not stop
        if saved:
            ckpt.save(position(), best_state)
        if step >= total_steps:
            stop = True
        signum = None if stop else stop_request.poll(accelerator)
        if signum is not None:
            stop_request.armed = False
            bar.close()
            _interrupt(signum, step, total_steps, None if saved else ckpt.save(position(), best_state), ckpt, writer, accelerator)
    stop_request.armed = False
    bar.close()
    train_s = max(time.perf_counter() - t0 - eval_s, 1e-9)
    timings.lap("training", train_s - pos.elapsed_s + pos.eval_s)
    timings.lap("evaluations during training", eval_s - pos.eval_s)
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None and best_step != step:
        unwrapped.load_state_dict(best_state, strict=False)
    results = {}
    for n, k in tasks.items():
        res = {}
        if k.eval_loader is not None:
            same = last_eval is not None and last_eval[0] == step and best_step == step and n in last_eval[1]
            res["validation"] = last_eval[1][n] if same else evaluate_split(n, k, k.eval_loader, "validation")
        if "test" in k.splits:
            test_dl = accelerator.prepare(data_mod.dataloader(k.splits["test"], tokenizer, t.eval_batch_size, False, t.seed, False,
                                                              by_length=True))
            res["test"] = evaluate_split(n, k, test_dl, "test")
        results[n] = res
    if eval_dls:
        check_collapse(best_step or step, {}, at_end=True)  # the weights the run ends with
    train_info = dict(steps=step, examples=seen, seconds=round(train_s, 2), examples_per_s=round(seen / train_s, 2),
                      best_step=best_step, trainable_params=n_train)
    if multi:
        final = {"tasks": {n: dict(res, train=dict(batches=counts[n] * n_proc)) for n, res in results.items()},
                 "train": dict(train_info, batches_per_task={n: c * n_proc for n, c in counts.items()})}
        final["summary"] = {n: {k.metric: results[n].get("validation", {}).get(k.metric)} for n, k in tasks.items()}
        log_evals({n: res["validation"] for n, res in results.items() if "validation" in res}, step)
    else:
        final = dict(results["main"], train=train_info)
        final["selection"] = _selection(results["main"], es.metric, best_step, step, bool(eval_dls) and best_state is not None)
    if warnings:
        final["warnings"] = list(warnings)
    timings.lap("final evaluation")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if multi:
            _write_task_runs(job, unwrapped, final, tokenizer, run_dir, total_steps, n_train)
        else:
            writer.save_weights(unwrapped, job.head_modules)
        checkpoint.pause_for_tests("final")
        writer.finish(dict(final, timings=timings.total()))
        timings.lap("saving")
        tracking.log_final(accelerator, final, step)
        for k in tasks.values() if multi else ():
            write_report_safely(k.recipe.training.output_dir)
        write_report_safely(run_dir)
        timings.lap("report")
        final.update(timings=timings.total(), peak_rss_mib=timings.peaks)
        writer.write_json("metrics.json", final)  # again, with the report's time and the memory peaks
        writer.log(dict(event="timings", **final["timings"], peak_rss_mib=timings.peaks))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _selection(result: dict, metric: str, best_step: int | None, step: int, selected: bool) -> dict:
    """Which weights the final metrics come from and which split is the honest headline: a split that chose the
    checkpoint reports an optimistic number, so the held-out test split heads the run when there is one."""
    chosen = selected and best_step is not None and best_step != step
    out = dict(weights=f"best step {best_step}" if chosen else f"final (step {step})", chosen_on="validation" if chosen else None)
    split = "test" if "test" in result else ("validation" if "validation" in result else None)
    if split is not None and metric in result[split]:
        out["headline"] = dict(split=split, metric=metric, value=result[split][metric])
        if split == "validation" and chosen:
            out["headline"]["note"] = "validation chose these weights: optimistic; add data.test for a held-out number"
    return out


def _fresh_state_for(precision: str) -> None:
    """Accelerate keeps one process-wide state and refuses a second Accelerator with another mixed precision; a
    single-process run (a notebook, a search, tests) training recipes of different precisions starts it afresh."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != precision and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state()


def _interrupt(signum: int, step: int, total: int, saved, ckpt, writer: RunWriter, accelerator) -> None:
    """The loop was asked to stop: the checkpoint of this step is written; mark the run and say how to go on."""
    where = saved or checkpoint.list_checkpoints(ckpt.root.parent)[-1]
    name = signal.Signals(signum).name
    if accelerator.is_main_process:
        writer.log(dict(event="interrupted", signal=name, step=step, checkpoint=str(where)))
        writer.set_status("interrupted", signal=name, step=step)
    accelerator.end_training()
    raise Interrupted(f"interrupted by {name} at step {step} of {total}; checkpoint {where}; continue with the same "
                      f"command and --resume", signum)


def _write_task_runs(job: Job, joint, final: dict, tokenizer, run_dir: Path, total_steps: int, n_train: int) -> None:
    """Every task of a multi-task run as an ordinary run directory: a fresh single-task model holding its trained
    adapter and head, its share of the log, and its own metrics."""
    for n, k in job.tasks.items():
        fresh, hm = multitask.export_task(joint, n, job.joint.adapters[n], k.recipe, k.labels, tokenizer=tokenizer)
        task_dir = Path(k.recipe.training.output_dir)
        writer = RunWriter(task_dir, k.recipe)
        writer.check_writable()
        writer.start(tokenizer, k.labels, dict(trainable_params=n_train, total_steps=total_steps, head_modules=hm, joint_run=str(run_dir)))
        writer.save_weights(fresh, hm)
        if k.holdout:
            writer.write_json("data_split.json", k.holdout)
        task_final = {s: v for s, v in final["tasks"][n].items() if s != "train"}
        task_final["train"] = dict(final["train"], batches=final["tasks"][n]["train"]["batches"])
        writer.finish(task_final)
        del fresh
        multitask.write_task_log(run_dir / "log.jsonl", task_dir / "log.jsonl", n)


def _trainable_keys(model) -> set[str]:
    return {k for k, p in model.named_parameters() if p.requires_grad}
