"""Hyperparameter search on SST-2 (LoRA, 8-bit all-MiniLM-L6-v2, 8,000 training examples, 1 epoch) with
`adapterkit tune` (TPE, median pruning at each evaluation), then the default recipe and the best-found recipe each
re-run over 3 seeds and scored on the held-out SST-2 test split, and `adapterkit compare` of the two (seed 0) on it.

The search selects on the validation split, so its best value is optimistic; the seed re-runs and the compare use
the test split, which no choice in this benchmark saw. Every step is the user's command in a subprocess; a step whose
output exists is not redone (rerun to continue).

    python benchmarks/tune_sst2.py [--trials 20]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _measure import adapterkit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = "recipes/sst2-lora-int8.yaml"
SPACE = "recipes/spaces/sst2-lora.yaml"
WORK = ROOT / "runs" / "bench-tune-sst2"
OUT = ROOT / "benchmarks" / "results"
COMMON = ["--set", "data.max_train_samples=8000", "--set", "training.eval_every=50"]


def sh(args: list[str], log: Path) -> float:
    return adapterkit(args, log, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: SST-2 not found (see ../shared/data/README)")
    WORK.mkdir(parents=True, exist_ok=True)
    path = OUT / "tune_sst2.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    test = ["--set", f"data.test={DATA / 'test.tsv'}"]

    def save():  # paths relative to the repository, so the results name no machine
        path.write_text(json.dumps(res, indent=1).replace(str(ROOT.parent / "shared"), "../shared").replace(str(ROOT) + "/", ""))

    study = WORK / "study"
    if "search" not in res:
        secs = sh(["tune", RECIPE, "--space", SPACE, "--trials", str(a.trials), "--metric", "accuracy", "--out", str(study), *COMMON],
                  WORK / "tune.log")
        res["search"] = dict(json.loads((study / "tune.json").read_text()), wall_s=secs)
        save()
    (OUT / "tune_sst2_trials.md").write_text((study / "trials.md").read_text())
    for arm, recipe in (("default", RECIPE), ("best", str(study / "best_recipe.yaml"))):
        if arm not in res:
            out = WORK / arm
            secs = sh(["train", recipe, "--seeds", "3", "-o", str(out), *COMMON, *test], WORK / f"{arm}.log")
            summary = json.loads((out / "summary.json").read_text())["summary"]
            res[arm] = {k: summary[k] for k in ("validation/accuracy", "test/accuracy") if k in summary}
            res[arm]["wall_s"] = secs
            save()
    if "compare" not in res:
        sh(["compare", str(WORK / "best" / "seed-0"), str(WORK / "default" / "seed-0"), "--split", "test", "--out", str(WORK / "compare")],
           WORK / "compare.log")
        res["compare"] = json.loads((WORK / "compare" / "compare.json").read_text())
        save()
    write_md(res, a.trials)


def write_md(res: dict, trials: int) -> None:
    s, d, b, c = res["search"], res["default"], res["best"], res["compare"]
    ms = lambda x: f"{x['mean']:.4f} ± {x['sd']:.4f} ({', '.join(f'{v:.4f}' for v in x['values'])})"
    acc = c["metrics"]["accuracy"]
    lines = ["# Hyperparameter search on SST-2: LoRA, 8-bit all-MiniLM-L6-v2 (CPU)", "",
             f"Command: `python benchmarks/tune_sst2.py --trials {trials}`, which runs `adapterkit tune {RECIPE} --space {SPACE} "
             f"--trials {trials} --metric accuracy` (TPE sampler seed 0, median pruner after 3 trials, an evaluation every 50 "
             f"of the 250 steps), then `adapterkit train RECIPE --seeds 3` for the default and the best-found recipe, then "
             f"`adapterkit compare best/seed-0 default/seed-0 --split test`. Training: 8,000 SST-2 examples (seeded "
             f"subset), 1 epoch, batch 32. The search selects on the validation split (872); the seed re-runs and the "
             f"compare are also scored on the test split (1,821), which no choice here saw.", "",
             f"Search: {s['trials']['complete']} trials completed, {s['trials']['pruned']} pruned early, {s['trials']['fail']} failed; "
             f"wall time {s['wall_s'] / 60:.1f} min. Best trial {s['best']['trial']}: validation accuracy {s['best']['value']:.4f} "
             f"with {json.dumps(s['best']['params'])}.", "",
             f"Parameter importances (optuna's default evaluator): {json.dumps(s.get('importances', {}))}.", "",
             "| recipe | validation accuracy, 3 seeds (mean ± sd) | test accuracy, 3 seeds (mean ± sd) |", "|---|---|---|",
             f"| default ({RECIPE}) | {ms(d['validation/accuracy'])} | {ms(d['test/accuracy'])} |",
             f"| best found | {ms(b['validation/accuracy'])} | {ms(b['test/accuracy'])} |", "",
             f"`adapterkit compare` on the test split (seed 0 of each): accuracy {acc['a']:.4f} vs {acc['b']:.4f}, "
             f"difference {acc['diff']:+.4f}, 95% paired bootstrap interval [{acc['low']:+.4f}, {acc['high']:+.4f}]"]
    if "mcnemar" in c:
        m = c["mcnemar"]
        lines[-1] += f"; McNemar exact p = {m['p']:.4g} (only best right: {m['only_a_correct']}, only default right: {m['only_b_correct']})."
    lines += ["", "Every trial: `tune_sst2_trials.md` (the study's trials.md); wall times were measured on the shared 2-core machine."]
    (OUT / "tune_sst2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
