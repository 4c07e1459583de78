"""Experiment trackers through Accelerate (`training.trackers: [tensorboard, wandb, ...]`).

Accelerate does the tracking; we only check the names up front (Accelerate silently drops a tracker whose
package is missing, which would lose a run's curves without a word), flatten the recipe into hyperparameters,
and forward every log.jsonl record to `accelerator.log`. Local trackers write under RUN_DIR/trackers/. MLflow is
our own tracker class (mlflow_run.py), one MLflow run per training run; `series` tells it which runs belong together.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError

PIP_NAMES = {"comet_ml": "comet-ml", "mlflow": "mlflow-skinny"}


@dataclass(frozen=True)
class Series:
    """The training runs of one command (--seeds/--cv repeats, a search's trials): one MLflow store and experiment."""

    root: Path  # the command's output folder
    names_from: Path  # run names are run folders relative to this
    tags: dict[str, str] = field(default_factory=dict)


_series: ContextVar[Series | None] = ContextVar("adapterkit_tracking_series", default=None)


@contextmanager
def series(root: Path, names_from: Path | None = None, **tags) -> Iterator[None]:
    """Training runs started inside belong to the series in `root` (e.g. `series(out, trial=3, study="s")`)."""
    token = _series.set(Series(Path(root), Path(names_from or root), {k: str(v) for k, v in tags.items()}))
    try:
        yield
    finally:
        _series.reset(token)


def check_trackers(names: list[str]) -> None:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    known = sorted(LOGGER_TYPE_TO_CLASS)  # includes trackers registered with accelerate.tracking.register_tracker_class
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name != "all" and name not in known:
            raise RecipeError(f"training.trackers: unknown tracker {name!r}; Accelerate knows {known} (or 'all')")
        if name != "all" and name in {str(t) for t in _builtin()} and name not in available:
            pip = PIP_NAMES.get(name, name)
            raise RecipeError(f"training.trackers: {name!r} needs its package installed (pip install {pip})")


def _builtin():
    from accelerate.utils import LoggerType

    return [t for t in LoggerType if t != LoggerType.ALL]


def accelerator_kwargs(recipe, run_dir: Path) -> dict:
    """Extra `Accelerator(...)` arguments: none when no tracker is asked for."""
    names = list(recipe.training.trackers)
    if not names:
        return {}
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import ProjectConfiguration

    check_trackers(names)
    if "all" in names:  # spelled out, so that mlflow among them is ours too
        names = list(dict.fromkeys([n for n in names if n != "all"] + [str(t) for t in get_available_trackers()]))
    run_dir = Path(run_dir)
    log_with: list = [_mlflow_run(recipe, run_dir) if n == "mlflow" else n for n in names]
    return dict(
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "trackers")),
    )


def _mlflow_run(recipe, run_dir: Path):
    from .mlflow_run import MlflowRun

    tags = {"seed": str(recipe.training.seed)}
    if recipe.data.cv_folds:
        tags.update(fold=str(recipe.data.cv_fold), cv_folds=str(recipe.data.cv_folds))
    s = _series.get()
    if s is None:
        return MlflowRun(run_dir, tags)
    return MlflowRun(run_dir, {"adapterkit.series": str(s.root.resolve()), **tags, **s.tags}, s.root, s.names_from)


def prepare_store(recipe, root: Path) -> None:
    """Create the series' MLflow store and experiment once, before parallel workers race to (tune --jobs)."""
    from accelerate.utils import is_mlflow_available

    names = recipe.training.trackers
    if "mlflow" in names or ("all" in names and is_mlflow_available()):
        from .mlflow_run import MlflowRun

        MlflowRun(Path(root), {}, Path(root)).open_experiment()


def abandon(interrupted: bool) -> None:
    """A training that failed or was stopped: end its MLflow run (FAILED, or KILLED when interrupted)."""
    mod = sys.modules.get(f"{__package__}.mlflow_run")  # never imported: no MLflow run to end
    if mod is not None:
        mod.end_open("KILLED" if interrupted else "FAILED")


def hparams(recipe) -> dict:
    """The recipe as flat `section.key` -> scalar (what TensorBoard's hparams and most trackers accept)."""
    flat = {}

    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif v is None or isinstance(v, (bool, int, float, str)):
                flat[f"{prefix}{k}"] = "none" if v is None else v
            else:
                flat[f"{prefix}{k}"] = str(v)

    walk(recipe.to_dict(), "")
    return flat


def scalars(record: dict) -> tuple[dict, int | None]:
    """A log.jsonl record as tracker scalars: training steps under train/, evaluations under their split."""
    step = record.get("step")
    event = record.get("event")
    if event is None and step is not None:
        prefix = "train/"
    elif event == "eval":  # a multi-task run's evaluations are per task
        prefix = (f"{record['task']}/" if record.get("task") else "") + f"{record.get('split', 'validation')}/"
    else:
        return {}, step
    skip = {"step", "event", "split", "best", "task"}
    return {
        prefix + k: v
        for k, v in record.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    }, step


def start(accelerator, recipe, writer, run_dir: Path) -> None:
    """Open the trackers and forward each record the run writer logs to them."""
    if not accelerator.log_with:
        return
    accelerator.init_trackers(Path(run_dir).name, config=hparams(recipe))

    def forward(record):
        values, step = scalars(record)
        if values:
            accelerator.log(values, step=step)

    writer.on_log = forward


def log_final(accelerator, final: dict, step: int) -> None:
    if not accelerator.log_with:
        return
    per_task = final.get("tasks")  # multi-task: {"tasks": {name: {split: metrics}}}
    splits = {f"{n}/{s}": m for n, res in per_task.items() for s, m in res.items()} if per_task else final
    values = {
        f"final/{split}/{k}": v
        for split, m in splits.items()
        if not split.endswith("train") and isinstance(m, dict)
        for k, v in m.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if values:
        accelerator.log(values, step=step)
    for tracker in accelerator.trackers:
        if tracker.name == "mlflow" and hasattr(tracker, "completed"):
            tracker.completed = True
