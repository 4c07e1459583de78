"""How a job's tasks sit on the model and in the run folder: one task (`SingleTask`: the model is the task's, the
run folder is its run) or several (`MultiTask`: a joint model, a joint folder and one run folder per task). The loop
asks its layout and never which one it has; everything else about a task is the same code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Recipe
from ..errors import RecipeError
from ..model import build
from ..runs import RunWriter
from . import multitask


@dataclass(frozen=True)
class TaskRecipe:
    """One task as the loop trains it: its single-task recipe and what the multi-task spec adds."""

    recipe: Recipe
    weight: float = 1.0
    metric: str | None = None


def selection(results: dict[str, dict], metric: str, multi: bool) -> float:
    """The value early stopping and best-checkpoint selection compare. Multi-task: `TASK/METRIC` is one task's
    metric, a plain name the mean of that metric over every evaluated task."""
    if not multi:
        result = results["main"]
        if metric not in result:
            raise RecipeError(
                f"training.early_stopping.metric: {metric!r} is not among the validation metrics {sorted(result)}"
            )
        return result[metric]
    if "/" in metric:
        name, _, key = metric.partition("/")
        if name not in results or key not in results[name]:
            known = sorted(f"{n}/{k}" for n, r in results.items() for k in r if k != "report")
            raise RecipeError(f"training.early_stopping.metric: {metric!r} is not among the validation metrics {known}")
        return results[name][key]
    missing = [n for n, r in results.items() if metric not in r]
    if missing:
        raise RecipeError(
            f"training.early_stopping.metric: {metric!r} is not reported by task(s) {missing}; "
            f"name one task's metric as TASK/METRIC"
        )
    return sum(r[metric] for r in results.values()) / len(results)


class SingleTask:
    multi = False
    logs_empty_windows = True  # a log step whose losses were all skipped still writes `loss`
    find_unused_parameters = False  # DDP: every parameter gets a gradient each step

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def check(self) -> None:
        """What this layout refuses, before anything loads."""

    def task_recipes(self) -> dict[str, TaskRecipe]:
        return {"main": TaskRecipe(self.recipe)}

    def generator(self, model, name: str, adapter: str | None):
        """The model that generates a task's text (generated-text metrics), its adapter active."""
        return model

    def build(self, tasks: dict, device, tokenizer):
        """(model, head module paths, task -> the PEFT adapter it trains, joint model or None, what run.json adds)."""
        model, head_modules = build(self.recipe, tasks["main"].labels, device=device, tokenizer=tokenizer)
        return model, head_modules, {"main": None}, None, dict(head_modules=head_modules)

    def prepare(self, accelerator, model, optimizer, scheduler, train_dls: dict):
        model, optimizer, train_dls["main"], scheduler = accelerator.prepare(
            model, optimizer, train_dls["main"], scheduler
        )
        return model, optimizer, scheduler, train_dls

    def sampler(self, sizes: dict, seed: int):
        return None

    def view(self, model, name: str, adapter: str | None):
        return model

    def forward_task(self, name: str) -> str | None:
        return None

    def name(self, task: str, text: str = "") -> str:
        """How a task's name prefixes progress and messages (nothing for the one task)."""
        return text

    def prefix(self, task: str, fmt: str) -> str:
        return ""

    def select(self, results: dict, metric: str) -> float:
        return selection(results, metric, self.multi)

    def start_record(self, sizes: dict) -> dict:
        return {}

    def final_evals(self, results: dict) -> dict:
        """Final validation results logged as eval events (the per-task runs' logs are cut from the joint one)."""
        return {}

    def keyed(self, per_task: dict):
        """A per-task record as the run folder keeps it: the one task's value itself."""
        return per_task["main"]

    def start_info(self, sizes: dict) -> dict:
        return {}

    def step_record(self, step: int, seen: int, tasks: dict) -> dict:
        return dict(step=step, epoch=round(seen / (len(tasks["main"].splits["train"]) or 1), 4))

    def loss_key(self, name: str) -> str:
        return "loss"

    def eval_key(self, name: str) -> dict:
        return {}

    def final(self, results: dict, tasks: dict, counts: dict, n_proc: int, train_info: dict, select: Callable) -> dict:
        """metrics.json; `select(result)` says which weights the result scores and its headline."""
        return dict(results["main"], train=train_info, selection=select(results["main"]))

    def save(self, writer: RunWriter, job, model, final: dict, tokenizer, total_steps: int, n_train: int) -> list[Path]:
        """Write the trained weights (and any per-task runs); the folders whose reports to rebuild besides the run's."""
        writer.save_weights(model, job.head_modules)
        return []


class MultiTask(SingleTask):
    multi = True
    logs_empty_windows = False
    find_unused_parameters = True  # a step trains one task's head (and adapter)

    def check(self) -> None:
        multitask.check_method(self.recipe.adapter)
        if self.recipe.adapter.init_from:
            raise RecipeError("adapter.init_from: warm starts are for single-task recipes")

    def task_recipes(self) -> dict[str, TaskRecipe]:
        return {
            spec.name: TaskRecipe(multitask.task_recipe(self.recipe, spec), spec.weight, spec.metric or "loss")
            for spec in self.recipe.tasks or []
        }

    def build(self, tasks: dict, device, tokenizer):
        joint = multitask.build_joint(
            self.recipe,
            {n: k.recipe for n, k in tasks.items()},
            {n: k.labels for n, k in tasks.items()},
            device,
            tokenizer,
        )
        per_task = self.recipe.multitask.adapter == "per_task"
        return joint.model, joint.head_paths, {n: joint.adapters[n] if per_task else None for n in tasks}, joint, {}

    def prepare(self, accelerator, model, optimizer, scheduler, train_dls: dict):
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        return model, optimizer, scheduler, {n: accelerator.prepare(dl) for n, dl in train_dls.items()}

    def sampler(self, sizes: dict, seed: int):
        m = self.recipe.multitask
        return multitask.TaskSampler(sizes, m.sampling, m.temperature, seed)

    def view(self, model, name: str, adapter: str | None):
        return multitask.TaskView(model, name, adapter)

    def generator(self, model, name: str, adapter: str | None):
        # The task's own model inside the joint one: its backbone blocks (and the adapter layers in them) are shared.
        if adapter:
            multitask.set_adapter(model, adapter)
        return model.get_base_model().tasks[name]

    def forward_task(self, name: str) -> str | None:
        return name  # the joint model's forward takes the task name

    def name(self, task: str, text: str = "") -> str:
        return f"{task} {text}" if text else task

    def prefix(self, task: str, fmt: str) -> str:
        return fmt.format(task)

    def start_record(self, sizes: dict) -> dict:
        return {"tasks": sizes}

    def final_evals(self, results: dict) -> dict:
        return {n: res["validation"] for n, res in results.items() if "validation" in res}

    def keyed(self, per_task: dict):
        return per_task

    def start_info(self, sizes: dict) -> dict:
        m = self.recipe.multitask
        return dict(
            multitask=True,
            tasks=list(sizes),
            sampling=m.sampling,
            adapter=m.adapter,
            sampling_weights=multitask.sampling_weights(sizes, m.sampling, m.temperature),
        )

    def step_record(self, step: int, seen: int, tasks: dict) -> dict:
        return dict(step=step)

    def loss_key(self, name: str) -> str:
        return f"loss/{name}"

    def eval_key(self, name: str) -> dict:
        return {"task": name}

    def final(self, results: dict, tasks: dict, counts: dict, n_proc: int, train_info: dict, select: Callable) -> dict:
        final = {
            "tasks": {n: dict(res, train=dict(batches=counts[n] * n_proc)) for n, res in results.items()},
            "train": dict(train_info, batches_per_task={n: c * n_proc for n, c in counts.items()}),
        }
        final["summary"] = {n: {k.metric: results[n].get("validation", {}).get(k.metric)} for n, k in tasks.items()}
        return final

    def save(self, writer: RunWriter, job, model, final: dict, tokenizer, total_steps: int, n_train: int) -> list[Path]:
        """Every task as an ordinary run directory: a fresh single-task model holding its trained adapter and head,
        its share of the log, and its own metrics."""
        run_dir = writer.dir
        for n, k in job.tasks.items():
            fresh, hm = multitask.export_task(model, n, job.joint.adapters[n], k.recipe, k.labels, tokenizer=tokenizer)
            task_dir = Path(k.recipe.training.output_dir)
            task_writer = RunWriter(task_dir, k.recipe)
            task_writer.check_writable()
            task_writer.start(
                tokenizer,
                k.labels,
                dict(trainable_params=n_train, total_steps=total_steps, head_modules=hm, joint_run=str(run_dir)),
            )
            task_writer.save_weights(fresh, hm)
            if k.holdout:
                task_writer.write_json("data_split.json", k.holdout)
            task_final = {s: v for s, v in final["tasks"][n].items() if s != "train"}
            task_final["train"] = dict(final["train"], batches=final["tasks"][n]["train"]["batches"])
            task_writer.finish(task_final)
            del fresh
            multitask.write_task_log(run_dir / "log.jsonl", task_dir / "log.jsonl", n)
        return [Path(k.recipe.training.output_dir) for k in job.tasks.values()]


def layout(recipe: Recipe) -> SingleTask:
    return MultiTask(recipe) if recipe.tasks else SingleTask(recipe)
