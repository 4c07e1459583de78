"""`adapterkit train --seeds` and `--cv`: one recipe trained several times (over seeds, over the folds of a K-fold
split, or both), one ordinary run folder each under the recipe's output_dir, and the mean ± sd of every metric
(summary.json, summary.md). A repeat whose run already finished with the same recipe is read, not retrained, so an
interrupted series continues where it stopped."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import console
from .. import config
from ..config import plugin_keys, resolve_paths
from ..errors import RecipeError, RunDirError
from ..files import atomic_write_text, read_json
from ..model import REGISTRIES, load_recipe
from ..runs import finished
from ..stats import summarize
from ..training import preflight, train


@dataclass(frozen=True)
class Repeat:
    name: str               # run folder below output_dir, e.g. seed-1/fold-0
    overrides: list[str]    # --set assignments that make this repeat


def parse_seeds(text: str, base_seed: int) -> list[int]:
    """`--seeds 3`: three seeds from the recipe's training.seed; `--seeds 0,1,5`: those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(base_seed, base_seed + int(text)))
    except ValueError:
        raise RecipeError(f"--seeds: {text!r}; expected a count (3) or a comma list of seeds (0,1,2)") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise RecipeError(f"--seeds: {text!r}; expected a positive count or distinct non-negative seeds")
    return seeds


def fold_overrides(folds: int, fold: int) -> list[str]:
    """Fold `fold` of a K-fold split as the validation split (the recipe's own validation source set aside)."""
    return [f"data.cv_folds={folds}", f"data.cv_fold={fold}", "data.validation=null", "data.validation_split=null"]


def plan(seeds: list[int] | None, folds: int | None) -> list[Repeat]:
    seed_parts = [(f"seed-{s}", [f"training.seed={s}"]) for s in seeds] if seeds else [("", [])]
    fold_parts = [(f"fold-{i}", fold_overrides(folds, i)) for i in range(folds)] if folds else [("", [])]
    return [Repeat("/".join(p for p in (sn, fn) if p), so + fo) for sn, so in seed_parts for fn, fo in fold_parts]



def flatten(final: dict, prefix: str = "") -> dict:
    """Nested final metrics -> {"validation/accuracy": 0.8, ...} (text reports dropped)."""
    out = {}
    for k, v in final.items():
        if k == "report":
            continue
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def check_parent(out: Path) -> None:
    if (out / "run.json").is_file():
        raise RunDirError(f"training.output_dir: {out} holds a run; --seeds and --cv write one run per repeat below "
                          f"output_dir, so choose a new output_dir")


def train_repeats(recipe_path, overrides: list[str], seeds: list[int] | None = None, folds: int | None = None) -> dict:
    """Train every repeat (seeds x folds) and summarise; returns {"runs": {name: final}, "summary": {...}}."""
    base = resolve_paths(load_recipe(recipe_path, overrides))
    if folds and base.tasks:
        raise RecipeError("--cv: cross-validation is for single-task recipes")
    if folds and (base.data.validation or base.data.validation_split):
        console.echo(f"note: --cv: the recipe's validation split ({base.data.validation or base.data.validation_split}) is not used; "
              f"each fold holds out its own validation rows", err=True)
    out = Path(base.training.output_dir)
    check_parent(out)
    repeats = plan(seeds, folds)
    recipes = [resolve_paths(load_recipe(recipe_path, overrides + rep.overrides + [f"training.output_dir={out / rep.name}"]))
               for rep in repeats]
    done = {rep.name for rep, r in zip(repeats, recipes)
            if finished(out / rep.name / "run.json") and _same_recipe(out / rep.name, r)}
    for rep, r in zip(repeats, recipes):  # every repeat still to train is checked before the first one trains
        if rep.name not in done:
            preflight(r)
    runs = {}
    for rep, r in zip(repeats, recipes):
        if rep.name in done:
            runs[rep.name] = read_json(out / rep.name / "metrics.json", "metrics")
            console.echo(f"{rep.name}: finished before, read from {out / rep.name}", err=True)
        else:
            runs[rep.name] = train(r)
    summary = summarize([flatten(f) for f in runs.values()])
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
    return saved.model_dump(exclude={"training": {"overwrite"}}) == recipe.model_dump(exclude={"training": {"overwrite"}})


def format_summary(result: dict) -> str:
    names = result["repeats"]
    lines = [f"{len(names)} runs: {', '.join(names)}", "", "| metric | mean | sd | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for k, s in result["summary"].items():
        if k.startswith("train/") and k not in ("train/examples_per_s", "train/seconds"):
            continue
        lines.append(f"| {k} | {s['mean']:.4f} | {s['sd']:.4f} | " + " | ".join(f"{v:.4f}" for v in s["values"]) + " |")
    return "\n".join(lines) + "\n"
