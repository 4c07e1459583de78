"""The training loop, on Accelerate, for single-task and multi-task recipes alike: mixed precision, gradient
accumulation, warmup + schedule, periodic evaluation, early stopping, best-checkpoint selection, resumable
checkpoints, the non-finite guard, trackers, the speed switches and a JSON-lines log. Runs unchanged under
`accelerate launch` with several processes (logging and saving happen on the main process only).

It reads as phases: `setup` (accelerator, tokenizer, data, model, optimiser, resume, the run folder) -> `train_step`
(one micro-batch; an optimiser update once gradients are accumulated) -> `log_step` and `evaluate_and_select` ->
`finish` (the selected weights, final evaluation, run files, report). A single-task recipe is a one-task job; how
tasks sit on the model and in the run folder is the job's layout (layout.py), and a `TaskSampler` chooses which
task's next batch each step of a multi-task job trains on.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import console, environment
from .. import data as data_mod
from ..adapters import METHODS, method_settings
from ..adapters.lora import residual_init
from ..config import Recipe
from ..data.audit import audit
from ..data.audit import to_dict as audit_dict
from ..data.loaders import length_order
from ..errors import AdapterkitError, Collapsed, Interrupted
from ..files import atomic_write_text
from ..heads import HEADS, Head
from ..model import trainable_parameters, warmstart
from ..model.backbone import deepspeed_launch, load_tokenizer, pin_revision
from ..progress import progress, progress_lines, stage  # bars quiet in non-interactive logs; see progress.py
from ..runs import RunWriter, write_report_safely
from ..runs.lock import locked
from ..scoring import collect, generate_and_score, lower_is_better, score
from ..scoring.precision import cpu_has_bf16, mixed_precision  # noqa: F401  (cpu_has_bf16: re-exported)
from . import checkpoint, collapse, distributed, fsdp, multitask, recovery, switches, tracking
from .interrupt import StopRequest
from .layout import SingleTask, layout, selection  # noqa: F401  (selection: re-exported for tuning)
from .nonfinite import NonFiniteGuard


def param_groups(model, recipe: Recipe, head_modules):
    """AdamW groups: no decay on biases and norms; the head may have its own learning rate; with LoRA+
    (`adapter.loraplus_lr_ratio`) the B matrices learn at that multiple of training.lr. The same rule as PEFT's
    create_loraplus_optimizer, kept in these groups so the head's rate and the no-decay groups stay."""
    t = recipe.training
    plus = getattr(method_settings(recipe.adapter), "loraplus_lr_ratio", None)
    groups: dict[tuple, dict] = {}
    lr_base = float(t.lr or 0.0)  # filled from the method's default when the recipe leaves it out
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = any(f".{h}." in f".{name}" or name.startswith(f"{h}.") for h in head_modules)
        decay = p.ndim >= 2 and "norm" not in name.lower()
        is_b = bool(plus) and not is_head and ".lora_B." in name
        key = (is_head, decay, is_b)
        lr = (t.head_lr or lr_base) if is_head else lr_base * (float(plus or 1.0) if is_b else 1.0)
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": t.weight_decay if decay else 0.0})[
            "params"
        ].append(p)
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
    adapter: str | None = None  # the PEFT adapter to activate for this task (multi-task, per-task adapters)
    eval_loader: Any = None
    stream: checkpoint.Stream | None = None
    metric: str | None = None  # headline validation metric (multi-task summary)
    holdout: dict | None = None  # data.validation_split: which training rows went where
    generation: dict = field(default_factory=dict)  # split -> (prompt ids, references) for generated-text metrics
    class_weights: Any = None  # tensor of per-class training-loss weights (Head.class_weights), or None: plain


@dataclass
class Job:
    """What the loop trains: the model, its head modules (paths in the model) and the tasks feeding it."""

    model: Any
    head_modules: list[str]
    tasks: dict[str, Task]
    sampler: multitask.TaskSampler | None = None
    joint: multitask.JointModel | None = None
    info: dict = field(default_factory=dict)


def _prepare_tasks(lay: SingleTask, tokenizer) -> dict[str, Task]:
    tasks = {}
    for name, tr in lay.task_recipes().items():
        head = HEADS[tr.recipe.task.type]
        data = data_mod.prepare(tr.recipe, tokenizer, head)
        weights = head.class_weights(tr.recipe.task, data.labels, data.splits["train"]) if head.class_weights else None
        weights = torch.tensor(weights, dtype=torch.float32) if weights else None  # once, not at every step
        tasks[name] = Task(
            name,
            tr.recipe,
            head,
            data.labels,
            data.splits,
            tr.weight,
            metric=tr.metric,
            holdout=data.holdout,
            generation=data.generation,
            class_weights=weights,
        )
    return tasks


def _build_job(lay: SingleTask, tasks: dict[str, Task], device, tokenizer) -> Job:
    model, head_modules, adapters, joint, info = lay.build(tasks, device, tokenizer)
    for n, k in tasks.items():
        k.adapter = adapters[n]
    return Job(model, head_modules, tasks, joint=joint, info=info)


def train(
    recipe: Recipe,
    run_dir: Path | None = None,
    resume: str | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    started: float | None = None,
) -> dict:
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
            tracking.abandon(interrupted=True)
            raise
        except BaseException as e:
            # a search's pruner stops a trial by raising through on_eval: stopped, not failed
            tracking.abandon(interrupted=isinstance(e, KeyboardInterrupt) or type(e).__name__ == "TrialPruned")
            lost = distributed.peer_failure(e, run_dir)
            if lost is not None:  # the process that died says why; this one says only where to resume from
                if writer.info is not None:  # the main process (the others never started the folder)
                    writer.log(dict(event="error", error=str(lost), traceback=traceback.format_exc()))
                    if writer.info.get("status") == "running":
                        writer.set_status("failed", error=str(lost))
                raise lost from None
            if (
                writer.info is not None and writer.info.get("status") == "running"
            ):  # the run started: say why it stopped
                reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {str(e)[:500]}"
                if not isinstance(
                    e, (AdapterkitError, FloatingPointError, KeyboardInterrupt)
                ):  # those already said why
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


@dataclass
class Session:
    """What set-up built and every later phase reads."""

    recipe: Recipe
    run_dir: Path
    writer: RunWriter
    layout: SingleTask
    accelerator: Any
    tokenizer: Any
    job: Job
    model: Any  # as Accelerate prepared it
    optimizer: Any
    scheduler: Any
    views: dict  # task -> what evaluation calls (the model, or the task's view of the joint model)
    ckpt: checkpoint.Checkpointer
    guard: NonFiniteGuard
    total_steps: int
    steps_per_epoch: int
    n_train: int
    n_total: int
    trained_keys: set
    has_eval: bool
    sizes: dict  # task -> training batches per epoch
    allocate: Callable | None = None  # PEFT's AdaLoRA rank reallocation, run after each optimizer step
    generations: dict = field(default_factory=dict)  # (task, split) -> (rows, texts) of its latest evaluation
    predictions: dict = field(default_factory=dict)  # (task, "test") -> (preds, refs) of the final test pass

    @property
    def tasks(self) -> dict[str, Task]:
        return self.job.tasks

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class Evaluation:
    """One validation evaluation: the final results reuse the one that scored the weights a run ends with."""

    step: int
    results: dict  # task -> metrics
    findings: dict  # task -> collapse findings
    generations: dict  # (task, "validation") -> (rows, texts)


@dataclass
class State:
    """Where training stands: what a checkpoint saves, plus the best weights and the latest evaluation."""

    step: int
    seen: int
    windows: dict  # task -> [sum of finite losses, count] since the last log step
    best: float | None
    best_step: int | None
    bad_evals: int
    counts: dict  # task -> micro-batches trained
    t0: float
    eval_s: float  # evaluation time, kept out of the training throughput
    best_state: dict | None = None
    last_eval: Evaluation | None = None
    best_eval: Evaluation | None = None
    before: checkpoint.Position = field(default_factory=checkpoint.Position)  # where a resumed run started from
    best_collapsed: bool = False  # the best evaluation so far had collapse findings
    recoveries: list = field(default_factory=list)  # training.on_collapse: recover, one record each
    start_state: dict | None = None  # the trained weights before the first step, for a recovery (recover only)
    shown_at: float = 0.0  # when the last progress line was printed (no bar: stderr is not a terminal)

    @classmethod
    def start(cls, pos: checkpoint.Position, best_state, tasks) -> State:
        return cls(
            pos.step,
            pos.seen,
            {n: list(pos.windows.get(n, (0.0, 0))) for n in tasks},
            pos.best,
            pos.best_step,
            pos.bad_evals,
            {n: pos.batches.get(n, 0) for n in tasks},
            time.perf_counter() - pos.elapsed_s,
            pos.eval_s,
            best_state,
            before=pos,
            best_collapsed=pos.best_collapsed,
            recoveries=list(pos.recoveries),
        )

    def position(self) -> checkpoint.Position:
        return checkpoint.Position(
            step=self.step,
            seen=self.seen,
            best=self.best,
            best_step=self.best_step,
            bad_evals=self.bad_evals,
            windows=self.windows,
            batches=dict(self.counts),
            elapsed_s=time.perf_counter() - self.t0,
            eval_s=self.eval_s,
            best_collapsed=self.best_collapsed,
            recoveries=list(self.recoveries),
        )


@dataclass
class Monitor:
    """Degenerate predictions: each validation evaluation's findings per task, and the warnings they became
    (metrics.json `warnings`, each finding once, with the step it was first seen)."""

    collapse_from: int
    warnings: list = field(default_factory=list)
    findings: dict = field(default_factory=dict)  # task -> findings of its latest validation evaluation
    since: int = 0  # warnings before this index came before the latest recovery: a finding after it is new again

    @classmethod
    def for_run(cls, t, total_steps: int) -> Monitor:
        # Early evaluations are often one-class (a healthy tiny NER run tagged all-O for its first quarter): a finding
        # counts when two evaluations in a row in the second half of training show it, or when the final weights do.
        return cls(max(int(t.warmup_ratio * total_steps), total_steps // 2))


def _train(
    recipe: Recipe,
    run_dir: Path,
    writer: RunWriter,
    resume: str | None,
    on_eval,
    stop_request: StopRequest,
    timings: Timings,
) -> dict:
    s, state = setup(recipe, run_dir, writer, resume, timings)
    monitor = Monitor.for_run(recipe.training, s.total_steps)
    _train_until_done(s, state, monitor, on_eval, stop_request, timings)
    return finish(s, state, monitor, timings)


# --- set-up: accelerator, tokenizer, data, model, optimiser, resume, the run folder ---------------------------------


def setup(
    recipe: Recipe, run_dir: Path, writer: RunWriter, resume: str | None, timings: Timings
) -> tuple[Session, State]:
    from accelerate.utils import set_seed

    t = recipe.training
    lay = layout(recipe)
    resume_from = checkpoint.check_output_dir(recipe.training, resume, run_dir)
    switches.check(recipe, [tr.recipe.task.type for tr in lay.task_recipes().values()])
    lay.check()
    fsdp.check(recipe)
    distributed.check(recipe, resume_from)
    accelerator = _accelerator(recipe, lay, run_dir)
    backbone = pin_revision(recipe.backbone)  # a Hub id: this run, its eval and its export read the same commit
    tracking.start(accelerator, recipe, writer, run_dir)
    set_seed(t.seed)
    tokenizer = load_tokenizer(recipe.backbone)
    timings.lap("set-up")
    with stage("reading and tokenizing data"):
        tasks = _prepare_tasks(lay, tokenizer)
    timings.lap("reading and tokenizing data")
    source = _warm_start_source(recipe, lay, tasks)
    set_seed(t.seed)
    with stage("loading backbone and adapter"):
        job = _build_job(lay, tasks, accelerator.device if accelerator.device.type == "cuda" else None, tokenizer)
    timings.lap("loading the model")
    if source is not None:
        job.info["init_from"] = warmstart.apply(job.model, source, tasks["main"].labels)
    weighted = {
        n: dict(zip(k.labels or [], (round(w, 4) for w in k.class_weights.tolist())))
        for n, k in tasks.items()
        if k.class_weights is not None
    }
    if weighted:  # e.g. task.o_weight: auto on a sparse-entity set
        job.info["class_weights"] = weighted
    if residual_init(method_settings(recipe.adapter)) and accelerator.is_main_process:
        writer.save_initial_adapter(job.model)
    batch = checkpoint.elastic_batch_size(resume_from, t.batch_size, accelerator.num_processes, len(tasks))
    s = _optimization(recipe, lay, run_dir, writer, accelerator, tokenizer, job, batch)
    start = recovery.start_weights(s)  # before a resume loads its weights: a resumed run recovers to the same start
    pos, best_state = checkpoint.Position(), None
    if resume_from is not None:
        pos, best_state = s.ckpt.load(resume_from)
    if s.main:
        _start_run_folder(s, backbone, resume_from, pos)
    if resume_from is None:  # after start() marked the folder unfinished: old checkpoints go only once it is
        s.ckpt.clear()
    state = State.start(pos, best_state, tasks)
    state.start_state = start
    return s, state


def _accelerator(recipe: Recipe, lay: SingleTask, run_dir: Path):
    from accelerate import Accelerator

    t = recipe.training
    _fresh_state_for(mixed_precision(t.mixed_precision))
    accelerator = Accelerator(
        mixed_precision=mixed_precision(t.mixed_precision),
        gradient_accumulation_steps=t.gradient_accumulation,
        **tracking.accelerator_kwargs(recipe, run_dir),
        **distributed.accelerator_kwargs(find_unused_parameters=lay.find_unused_parameters),
        **switches.accelerator_kwargs(recipe.training),
    )
    fsdp.enable_on_cpu(accelerator)
    distributed.configure_deepspeed(accelerator, t)
    return accelerator


def _warm_start_source(recipe: Recipe, lay: SingleTask, tasks: dict[str, Task]):
    """adapter.init_from, checked before any model loads: a head fits only its own classes."""
    if not recipe.adapter.init_from:
        return None  # a multi-task recipe with init_from was refused by its layout's check
    source = warmstart.resolve(recipe.adapter.init_from)
    warmstart.check_labels(source, tasks["main"].labels, recipe.task.labels is not None)
    return source


def _loaders(t, tasks: dict[str, Task], tokenizer, n_proc: int, batch: int) -> tuple[dict, dict]:
    """Each task's training loader (shuffled, length-grouped, split across processes; `batch` examples per process)
    and validation loader."""
    train_dls = {
        n: data_mod.dataloader(
            k.splits["train"],
            tokenizer,
            batch,
            True,
            t.seed,
            t.group_by_length,
            n_proc,
            collate_fn=switches.train_collator(k.recipe, tokenizer),
        )
        for n, k in tasks.items()
    }
    eval_dls = {
        n: data_mod.dataloader(
            k.splits["validation"], tokenizer, t.eval_batch_size, False, t.seed, False, by_length=True
        )
        for n, k in tasks.items()
        if "validation" in k.splits
    }
    return train_dls, eval_dls


def _optimization(
    recipe: Recipe, lay: SingleTask, run_dir: Path, writer: RunWriter, accelerator, tokenizer, job: Job, batch: int
) -> Session:
    """Data loaders, optimiser and schedule, prepared by Accelerate; the checkpointer and the non-finite guard."""
    from transformers import get_scheduler

    t, tasks, model = recipe.training, job.tasks, job.model
    n_train, n_total = trainable_parameters(model)
    trained_keys = _trainable_keys(model)  # fixed now: per-task adapters switch requires_grad as training goes
    for task in tasks.values():
        switches.prepare_model(task.recipe.training, model)
    n_proc = accelerator.num_processes
    train_dls, eval_dls = _loaders(t, tasks, tokenizer, n_proc, batch)
    sizes = {n: len(dl) for n, dl in train_dls.items()}  # batches per epoch of each task
    steps_per_epoch = math.ceil(sum(sizes.values()) / (t.gradient_accumulation * n_proc))
    total_steps = t.max_steps or max(1, math.ceil(steps_per_epoch * t.epochs))
    optimizer = torch.optim.AdamW(param_groups(model, recipe, job.head_modules), lr=t.lr)
    # Accelerate's prepared scheduler steps once per process per optimizer step: count the schedule in those units.
    scheduler = get_scheduler(
        t.scheduler,
        optimizer,
        num_warmup_steps=int((t.warmup_ratio or 0.0) * total_steps) * n_proc,
        num_training_steps=total_steps * n_proc,
    )
    fsdp.wrap_blocks_only(accelerator, model)
    model, optimizer, scheduler, train_dls = lay.prepare(accelerator, model, optimizer, scheduler, train_dls)
    job.sampler = lay.sampler(sizes, t.seed)
    for n, k in tasks.items():
        k.stream = checkpoint.Stream(train_dls[n])
        k.eval_loader = accelerator.prepare(eval_dls[n]) if n in eval_dls else None
    ckpt = checkpoint.Checkpointer(
        run_dir,
        accelerator,
        model,
        optimizer,
        scheduler,
        {n: k.stream for n, k in tasks.items() if k.stream is not None},
        job.sampler,
        t.keep_checkpoints,
        trained_keys,
        checkpoint.settings(recipe),
        batch,
    )
    guard = NonFiniteGuard(t.on_nonfinite, accelerator, writer, run_dir)
    return Session(
        recipe,
        run_dir,
        writer,
        lay,
        accelerator,
        tokenizer,
        job,
        model,
        optimizer,
        scheduler,
        {n: lay.view(model, n, k.adapter) for n, k in tasks.items()},
        ckpt,
        guard,
        total_steps,
        steps_per_epoch,
        n_train,
        n_total,
        trained_keys,
        bool(eval_dls),
        sizes,
    )


def _start_run_folder(s: Session, backbone: dict | None, resume_from, pos: checkpoint.Position) -> None:
    """run.json (status running), labels, tokenizer, the data audit and the first log records."""
    lay, tasks, writer = s.layout, s.tasks, s.writer
    sizes, n_train, n_total = s.sizes, s.n_train, s.n_total
    info = dict(
        trainable_params=n_train,
        total_params=n_total,
        total_steps=s.total_steps,
        backbone=backbone,
        environment=environment.record(),
        **s.job.info,
        **lay.start_info(sizes),
    )
    writer.start(s.tokenizer, lay.keyed({n: k.labels for n, k in tasks.items()}), info, resume=resume_from is not None)
    # The data as read: rows, duplicates, labels, overlaps between splits. Token lengths need a second, untruncated
    # tokenization (it tripled the start-up of small runs): `adapterkit data check` reports them.
    audits = {n: audit(k.recipe, s.tokenizer, lengths=False) for n, k in tasks.items()}
    writer.write_json("data_audit.json", lay.keyed({n: audit_dict(a) for n, a in audits.items()}))
    writer.log(
        dict(
            event="data_audit",
            rows={n: {sp: sa.rows for sp, sa in a.splits.items()} for n, a in audits.items()},
            truncated={n: {sp: sa.truncated for sp, sa in a.splits.items()} for n, a in audits.items()},
            warnings=[w for a in audits.values() for w in a.warnings],
        )
    )
    holdouts = {n: k.holdout for n, k in tasks.items() if k.holdout}
    if holdouts:
        writer.write_json("data_split.json", lay.keyed(holdouts))
    if resume_from is not None:
        # processes and batch_size (per process) differ from the writing launch's after an elastic resume
        writer.log(
            dict(
                event="resume",
                checkpoint=str(resume_from),
                step=pos.step,
                processes=s.accelerator.num_processes,
                batch_size=s.ckpt.batch_size,
            )
        )
    writer.log(
        dict(
            event="start",
            trainable_params=n_train,
            total_params=n_total,
            trainable_share=round(n_train / n_total, 6),
            total_steps=s.total_steps,
            processes=s.accelerator.num_processes,
            distributed=s.accelerator.distributed_type.value,
            **lay.start_record(sizes),
        )
    )


# --- the loop: step, log, evaluate and select, checkpoint --------------------------------------------------------


def _train_until_done(
    s: Session, state: State, monitor: Monitor, on_eval, stop_request: StopRequest, timings: Timings
) -> None:
    s.allocate = getattr(getattr(s.accelerator.unwrap_model(s.model), "base_model", None), "update_and_allocate", None)
    s.model.train()
    bar = progress(total=s.total_steps, initial=state.step, desc="train", disable=not s.main)
    stop = state.step >= s.total_steps
    timings.lap("set-up")
    stop_request.armed = True  # from here a signal waits for the end of the step
    while not stop:
        name = s.job.sampler.next() if s.job.sampler is not None else "main"
        if not train_step(s, state, name):
            continue  # gradients still accumulating
        bar.update(1)
        if state.step % s.recipe.training.log_every == 0 or state.step == s.total_steps:
            log_step(s, state, bar)
        stop = _evaluate_if_due(s, state, monitor, on_eval)
        saved = _checkpoint_if_due(s, state, stop)
        stop = stop or state.step >= s.total_steps
        signum = None if stop else stop_request.poll(s.accelerator)
        if signum is not None:
            stop_request.armed = False
            bar.close()
            _interrupt(
                signum,
                state.step,
                s.total_steps,
                # DeepSpeed: no checkpoint can hold ZeRO's split optimizer state (distributed.check refused them)
                None if saved or deepspeed_launch() else s.ckpt.save(state.position(), state.best_state),
                s.ckpt,
                s.writer,
                s.accelerator,
            )
    stop_request.armed = False
    bar.close()


def train_step(s: Session, state: State, name: str) -> bool:
    """One micro-batch of task `name`: forward, backward and, once the gradients are accumulated, the optimiser and
    schedule step. True when an optimiser step completed (`state.step` counts it)."""
    t, acc, task = s.recipe.training, s.accelerator, s.tasks[name]
    assert task.stream is not None, "setup gives every task its stream"
    batch = task.stream.next()
    if task.adapter:
        multitask.set_adapter(s.model, task.adapter)
    with acc.accumulate(s.model):
        raw, _ = switches.training_loss(task.recipe, s.model, batch, s.layout.forward_task(name), task.class_weights)
        loss = raw * task.weight if task.weight != 1.0 else raw
        finite = s.guard.loss(loss)
        acc.backward(loss)  # also when not finite: every DDP process must reach the gradient all-reduce
        grad_norm = None
        if acc.sync_gradients and (t.max_grad_norm or acc.scaler is None):
            grad_norm = acc.clip_grad_norm_(s.model.parameters(), t.max_grad_norm or math.inf)
        if not acc.sync_gradients or s.guard.step_ok(grad_norm, state.step + 1):
            s.optimizer.step()
            if s.allocate is not None and acc.sync_gradients:
                s.allocate(state.step + 1)  # AdaLoRA: rank budget from this step's gradients, before they are cleared
        s.scheduler.step()  # also on a skipped step, as with AMP's skipped steps: the schedule follows the step count
        s.optimizer.zero_grad(set_to_none=True)
    if finite:
        state.windows[name][0] += raw.detach().float().item()
        state.windows[name][1] += 1
    state.counts[name] += 1
    state.seen += switches.batch_examples(batch) * acc.num_processes
    if not acc.sync_gradients:
        return False
    state.step += 1
    return True


def log_step(s: Session, state: State, bar=None) -> None:
    """The mean training loss of each task since the last log step (reduced over processes), lr and throughput."""
    acc, lay = s.accelerator, s.layout
    record = lay.step_record(state.step, state.seen, s.tasks)
    for n, (total, count) in state.windows.items():
        if not count and not lay.logs_empty_windows:
            continue
        # Every rank trained the same tasks (same seeded order): reduce each task's mean loss.
        mean = acc.reduce(torch.tensor(total / max(count, 1), device=acc.device), "mean").item()
        if not math.isfinite(mean):
            if s.main:
                s.writer.log(dict(event="stopped", step=state.step, reason="non-finite loss"))
            raise FloatingPointError(
                f"training loss{lay.prefix(n, ' of task {}')} is {mean} at step {state.step}: lower "
                f"training.lr or check the data"
            )
        record[lay.loss_key(n)] = round(mean, 6)
        if bar is not None:
            bar.set_postfix(loss=f"{mean:.4f}")
    record.update(
        lr=s.scheduler.get_last_lr()[0],
        examples_per_s=round(state.seen / max(time.perf_counter() - state.t0 - state.eval_s, 1e-9), 2),
    )
    if s.main:
        s.writer.log(record)
        if bar is not None and bar.disable:
            _progress_line(s, state, record)
    state.windows = {n: [0.0, 0] for n in s.tasks}


PROGRESS_EVERY_S = 30.0


def _progress_line(s: Session, state: State, record: dict) -> None:
    """Where no bar shows (stderr is a file or a pipe), a line every 30 s: step, loss, speed and the time left at the
    speed of the steps so far (evaluations add to it)."""
    now = time.perf_counter()
    if now - max(state.shown_at, state.t0) < PROGRESS_EVERY_S or not progress_lines():
        return
    state.shown_at = now
    done = state.step - state.before.step
    train_s = now - state.t0 - state.eval_s - (state.before.elapsed_s - state.before.eval_s)
    left = (s.total_steps - state.step) * train_s / max(done, 1)
    losses = "".join(f" {k} {v:.4f}" for k, v in record.items() if k.endswith("loss"))
    console.echo(
        f"step {state.step}/{s.total_steps} ({100 * state.step / s.total_steps:.0f}%){losses}, "
        f"{record['examples_per_s']} examples/s, about {_duration(left)} left",
        err=True,
    )


def _duration(seconds: float) -> str:
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s" if m else f"{sec} s"


def _evaluate_if_due(s: Session, state: State, monitor: Monitor, on_eval) -> bool:
    """Evaluate at eval_every (or each epoch's end) and the last step; True when early stopping ends training."""
    t = s.recipe.training
    at_epoch_end = state.step % s.steps_per_epoch == 0
    due = (
        (t.eval_every and state.step % t.eval_every == 0)
        or (not t.eval_every and at_epoch_end)
        or state.step == s.total_steps
    )
    if not s.has_eval or not due:
        return False
    return evaluate_and_select(s, state, monitor, on_eval)


def evaluate_and_select(s: Session, state: State, monitor: Monitor, on_eval) -> bool:
    """Validation of every task; keep the best weights; tell the caller's pruner; early stopping. True to stop."""
    es, acc = s.recipe.training.early_stopping, s.accelerator
    e0 = time.perf_counter()
    previous = dict(monitor.findings)
    results = {
        n: evaluate_split(s, monitor, n, k.eval_loader, "validation")
        for n, k in s.tasks.items()
        if k.eval_loader is not None
    }
    kept = {key: v for key, v in s.generations.items() if key[1] == "validation"}
    state.last_eval = Evaluation(state.step, results, dict(monitor.findings), kept)
    state.eval_s += time.perf_counter() - e0
    value = s.layout.select(results, es.metric)
    lower = lower_is_better(es.metric, es.mode)
    improved = state.best is None or (value < state.best if lower else value > state.best)
    if improved:
        state.best, state.best_step, state.bad_evals = value, state.step, 0
        state.best_collapsed = any(monitor.findings.values())
        state.best_eval = state.last_eval
        unwrapped = acc.unwrap_model(s.model)
        with distributed.gathered(unwrapped, s.trained_keys):  # ZeRO-3: whole on every rank; FSDP: each its shards
            state.best_state = fsdp.snapshot({k: v for k, v in unwrapped.state_dict().items() if k in s.trained_keys})
    else:
        state.bad_evals += 1
    _log_evals(s, results, state.step, best=improved)
    if on_eval is not None:
        try:
            on_eval(state.step, value)
        except Exception as e:  # the caller stopped the run (a search's pruner): not a failure
            if s.main:
                s.writer.log(dict(event="stopped", step=state.step, reason=str(e)[:200] or type(e).__name__))
                s.writer.set_status("stopped", step=state.step)
            raise
    _check_collapse(
        s, state, monitor, state.step, previous, at_end=state.step >= s.total_steps and state.best_step == state.step
    )
    if es.patience and state.bad_evals >= es.patience:
        if s.main:
            s.writer.log(dict(event="early_stop", step=state.step, best_step=state.best_step))
        return True
    return False


def evaluate_split(s: Session, monitor: Monitor, name: str, loader, split: str) -> dict:
    k = s.tasks[name]
    c = collect(s.views[name], loader, k.head, s.accelerator, desc=s.layout.name(name, split))
    result = score(c, k.head, k.labels, k.recipe.task)
    # Generated-text metrics (causal LM): batched generation with the task's adapter in place.
    generator = s.layout.generator(s.accelerator.unwrap_model(s.model), name, k.adapter)
    scores, texts = generate_and_score(generator, s.tokenizer, k.recipe.task, k.generation.get(split))
    result.update(scores)
    if texts is not None:
        s.generations[(name, split)] = (k.generation[split], texts)
    if split == "validation":
        monitor.findings[name] = collapse.findings(k.head, c.preds, c.refs, result, k.labels)
    elif k.head.label_kind in ("class", "tokens") and c.preds is not None and s.accelerator.num_processes == 1:
        s.predictions[(name, split)] = (c.preds, c.refs)  # one process: the loader's order maps back to the rows
    return result


def _log_evals(s: Session, results: dict[str, dict], step: int, **extra) -> None:
    if not s.main:
        return
    for n, result in results.items():  # the text report goes to metrics.json only
        s.writer.log(
            dict(
                event="eval",
                **s.layout.eval_key(n),
                split="validation",
                step=step,
                **extra,
                **{k: v for k, v in result.items() if k != "report"},
            )
        )


def _check_collapse(
    s: Session, state: State, monitor: Monitor, at: int, previous: dict[str, list[str]], at_end: bool
) -> None:
    found = []
    for n, now in monitor.findings.items():
        seen = now if at_end else [f for f in now if f in previous.get(n, ())] if at >= monitor.collapse_from else []
        found += [s.layout.prefix(n, "task {}: ") + f for f in seen]
    if not found:
        return
    mode = s.recipe.training.on_collapse
    new = [f for f in found if not any(w.endswith(f) for w in monitor.warnings[monitor.since :])]
    msg = collapse.message(at, new or found, mode)
    if new:
        monitor.warnings.extend(f"step {at}: {f}" for f in new)
        if s.main:
            s.writer.log(dict(event="warning", step=at, kind="collapse", message=msg))
            console.echo(f"adapterkit: warning: {msg}", err=True)
    if mode == "stop" and new:
        if s.main:
            s.writer.log(dict(event="stopped", step=at, reason="collapsed"))
        raise Collapsed(msg)
    if mode == "recover" and (new or at_end):
        recovery.recover_or_fail(s, state, monitor, at, msg, at_end)


def _checkpoint_if_due(s: Session, state: State, stop: bool) -> bool:
    every = s.recipe.training.checkpoint_every
    saved = bool(every and state.step % every == 0 and state.step < s.total_steps and not stop)
    if saved:
        s.ckpt.save(state.position(), state.best_state)
    return saved


# --- finish: the selected weights, final evaluation, run files, report -------------------------------------------


def finish(s: Session, state: State, monitor: Monitor, timings: Timings) -> dict:
    pos_elapsed, pos_eval = state.before.elapsed_s, state.before.eval_s
    train_s = max(time.perf_counter() - state.t0 - state.eval_s, 1e-9)
    timings.lap("training", train_s - pos_elapsed + pos_eval)
    timings.lap("evaluations during training", state.eval_s - pos_eval)
    unwrapped = s.accelerator.unwrap_model(s.model)
    if state.best_state is not None and state.best_step != state.step:
        with distributed.gathered(unwrapped, s.trained_keys, write=True):
            unwrapped.load_state_dict(state.best_state, strict=False)
    results = {n: _final_results(s, state, monitor, n, k) for n, k in s.tasks.items()}
    if s.has_eval:
        _check_collapse(s, state, monitor, state.best_step or state.step, {}, at_end=True)  # the weights it ends with
    train_info = dict(
        steps=state.step,
        examples=state.seen,
        seconds=round(train_s, 2),
        examples_per_s=round(state.seen / train_s, 2),
        best_step=state.best_step,
        trainable_params=s.n_train,
    )
    es = s.recipe.training.early_stopping
    selected = s.has_eval and state.best_state is not None
    final = s.layout.final(
        results,
        s.tasks,
        state.counts,
        s.accelerator.num_processes,
        train_info,
        lambda result: _selection(
            result, es.metric, state.best_step, state.step, selected, _generation_metrics(s.recipe)
        ),
    )
    _log_evals(s, s.layout.final_evals(results), state.step)
    if monitor.warnings:
        final["warnings"] = list(monitor.warnings)
    _majority_baseline(s, final)
    if state.recoveries:
        final["recoveries"] = list(state.recoveries)
    timings.lap("final evaluation")
    s.accelerator.wait_for_everyone()
    if fsdp.active(s.accelerator):  # every process takes part; the main one's model then saves as any other
        fsdp.gather_for_saving(unwrapped, None if METHODS[s.recipe.adapter.method].trains_base else s.trained_keys)
    saved_keys = None if METHODS[s.recipe.adapter.method].trains_base else s.trained_keys  # the base saves too
    with distributed.gathered(unwrapped, saved_keys):  # ZeRO-3: the main process writes whole weights
        if s.main:
            _write_run(s, unwrapped, final, state.step, timings)
    s.accelerator.wait_for_everyone()
    s.accelerator.end_training()
    return final


def _final_results(s: Session, state: State, monitor: Monitor, n: str, k: Task) -> dict:
    t, res = s.recipe.training, {}
    if k.eval_loader is not None:
        ends_with = state.best_step if state.best_state is not None else state.step  # finish() restored the best
        done = next(
            (e for e in (state.last_eval, state.best_eval) if e and e.step == ends_with and n in e.results), None
        )
        if done is None:
            res["validation"] = evaluate_split(s, monitor, n, k.eval_loader, "validation")
        else:  # these weights were scored at that step: the same numbers, findings and generated texts
            res["validation"] = done.results[n]
            monitor.findings[n] = done.findings.get(n, [])
            s.generations.update({key: v for key, v in done.generations.items() if key[0] == n})
    if "test" in k.splits:
        test_dl = s.accelerator.prepare(
            data_mod.dataloader(k.splits["test"], s.tokenizer, t.eval_batch_size, False, t.seed, False, by_length=True)
        )
        res["test"] = evaluate_split(s, monitor, n, test_dl, "test")
    return res


def _write_run(s: Session, model, final: dict, step: int, timings: Timings) -> None:
    others = s.layout.save(s.writer, s.job, model, final, s.tokenizer, s.total_steps, s.n_train)
    _write_generations(s)
    _write_predictions(s)
    checkpoint.pause_for_tests("final")
    s.writer.finish(dict(final, timings=timings.total()))
    timings.lap("saving")
    tracking.log_final(s.accelerator, final, step)
    for folder in others:
        write_report_safely(folder)
    write_report_safely(s.run_dir)
    timings.lap("report")
    final.update(timings=timings.total(), peak_rss_mib=timings.peaks)
    s.writer.write_json("metrics.json", final)  # again, with the report's time and the memory peaks
    s.writer.log(dict(event="timings", **final["timings"], peak_rss_mib=timings.peaks))


def _write_generations(s: Session) -> None:
    """generations/<split>.jsonl (<task>-<split>.jsonl in a multi-task run): prompt, output and references of every
    split the final weights generated for, so a person (or a diff) reads what the run wrote without generating again."""
    for (name, split), ((prompts, references), texts) in s.generations.items():
        rows = [
            dict(prompt=s.tokenizer.decode(p), output=t, references=list(r))
            for p, t, r in zip(prompts, texts, references)
        ]
        _write_jsonl(s, "generations", name, split, rows)


def _write_jsonl(s: Session, folder: str, task: str, split: str, rows: list[dict]) -> None:
    """RUN/<folder>/<split>.jsonl (<task>-<split>.jsonl for a task of a multi-task run), one row a line."""
    (s.run_dir / folder).mkdir(exist_ok=True)
    name = split if task == "main" else f"{task}-{split}"
    atomic_write_text(
        s.run_dir / folder / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )


def _write_predictions(s: Session) -> None:
    """predictions/test.jsonl (<task>-test.jsonl in a multi-task run): per test row (its number in the file), the
    gold label and the prediction of the final weights (per word for token classification), and the text."""
    for (name, split), (preds, refs) in s.predictions.items():
        k = s.tasks[name]
        ds = k.splits[split]
        ids = data_mod.column(ds, "input_ids")
        order = length_order(ds)  # the order the evaluation loader gave the predictions in
        rows: list = [None] * len(order)
        names = list(k.labels or [])
        for j, i in enumerate(order):
            row = dict(row=i + 1, text=s.tokenizer.decode(ids[i], skip_special_tokens=True))
            if k.head.label_kind == "tokens":
                keep = refs[j] != -100
                row.update(tags=_names(names, refs[j][keep]), predicted=_names(names, preds[j][keep]))
            else:
                row.update(label=_names(names, refs[j : j + 1])[0], prediction=_names(names, preds[j : j + 1])[0])
            rows[i] = row
        _write_jsonl(s, "predictions", name, split, rows)


def _names(labels: list, ids: torch.Tensor) -> list:
    return [labels[i] if 0 <= i < len(labels) else i for i in ids.tolist()]


def _selection(
    result: dict, metric: str, best_step: int | None, step: int, selected: bool, also_list: tuple = ()
) -> dict:
    """Which weights the final metrics come from and which split is the honest headline: a split that chose the
    checkpoint reports an optimistic number, so the held-out test split heads the run when there is one."""
    chosen = selected and best_step is not None and best_step != step
    out: dict[str, Any] = dict(
        weights=f"best step {best_step}" if chosen else f"final (step {step})",
        chosen_on="validation" if chosen else None,
    )
    split = "test" if "test" in result else ("validation" if "validation" in result else None)
    if split is not None and metric in result[split]:
        out["headline"] = dict(split=split, metric=metric, value=result[split][metric])
        also = {k: result[split][k] for k in also_list if k != metric and k in result[split]}
        if also:
            out["headline"]["also"] = also
        if split == "validation" and chosen:
            out["headline"]["note"] = "validation chose these weights: optimistic; add data.test for a held-out number"
    return out


def _majority_baseline(s: Session, final: dict) -> None:
    """Beside a classification headline: the accuracy of always answering the commonest training label, on the
    headline's split (what the number has to beat)."""
    sel, task = final.get("selection") or {}, s.tasks.get("main")
    h = sel.get("headline")
    if task is None or h is None or task.head.label_kind != "class" or h["split"] not in task.splits:
        return
    train, gold = (data_mod.column(task.splits[n], "labels") for n in ("train", h["split"]))
    if not train or not gold:
        return
    counts = Counter(train)
    common = min(counts, key=lambda c: (-counts[c], c))  # the commonest; ties: the lower label index
    answer = task.labels[common] if task.labels and 0 <= common < len(task.labels) else common
    sel["baseline"] = dict(answer=answer, split=h["split"], accuracy=round(gold.count(common) / len(gold), 6))


def _generation_metrics(recipe: Recipe) -> tuple:
    """The generated-text metrics a single-task recipe asks for: listed beside the headline."""
    return tuple(getattr(recipe.task, "generation_metrics", None) or ()) if recipe.tasks is None else ()


def _fresh_state_for(precision: str) -> None:
    """Accelerate keeps one process-wide state and refuses a second Accelerator with another mixed precision; a
    single-process run (a notebook, a search, tests) training recipes of different precisions starts it afresh."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != precision and distributed.world_size() == 1:
        AcceleratorState._reset_state()


def _interrupt(signum: int, step: int, total: int, saved, ckpt, writer: RunWriter, accelerator) -> None:
    """The loop was asked to stop: the checkpoint of this step is written; mark the run and say how to go on."""
    found = checkpoint.list_checkpoints(ckpt.root.parent)
    where = saved or (found[-1] if found else None)
    name = signal.Signals(signum).name
    if accelerator.is_main_process:
        writer.log(dict(event="interrupted", signal=name, step=step, checkpoint=str(where)))
        writer.set_status("interrupted", signal=name, step=step)
    accelerator.end_training()
    if where is None:  # a DeepSpeed launch writes no checkpoints
        raise Interrupted(f"interrupted by {name} at step {step} of {total}; no checkpoint (DeepSpeed)", signum)
    raise Interrupted(
        f"interrupted by {name} at step {step} of {total}; checkpoint {where}; continue with the same "
        f"command and --resume",
        signum,
    )


def _trainable_keys(model) -> set[str]:
    return {k for k, p in model.named_parameters() if p.requires_grad}
