"""How long the shipped recipes take on this machine: seconds per 1,000 training examples and the whole recipe's
training time at that speed, for a user planning a run (issue #44).

    python benchmarks/recipe_times.py [--steps 40] [--recipes sst2-lora-int8,conll2003-lora-int8,...]

Each recipe trains for `--steps` optimizer steps with its own batch size, precision and data (validation and test
left out, so nothing but training is timed), one recipe after another, in its own `adapterkit train` process. From
metrics.json: training examples/s (the first steps included), the start-up to the first step, and the recipe's
whole training: epochs x training rows / examples/s (evaluations and generation come on top). Recipes whose data is
derived (examples/conll_derived.py) or shared and absent are skipped with the reason. Writes
benchmarks/results/recipe_times.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import pick, write_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["demo", "sst2-lora-int8", "conll2003-lora-int8", "smollm2-webnlg-lora-int8", "smollm2-sst2-label-words-lora",
           "smollm2-prompt-tuning", "multitask-sst2-conll-int8"]


def rows_and_epochs(recipe) -> tuple[int, float]:
    """Training rows the recipe uses (after max_train_samples) and its epochs."""
    from adapterkit.data.sources import read_split

    t = recipe.training
    if recipe.tasks is not None:
        n = sum(len(read_split(spec.data, "train")) for spec in recipe.tasks)
    else:
        n = len(read_split(recipe.data, "train"))
        if recipe.data.max_train_samples:
            n = min(n, recipe.data.max_train_samples)
    return n, t.epochs


def time_recipe(name: str, steps: int, work: Path) -> dict:
    from adapterkit.model import load_recipe

    path = ROOT / "recipes" / f"{name}.yaml"
    out = work / name
    sets = [f"training.max_steps={steps}", f"training.output_dir={out}", "training.overwrite=true",
            "training.checkpoint_every=null"]
    if load_recipe(path).tasks is None:  # (a multi-task recipe's tasks keep theirs: one evaluation at the end)
        sets += ["data.validation=null", "data.test=null", "training.early_stopping.metric=loss"]
    try:
        n, epochs = rows_and_epochs(load_recipe(path))
    except Exception as e:  # data not there (shared folder absent)
        return {"recipe": name, "skipped": str(e).splitlines()[0][:200]}
    cmd = [sys.executable, "-m", "adapterkit.cli", "train", str(path)] + [a for s in sets for a in ("--set", s)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode != 0:
        return {"recipe": name, "skipped": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    m = json.loads((out / "metrics.json").read_text())
    train = m["train"] if "train" in m else next(v["train"] for v in m.values() if isinstance(v, dict) and "train" in v)
    timings = m.get("timings", {})
    eps = train["examples_per_s"]
    first = sum(timings.get(k, 0.0) for k in ("start-up", "set-up", "reading and tokenizing data", "loading the model"))
    return {"recipe": name, "examples_per_s": eps, "s_per_1k": round(1000 / eps, 1), "steps": train["steps"],
            "train_rows": n, "epochs": epochs, "recipe_train_min": round(n * epochs / eps / 60, 1),
            "to_first_step_s": round(first, 1), "command_s": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    args = ap.parse_args()
    names = pick(args.recipes, RECIPES, "--recipes")
    work = ROOT / "runs" / "bench-recipe-times"
    rows = []
    for name in names:
        rows.append(time_recipe(name, args.steps, work))
        print(json.dumps(rows[-1]), flush=True)
    out = {"benchmark": "recipe_times", "steps": args.steps, "machine": platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    res = ROOT / "benchmarks" / "results"
    (res / "recipe_times.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Shipped recipes: training time on this machine ({out['when']}, {out['cores']} cores)", "",
             f"`python benchmarks/recipe_times.py --steps {args.steps}`: each recipe trains {args.steps} steps with its own "
             "settings (no evaluation), one after another; the whole recipe's training time is its epochs x training rows "
             "at that speed (evaluations and generation come on top).", "",
             "| recipe | examples/s | s per 1,000 examples | training rows x epochs | whole recipe's training | to the first step |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['recipe']} | skipped: {r['skipped']} | | | | |")
        else:
            lines.append(f"| {r['recipe']} | {r['examples_per_s']} | {r['s_per_1k']} | {r['train_rows']} x {r['epochs']:g} | "
                         f"{r['recipe_train_min']} min | {r['to_first_step_s']} s |")
    write_md(res / "recipe_times.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
