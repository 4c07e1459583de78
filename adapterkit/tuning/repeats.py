"""`adapterkit train --seeds` and `--cv`: one recipe trained several times (over seeds, over the folds of a K-fold
split, or both), one ordinary run folder each under the recipe's output_dir, and the mean ± sd of every metric
(summary.json, summary.md). A repeat whose run already finished with the same recipe is read, not retrained, so an
interrupted series continues where it stopped: a repeat stopped by SIGINT/SIGTERM resumes from its checkpoint."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path

from .. import config, console
from ..config import plugin_keys, resolve_paths
from ..config.schema import MAX_FOLDS, SEED_MAX
from ..errors import Interrupted, RecipeError, RunDirError
from ..files import atomic_write_text, read_json
from ..model import REGISTRIES, load_recipe
from ..runs import finished
from ..runs.results import RunResult
from ..stats import summarize
from ..training import preflight, tracking, train
from ..training.checkpoint import list_checkpoints


@dataclass(frozen=True)
class Repeat:
    name: str  # run folder below output_dir, e.g. seed-1/fold-0
    overrides: list[str]  # --set assignments that make this repeat


MAX_SEEDS = 1000  # --seeds: each seed is a training run
MAX_REPEATS = 1000  # seeds x folds: runs in one series


def parse_seeds(text: str, base_seed: int) -> list[int]:
    """`--seeds 3`: three seeds from the recipe's training.seed; `--seeds 0,1,5`: those seeds. At most MAX_SEEDS,
    counted before any list is made (`--seeds 1000000` used to build a million recipes first)."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    if text.count(",") >= MAX_SEEDS + 1:
        raise RecipeError(f"--seeds: more than {MAX_SEEDS} seeds; at most {MAX_SEEDS} runs per series")
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if count > MAX_SEEDS:
                raise RecipeError(f"--seeds: {count} runs; expected a count from 1 to {MAX_SEEDS}")
            seeds = list(range(base_seed, base_seed + count))
    except ValueError:
        raise RecipeError(f"--seeds: {shown!r}; expected a count (3) or a comma list of seeds (0,1,2)") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise RecipeError(f"--seeds: {shown!r}; expected a positive count or distinct non-negative seeds")
    if len(seeds) > MAX_SEEDS:
        raise RecipeError(f"--seeds: {len(seeds)} seeds; at most {MAX_SEEDS} runs per series")
    if max(seeds) > SEED_MAX:  # checked here, not by the first repeat's recipe after the others were planned
        raise RecipeError(f"--seeds: seed {max(seeds)} is out of range; seeds run from 0 to {SEED_MAX} (2**32-1)")
    return seeds


def check_counts(seeds: list[int] | None, folds: int | None) -> None:
    """--cv from 2 to MAX_FOLDS, and seeds x folds at most MAX_REPEATS runs: before any recipe is planned."""
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS):
        raise RecipeError(f"--cv: {folds!r}; expected a number of folds from 2 to {MAX_FOLDS}")
    runs = len(seeds or [0]) * (folds or 1)
    if runs > MAX_REPEATS:
        raise RecipeError(
            f"--seeds and --cv: {len(seeds or [0])} seeds x {folds} folds = {runs} runs; at most {MAX_REPEATS} per series"
        )


def fold_overrides(folds: int, fold: int) -> list[str]:
    """Fold `fold` of a K-fold split as the validation split (the recipe's own validation source set aside)."""
    return [f"data.cv_folds={folds}", f"data.cv_fold={fold}", "data.validation=null", "data.validation_split=null"]


def plan(seeds: list[int] | None, folds: int | None) -> list[Repeat]:
    seed_parts = [(f"seed-{s}", [f"training.seed={s}"]) for s in seeds] if seeds else [("", [])]
    fold_parts = [(f"fold-{i}", fold_overrides(folds, i)) for i in range(folds)] if folds else [("", [])]
    return [Repeat("/".join(p for p in (sn, fn) if p), so + fo) for sn, so in seed_parts for fn, fo in fold_parts]


def check_parent(out: Path) -> None:
    if (out / "run.json").is_file():
        raise RunDirError(
            f"training.output_dir: {out} holds a run; --seeds and --cv write one run per repeat below "
            f"output_dir, so choose a new output_dir"
        )


def train_repeats(recipe_path, overrides: list[str], seeds: list[int] | None = None, folds: int | None = None) -> dict:
    """Train every repeat (seeds x folds) and summarise; returns {"runs": {name: final}, "summary": {...}}."""
    check_counts(seeds, folds)
    base = resolve_paths(load_recipe(recipe_path, overrides))
    if folds and base.tasks:
        raise RecipeError("--cv: cross-validation is for single-task recipes")
    if folds and (base.data.validation or base.data.validation_split):
        console.echo(
            f"note: --cv: the recipe's validation split ({base.data.validation or base.data.validation_split}) is not used; "
            f"each fold holds out its own validation rows",
            err=True,
        )
    out = Path(base.training.output_dir)
    check_parent(out)
    repeats = plan(seeds, folds)
    recipes = [
        resolve_paths(load_recipe(recipe_path, overrides + rep.overrides + [f"training.output_dir={out / rep.name}"]))
        for rep in repeats
    ]
    done = {
        rep.name
        for rep, r in zip(repeats, recipes)
        if finished(out / rep.name / "run.json") and _same_recipe(out / rep.name, r)
    }
    # A repeat stopped mid-way with the same recipe continues from its newest checkpoint (the loop checks that the
    # recipe did not change what a step computes).
    resume = {
        rep.name: "latest"
        for rep, r in zip(repeats, recipes)
        if rep.name not in done and list_checkpoints(out / rep.name) and _same_recipe(out / rep.name, r)
    }
    for rep, r in zip(repeats, recipes):  # every repeat still to train is checked before the first one trains
        if rep.name not in done:
            preflight(r, resume.get(rep.name))
    runs = {}
    for rep, r in zip(repeats, recipes):
        if rep.name in done:
            runs[rep.name] = read_json(out / rep.name / "metrics.json", "metrics")
            console.echo(f"{rep.name}: finished before, read from {out / rep.name}", err=True)
        else:
            if rep.name in resume:
                console.echo(f"{rep.name}: continues from its checkpoint in {out / rep.name}", err=True)
            try:
                with tracking.series(out):  # one MLflow experiment for the repeats, a run each named by its folder
                    runs[rep.name] = train(r, resume=resume.get(rep.name))
            except Interrupted as e:
                name = signal.Signals(e.signum).name
                raise Interrupted(
                    f"{rep.name}: interrupted by {name}, its checkpoint kept; {len(runs)} of {len(repeats)} "
                    f"repeats done; run the same command again to continue (it resumes {rep.name})",
                    e.signum,
                ) from None
    summary = summarize([RunResult.from_metrics(f).numbers() for f in runs.values()])
    result = {"repeats": [rep.name for rep in repeats], "seeds": seeds, "cv_folds": folds, "summary": summary}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(result, indent=1))
    atomic_write_text(out / "summary.md", format_summary(result))
    return result


def _same_recipe(run_dir: Path, recipe) -> bool:
    # The earlier run's recipe is a file in a folder: it may import only the plugins this command's recipe names.
    ours = {name for _, name in plugin_keys(recipe.to_dict())}
    try:
        saved = resolve_paths(config.load_recipe(run_dir / "recipe.yaml", registries=REGISTRIES, allowed_plugins=ours))
    except RecipeError:
        return False
    return saved.model_dump(exclude={"training": {"overwrite"}}) == recipe.model_dump(
        exclude={"training": {"overwrite"}}
    )


def format_summary(result: dict) -> str:
    names = result["repeats"]
    lines = [
        f"{len(names)} runs: {', '.join(names)}",
        "",
        "| metric | mean | sd | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for k, s in result["summary"].items():
        if k.startswith("train/") and k not in ("train/examples_per_s", "train/seconds"):
            continue
        lines.append(f"| {k} | {s['mean']:.4f} | {s['sd']:.4f} | " + " | ".join(f"{v:.4f}" for v in s["values"]) + " |")
    return "\n".join(lines) + "\n"
