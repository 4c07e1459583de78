"""Joint multi-task training: several tasks (each with its own data and head) over one shared backbone, with one
shared adapter or one PEFT named adapter per task.

The task models are built exactly as single-task runs build them (heads.build_task_model), then their backbone
blocks are made the same modules, so the backbone is held once and trained by every task. Each step trains one
task, chosen by `multitask.sampling`. At the end every task is written as an ordinary run directory
`<output_dir>/<task name>/` (so `adapterkit eval/predict/export` work on it), and `<output_dir>/metrics.json`
holds the metrics of all tasks.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import data as data_mod
from . import distributed
from .config import Recipe, recipe_from_dict, save_recipe
from .errors import ModelError, RecipeError
from .heads import HEADS, HeadModel, build_task_model

SHARED_ADAPTER = "default"


def task_recipe(recipe: Recipe, spec) -> Recipe:
    """The single-task recipe of one task: what its run directory records and what `load_run` rebuilds."""
    d = recipe.to_dict()
    d.pop("tasks"), d.pop("multitask")
    d["task"] = spec.task.model_dump(mode="json")
    d["data"] = spec.data.model_dump(mode="json")
    d["training"]["output_dir"] = str(Path(recipe.training.output_dir) / spec.name)
    d["training"]["overwrite"] = True  # the joint run's own check covers the task folders
    return recipe_from_dict(d, source=f"tasks[{spec.name}]")


def sampling_weights(sizes: dict[str, int], how: str, temperature: float) -> dict[str, float]:
    """Probability of each task per step (round_robin: the share of steps each task gets)."""
    if how == "round_robin":
        raw = {n: 1.0 for n in sizes}
    elif how == "temperature":
        raw = {n: s ** (1.0 / temperature) for n, s in sizes.items()}
    else:
        raw = {n: float(s) for n, s in sizes.items()}
    total = sum(raw.values())
    return {n: v / total for n, v in raw.items()}


def task_order(sizes: dict[str, int], how: str, temperature: float, seed: int):
    """Endless task sequence; the same on every process (same seed), so all ranks train the same task each step."""
    names = list(sizes)
    if how == "round_robin":
        i = 0
        while True:
            yield names[i % len(names)]
            i += 1
    w = sampling_weights(sizes, how, temperature)
    rnd = random.Random(seed)
    while True:
        yield rnd.choices(names, weights=[w[n] for n in names])[0]


class MultiTaskModel(nn.Module):
    """The task models side by side; their backbone blocks are shared module objects."""

    def __init__(self, models: dict[str, nn.Module]):
        super().__init__()
        self.tasks = nn.ModuleDict(models)
        self.config = next(iter(models.values())).config

    def forward(self, task: str, **batch):
        return self.tasks[task](**batch)


def backbone_prefix(model) -> str:
    return "backbone" if isinstance(model, HeadModel) else model.base_model_prefix


def share_backbone(models: dict[str, nn.Module], head_modules: dict[str, list[str]]) -> list[str]:
    """Make the backbone blocks (embeddings, encoder layers, ...) of all task models the same modules.
    Blocks that are part of a head (BERT's pooler for sequence classification) stay per task. Returns the shared block names."""
    shared: dict[str, nn.Module] = {}
    for name, model in models.items():
        prefix = backbone_prefix(model)
        base = model.get_submodule(prefix)
        for child, module in list(base.named_children()):
            if f"{prefix}.{child}" in head_modules[name] or not any(True for _ in module.parameters()):
                continue
            if child not in shared:
                shared[child] = module
            elif type(shared[child]) is not type(module):
                raise ModelError(f"tasks: cannot share backbone block {child!r} between task heads ({type(module).__name__})")
            else:
                setattr(base, child, shared[child])
    return sorted(shared)


class TaskView:
    """One task of the joint model, called like a single-task model (for trainer.evaluate)."""

    def __init__(self, model, name: str, adapter: str | None):
        self.model, self.name, self.adapter = model, name, adapter

    def __call__(self, **batch):
        if self.adapter:
            _set_adapter(self.model, self.adapter)
        return self.model(task=self.name, **batch)

    def eval(self):
        self.model.eval()

    def train(self):
        self.model.train()


def _set_adapter(model, adapter: str) -> None:
    from accelerate.utils import extract_model_from_parallel

    peft_model = extract_model_from_parallel(model)
    if peft_model.active_adapter != adapter:
        peft_model.set_adapter(adapter)  # the others keep their weights and stay in the optimizer


def build_joint(recipe: Recipe, subs: dict, labels: dict, device=None):
    """(PEFT-wrapped MultiTaskModel, head module paths, adapter name per task)."""
    from peft import get_peft_model

    from .adapters import METHODS
    from .heads import set_head_trainable

    if recipe.adapter.method == "full":
        raise RecipeError("adapter.method: multi-task training needs an adapter method (full fine-tuning is single-task only)")
    models, head_modules = {}, {}
    for name, sub in subs.items():
        models[name], head_modules[name] = build_task_model(sub, labels[name], None, device)
    share_backbone(models, head_modules)
    joint = MultiTaskModel(models)
    for p in joint.parameters():
        p.requires_grad_(False)
    names = sorted({h for hs in head_modules.values() for h in hs})
    method = METHODS[recipe.adapter.method]
    peft_config = method.build(recipe.adapter.typed(), joint, dict(head_modules=names, task_type=None, recipe=recipe))
    per_task = recipe.multitask.adapter == "per_task"
    adapters = {n: (n if per_task else SHARED_ADAPTER) for n in subs}
    first = next(iter(adapters.values()))
    joint = get_peft_model(joint, peft_config, adapter_name=first)
    if per_task:
        for n in list(adapters)[1:]:
            joint.add_adapter(n, peft_config)
        # Every task's adapter goes into the optimizer; PEFT leaves only the active one trainable.
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in joint.modules():
            if isinstance(module, BaseTunerLayer):
                for attr in module.adapter_layer_names:
                    for a in adapters.values():
                        if a in getattr(module, attr):
                            for p in getattr(module, attr)[a].parameters():
                                p.requires_grad_(True)
    for name in subs:
        set_head_trainable(joint, [f"tasks.{name}.{h}" for h in head_modules[name]])
    paths = [f"tasks.{n}.{h}" for n, hs in head_modules.items() for h in hs]
    return joint, paths, adapters, head_modules


def export_task(joint, name: str, adapter: str, sub: Recipe, labels, device=None):
    """A fresh single-task model (as `model.build` makes it) holding the trained adapter and head of `name`."""
    from .model import build

    fresh, head_modules = build(sub, labels, device=device)
    src = dict(joint.named_parameters(remove_duplicate=False))  # shared blocks appear under every task's path
    missing = []
    with torch.no_grad():
        for key, p in fresh.named_parameters():
            if not p.requires_grad:
                continue
            rel = key.removeprefix("base_model.model.").replace(f".{SHARED_ADAPTER}.", f".{adapter}.")
            s = src.get(f"base_model.model.tasks.{name}.{rel}")
            if s is None or s.shape != p.shape:
                missing.append(key)
                continue
            p.copy_(s.detach().to(p.device, p.dtype))
    if missing:
        raise ModelError(f"tasks[{name}]: trained weights for {missing[:3]} not found in the joint model")
    return fresh, head_modules


def _write_task_log(joint_log: Path, task_log: Path, name: str) -> None:
    """One task's share of the joint log, in the single-task shape, so its run folder gets its own report."""
    lines = []
    for line in joint_log.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "eval":
            if r.get("task") != name:
                continue
            r = {k: v for k, v in r.items() if k != "task"}
        elif "event" not in r:
            if f"loss/{name}" not in r:
                continue
            r = {k: v for k, v in r.items() if not k.startswith("loss/")} | {"loss": r[f"loss/{name}"]}
        lines.append(json.dumps(r) + "\n")
    task_log.write_text("".join(lines))


@dataclass
class _Task:
    name: str
    sub: Recipe
    head: object
    labels: list | None
    splits: dict
    weight: float


def train_multitask(recipe: Recipe) -> dict:
    """Train all tasks of a multi-task recipe jointly; write the joint folder and one run directory per task."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from .backbone import load_tokenizer
    from .rundir import RunWriter, atomic_write_text, finished
    from .trainer import evaluate, mixed_precision, param_groups, progress

    if not recipe.tasks:
        raise RecipeError("tasks: a multi-task recipe needs a `tasks:` list")
    t = recipe.training
    out = Path(t.output_dir)
    status = out / "run.json"
    if finished(status) and not t.overwrite:
        raise RecipeError(f"training.output_dir: {out} holds a finished run; choose another output_dir or set training.overwrite=true")
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=mixed_precision(t.mixed_precision), gradient_accumulation_steps=t.gradient_accumulation,
                              **distributed.accelerator_kwargs(find_unused_parameters=True))
    set_seed(t.seed)
    tokenizer = load_tokenizer(recipe.backbone)
    tasks: dict[str, _Task] = {}
    for spec in recipe.tasks:
        sub = task_recipe(recipe, spec)
        head = HEADS[sub.task.type]
        splits, labels = data_mod.prepare(sub, tokenizer, head)
        tasks[spec.name] = _Task(spec.name, sub, head, labels, splits, spec.weight)
    set_seed(t.seed)
    device = accelerator.device if accelerator.device.type == "cuda" else None
    model, head_paths, adapters, head_modules = build_joint(recipe, {n: k.sub for n, k in tasks.items()},
                                                            {n: k.labels for n, k in tasks.items()}, device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())

    n_proc = accelerator.num_processes
    train_dl = {n: data_mod.dataloader(k.splits["train"], tokenizer, t.batch_size, True, t.seed, t.group_by_length, n_proc)
                for n, k in tasks.items()}
    eval_dl = {n: data_mod.dataloader(k.splits["validation"], tokenizer, t.eval_batch_size, False, t.seed, False)
               for n, k in tasks.items() if "validation" in k.splits}
    sizes = {n: len(dl) for n, dl in train_dl.items()}  # batches per epoch of each task
    steps_per_epoch = math.ceil(sum(sizes.values()) / (t.gradient_accumulation * n_proc))
    total_steps = t.max_steps or max(1, math.ceil(steps_per_epoch * t.epochs))
    optimizer = torch.optim.AdamW(param_groups(model, recipe, head_paths), lr=t.lr)
    # Accelerate's prepared scheduler steps once per process per optimizer step (see trainer.train).
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=int(t.warmup_ratio * total_steps) * n_proc,
                              num_training_steps=total_steps * n_proc)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    train_dl = {n: accelerator.prepare(dl) for n, dl in train_dl.items()}
    eval_dl = {n: accelerator.prepare(dl) for n, dl in eval_dl.items()}
    per_task_adapter = recipe.multitask.adapter == "per_task"
    views = {n: TaskView(model, n, adapters[n] if per_task_adapter else None) for n in tasks}

    log_path = out / "log.jsonl"
    if accelerator.is_main_process:
        for stale in ("metrics.json", "log.jsonl"):
            (out / stale).unlink(missing_ok=True)
        save_recipe(recipe, out / "recipe.yaml")
        info = dict(status="running", multitask=True, tasks=list(tasks), total_steps=total_steps, trainable_params=n_train,
                    total_params=n_total, sampling=recipe.multitask.sampling, adapter=recipe.multitask.adapter,
                    sampling_weights=sampling_weights(sizes, recipe.multitask.sampling, recipe.multitask.temperature))
        atomic_write_text(status, json.dumps(info, indent=1))

    def log(record):
        if accelerator.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    log(dict(event="start", tasks=sizes, trainable_params=n_train, total_params=n_total, total_steps=total_steps, processes=n_proc))
    order = task_order(sizes, recipe.multitask.sampling, recipe.multitask.temperature, t.seed)
    iters = {n: iter(dl) for n, dl in train_dl.items()}
    counts = {n: 0 for n in tasks}
    window = {n: [0.0, 0] for n in tasks}
    step, seen, eval_s = 0, 0, 0.0
    t0 = time.perf_counter()
    bar = progress(total=total_steps, desc="train", disable=not accelerator.is_main_process)
    model.train()
    while step < total_steps:
        name = next(order)
        try:
            batch = next(iters[name])
        except StopIteration:  # this task's epoch is over: start its next one
            iters[name] = iter(train_dl[name])
            batch = next(iters[name])
        if per_task_adapter:
            _set_adapter(model, adapters[name])
        with accelerator.accumulate(model):
            loss = model(task=name, **batch).loss * tasks[name].weight
            accelerator.backward(loss)
            if accelerator.sync_gradients and t.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        window[name][0] += loss.detach().float().item() / tasks[name].weight
        window[name][1] += 1
        counts[name] += 1
        seen += batch["input_ids"].shape[0] * n_proc
        if not accelerator.sync_gradients:
            continue
        step += 1
        bar.update(1)
        if step % t.log_every == 0 or step == total_steps:
            # Every rank trained the same tasks (same seeded order): reduce each task's mean loss.
            record = dict(step=step, lr=scheduler.get_last_lr()[0])
            for n, (s, c) in window.items():
                if c:
                    v = accelerator.reduce(torch.tensor(s / c, device=accelerator.device), "mean").item()
                    if not math.isfinite(v):
                        raise FloatingPointError(f"training loss of task {n} is {v} at step {step}: lower training.lr or check the data")
                    record[f"loss/{n}"] = round(v, 6)
            record["examples_per_s"] = round(seen / max(time.perf_counter() - t0 - eval_s, 1e-9), 2)
            log(record)
            window = {n: [0.0, 0] for n in tasks}
        if t.eval_every and step % t.eval_every == 0 and step < total_steps:
            e0 = time.perf_counter()
            for n, dl in eval_dl.items():
                log(dict(event="eval", task=n, split="validation", step=step,
                         **evaluate(views[n], dl, tasks[n].head, accelerator, f"{n} validation", tasks[n].labels, tasks[n].sub.task)))
            eval_s += time.perf_counter() - e0
    bar.close()
    train_s = time.perf_counter() - t0 - eval_s

    final = {"tasks": {}}
    for n, k in tasks.items():
        res = {}
        if n in eval_dl:
            res["validation"] = evaluate(views[n], eval_dl[n], k.head, accelerator, f"{n} validation", k.labels, k.sub.task)
        if "test" in k.splits:
            dl = accelerator.prepare(data_mod.dataloader(k.splits["test"], tokenizer, t.eval_batch_size, False, t.seed, False))
            res["test"] = evaluate(views[n], dl, k.head, accelerator, f"{n} test", k.labels, k.sub.task)
        res["train"] = dict(batches=counts[n] * n_proc)
        final["tasks"][n] = res
    final["train"] = dict(steps=step, examples=seen, seconds=round(train_s, 2), examples_per_s=round(seen / train_s, 2),
                          trainable_params=n_train, batches_per_task={n: c * n_proc for n, c in counts.items()})
    metric = {s.name: s.metric or "loss" for s in recipe.tasks}
    final["summary"] = {n: {metric[n]: res.get("validation", {}).get(metric[n])} for n, res in final["tasks"].items()}
    for n, res in final["tasks"].items():
        if "validation" in res:
            log(dict(event="eval", task=n, split="validation", step=step, **res["validation"]))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        for n, k in tasks.items():
            fresh, hm = export_task(unwrapped, n, adapters[n], k.sub, k.labels)
            writer = RunWriter(Path(k.sub.training.output_dir), k.sub)
            writer.check_writable()
            writer.start(tokenizer, k.labels, dict(trainable_params=n_train, total_steps=total_steps, head_modules=hm,
                                                   joint_run=str(out)))
            task_final = {s: v for s, v in final["tasks"][n].items() if s != "train"}
            task_final["train"] = dict(final["train"], batches=final["tasks"][n]["train"]["batches"])
            writer.finish(fresh, hm, task_final)
            del fresh
            _write_task_log(log_path, Path(k.sub.training.output_dir) / "log.jsonl", n)
        atomic_write_text(out / "metrics.json", json.dumps(final, indent=1))
        info.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(status, json.dumps(info, indent=1))
        from . import report

        for k in tasks.values():
            report.write_report_safely(k.sub.training.output_dir)
        report.write_report_safely(out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final
