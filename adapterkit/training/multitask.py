"""What multi-task training adds to the one training loop (loop.py): the joint model and the task sampler.

Several tasks (each with its own data and head) share one backbone, with one shared adapter or one PEFT named
adapter per task. The task models are built exactly as single-task runs build them (model.build_task_model),
then their backbone blocks are made the same modules, so the backbone is held once and trained by every task.
Each step trains one task, chosen by the `TaskSampler` (`multitask.sampling`). At the end every task is written
as an ordinary run directory `<output_dir>/<task name>/` (so `adapterkit eval/predict/export` work on it), and
`<output_dir>/metrics.json` holds the metrics of all tasks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..adapters import METHODS, method_settings
from ..config import Recipe
from ..errors import ModelError, RecipeError
from ..heads import HeadModel
from ..model import build, build_task_model, set_head_trainable
from ..model.assemble import after_peft, finish_model, method_context, prepare_backbone
from ..model.recipe import recipe_from_dict

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


class TaskSampler:
    """Which task each step trains: the same sequence on every process (same seed), so all ranks train the same
    task each step; its state goes into checkpoints, so a resumed run draws the same tasks."""

    def __init__(self, sizes: dict[str, int], how: str, temperature: float, seed: int):
        self.names, self.how = list(sizes), how
        w = sampling_weights(sizes, how, temperature)
        self.weights = [w[n] for n in self.names]
        self.rnd = random.Random(seed)
        self.i = 0

    def next(self) -> str:
        if self.how == "round_robin":
            name = self.names[self.i % len(self.names)]
        else:
            name = self.rnd.choices(self.names, weights=self.weights)[0]
        self.i += 1
        return name

    def state(self) -> dict:
        return {"i": self.i, "random": self.rnd.getstate()}

    def set_state(self, state: dict) -> None:
        self.i = state["i"]
        version, internal, gauss = state["random"]
        self.rnd.setstate((version, tuple(internal), gauss))


def task_order(sizes: dict[str, int], how: str, temperature: float, seed: int):
    """Endless task sequence of a TaskSampler."""
    sampler = TaskSampler(sizes, how, temperature, seed)
    while True:
        yield sampler.next()


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
                raise ModelError(
                    f"tasks: cannot share backbone block {child!r} between task heads ({type(module).__name__})"
                )
            else:
                setattr(base, child, shared[child])
    return sorted(shared)


class TaskView:
    """One task of the joint model, called like a single-task model (for evaluate)."""

    def __init__(self, model, name: str, adapter: str | None):
        self.model, self.name, self.adapter = model, name, adapter

    def __call__(self, **batch):
        if self.adapter:
            set_adapter(self.model, self.adapter)
        return self.model(task=self.name, **batch)

    def eval(self):
        self.model.eval()

    def train(self):
        self.model.train()


def set_adapter(model, adapter: str) -> None:
    from accelerate.utils import extract_model_from_parallel

    peft_model = extract_model_from_parallel(model)
    if peft_model.active_adapter != adapter:
        peft_model.set_adapter(adapter)  # the others keep their weights and stay in the optimizer


@dataclass
class JointModel:
    model: nn.Module  # PEFT-wrapped MultiTaskModel
    head_paths: list[str]  # every task's head modules, as paths in the joint model
    adapters: dict[str, str]  # task -> the PEFT adapter it trains
    head_modules: dict[str, list[str]]  # task -> its head modules, as paths in its own task model


def check_method(adapter) -> None:
    if METHODS[adapter.method].trains_base:
        raise RecipeError(
            f"adapter.method: multi-task training needs an adapter method ({adapter.method} fine-tuning is single-task only)"
        )


def build_joint(recipe: Recipe, subs: dict, labels: dict, device=None, tokenizer=None) -> JointModel:
    from peft import get_peft_model

    check_method(recipe.adapter)
    models, head_modules = {}, {}
    for name, sub in subs.items():
        models[name], head_modules[name] = build_task_model(sub, labels[name], None, device, tokenizer)
    share_backbone(models, head_modules)
    for model in models.values():
        prepare_backbone(model, recipe)
    joint = MultiTaskModel(models)
    for p in joint.parameters():
        p.requires_grad_(False)
    names = sorted({h for hs in head_modules.values() for h in hs})
    method = METHODS[recipe.adapter.method]
    context = method_context(next(iter(subs.values())), names)
    peft_config = method.build(method_settings(recipe.adapter), joint, replace(context, peft_task_type=None))
    per_task = recipe.multitask.adapter == "per_task"
    adapters = {n: (n if per_task else SHARED_ADAPTER) for n in subs}
    first = next(iter(adapters.values()))
    joint = after_peft(get_peft_model(joint, peft_config, adapter_name=first), method)
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
    finish_model(joint, recipe.backbone)
    paths = [f"tasks.{n}.{h}" for n, hs in head_modules.items() for h in hs]
    return JointModel(joint, paths, adapters, head_modules)


def export_task(joint, name: str, adapter: str, sub: Recipe, labels, device=None, tokenizer=None):
    """A fresh single-task model (as `model.build` makes it) holding the trained adapter and head of `name`."""
    fresh, head_modules = build(sub, labels, device=device, tokenizer=tokenizer)
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


def write_task_log(joint_log: Path, task_log: Path, name: str) -> None:
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
