"""Why the CoNLL recipe collapsed on a sparse-entity set (issue #43): one factor at a time, seeds x threads.

    python benchmarks/sparse_ner_cause.py --arms old,old_lr1e-3,old_warmup0.2,dense_old,recipe,full --threads 1,2 --jobs 2

Every arm is `adapterkit train recipes/conll2003-lora-int8.yaml` on the sparse_rare set of
benchmarks/robustness_grid.py (2,700 CoNLL-2003 train sentences, 80% without an entity; validation and test 800 each
at the same density), 3 epochs, with the arm's `--set` overrides; `old` is the recipe the issue ran (LoRA r 16,
alpha 32, lr 2e-3, warmup 0.06) with the guard only warning. `dense_old` trains `old` on 2,700 sentences drawn from all
of CoNLL-2003 train (its natural density: 79% with an entity) and is scored on the same sparse validation and test.
Each seed runs in its own process on the arm's thread count; two at once with --jobs 2 (one thread each, or one job
on two threads). Reported: validation entity F1 of the final weights per epoch, test F1, the predicted share of `O`
at the last evaluation, the guard's warnings and recoveries. Writes benchmarks/results/sparse_ner_cause.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import pick, write_md  # noqa: E402
from robustness_grid import OUT, ROOT, SHARED, WORK, collapsed, run_seed, sentences, write_sparse_rare  # noqa: E402

RECIPE = "recipes/conll2003-lora-int8.yaml"
PLAIN = "task.o_weight=1"
HEAD1X = "training.head_lr=null"  # the token loss before issue #43: every tag weighs 1
OLD = ["adapter.r=16", "adapter.alpha=32", "adapter.use_rslora=false", "training.lr=2e-3",
       "training.warmup_ratio=0.06", "training.on_collapse=warn", PLAIN]
ARMS = {
    "old": OLD,  # `old` written out in the table's first row
    "old_lr1e-3": [*OLD, "training.lr=1e-3"],
    "old_lr5e-4": [*OLD, "training.lr=5e-4"],
    "old_warmup0.2": [*OLD, "training.warmup_ratio=0.2"],
    "old_head_lr0.1x": [*OLD, "training.head_lr=2e-4"],
    "old_o_auto": [*OLD, "task.o_weight=auto"],
    "dense_old": OLD,
    # Since issue #43 the recipe's head trains at 1e-2; HEAD1X is the recipe as it was (the head at training.lr)
    "recipe_o1": [HEAD1X, PLAIN],
    "recipe_o1_warn": [HEAD1X, "training.on_collapse=warn", PLAIN],
    "recipe_head1x": [HEAD1X],
    "recipe_head1x_o0.1": [HEAD1X, "task.o_weight=0.1"],
    "recipe_head1x_lr1.5e-3": [HEAD1X, "training.lr=1.5e-3"],
    "recipe": [],
    "recipe_lr2e-3": ["training.lr=2e-3"],
    "full_o1": ["adapter.method=full", "backbone.quantization=none", "training.lr=1e-4", "training.warmup_ratio=0.06", PLAIN],
    "full": ["adapter.method=full", "backbone.quantization=none", "training.lr=1e-4", "training.warmup_ratio=0.06"],
}


def dense_train(dest: Path, n: int = 2700) -> Path:
    rows = sentences(SHARED / "conll2003" / "train.txt")
    random.Random(43).shuffle(rows)
    (dest / "dense_train.txt").write_text("\n\n".join("\n".join(s) for s in rows[:n]) + "\n")
    return dest / "dense_train.txt"


def evals(run: Path) -> list[dict]:
    return [e for e in (json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip())
            if e.get("event") == "eval"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="old,recipe,full")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    work = WORK / "sparse_cause"
    files, stats = write_sparse_rare(WORK / "sparse_rare")
    dense = dense_train(WORK / "sparse_rare")
    done = work / "results.json"
    work.mkdir(parents=True, exist_ok=True)
    res = json.loads(done.read_text()) if done.exists() else {}
    jobs = []
    for arm in pick(a.arms, ARMS, "--arms"):
        for threads in a.threads.split(","):
            for seed in map(int, a.seeds.split(",")):
                key = f"{arm}/t{threads}/seed{seed}"
                if key in res:
                    continue
                data = {**files, "train": dense if arm.startswith("dense") else files["train"]}
                over = [*(f"data.{k}={v}" for k, v in data.items()), "training.epochs=3", "training.overwrite=true",
                        "training.checkpoint_every=null", *ARMS[arm], f"training.seed={seed}"]
                out = work / key.replace("/", "-")
                jobs.append(dict(cell=key, seed=seed, threads=threads, metric="f1", out=out, log=out.with_name(out.name + ".log"),
                                 argv=["train", RECIPE, "-o", str(out), *[x for o in over for x in ("--set", o)]]))
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futures = {pool.submit(run_seed, j): j for j in jobs}
        for f in as_completed(futures):
            j, r = futures[f], f.result()
            if r["code"] == 0:
                r["curve"] = [round(e["f1"], 4) for e in evals(j["out"])]
            res[j["cell"]] = r
            print(j["cell"], json.dumps(r), flush=True)
            done.write_text(json.dumps(res, indent=1, sort_keys=True))
    render(res, stats)


def settings(arm: str) -> str:
    """An arm's overrides as the difference from `old` where it starts from it."""
    extra = ARMS[arm][len(OLD):] if ARMS[arm][: len(OLD)] == OLD else None
    if extra is not None:
        return "`old`" + (" + `" + " ".join(extra) + "`" if extra else "") + (", dense data" if arm.startswith("dense") else "")
    if arm.startswith("recipe"):
        return "the recipe" + (" + `" + " ".join(ARMS[arm]) + "`" if ARMS[arm] else " as shipped")
    return f"`{' '.join(ARMS[arm])}`"


def render(res: dict, stats: dict) -> None:
    groups: dict[str, list] = {}
    for key, r in res.items():
        arm, threads, _ = key.split("/")
        groups.setdefault(f"{arm}/{threads}", []).append(r)
    lines = ["| arm | settings | threads | validation F1, final weights (seeds) | mean | test F1 (seeds) | test mean | "
             "F1 per epoch | guard fired | collapsed | recoveries |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (list(ARMS).index(k.split("/")[0]), k)):
        rs = sorted(groups[key], key=lambda r: r["seed"])
        arm, threads = key.split("/")
        vals = [r["value"] for r in rs]
        tests = [r["test"] if r["test"] is not None else 0.0 for r in rs]
        curves = "; ".join(" ".join(f"{v:.2f}" for v in r.get("curve", [])) for r in rs)
        lines.append(f"| {arm} | {settings(arm)} | "
                     f"{threads[1:]} | {', '.join(f'{v:.4f}' for v in vals)} | {statistics.mean(vals):.4f} | "
                     f"{', '.join(f'{v:.4f}' for v in tests)} | {statistics.mean(tests):.4f} | {curves} | "
                     f"{', '.join(str(r['seed']) for r in rs if r['warnings']) or 'none'} | "
                     f"{', '.join(str(r['seed']) for r in rs if collapsed(r)) or 'none'} | "
                     f"{', '.join(str(r['recoveries']) for r in rs)} |")
    md = (f"# Sparse-entity NER: what makes the CoNLL recipe collapse (issue #43)\n\n`python benchmarks/sparse_ner_cause.py` "
          f"(last runs {time.strftime('%Y-%m-%d %H:%M')}), int8 all-MiniLM-L6-v2, 3 epochs, batch 16. Data (sparse_rare): "
          f"{json.dumps(stats)}. `old` = LoRA r 16 alpha 32 lr 2e-3 warmup 0.06, the recipe the issue ran; `recipe` = "
          "recipes/conll2003-lora-int8.yaml as shipped (rsLoRA r 64, lr 1e-3, on_collapse: recover, and since issue #43 "
          "task.o_weight: auto and the head at lr 1e-2); `head1x`: the head at the adapter's lr (the recipe before); `_o1`: with every tag weighing 1 in the loss (the loss before); `full` = full "
          "fine-tuning, lr 1e-4. A seed is collapsed when its final model is degenerate (exit 3 after the last recovery, "
          "a collapse warning without recovery, or F1 0).\n\n" + "\n".join(lines) + "\n")
    write_md(OUT / "sparse_ner_cause.md", md)
    (OUT / "sparse_ner_cause.json").write_text(json.dumps(dict(data=stats, runs=res), indent=1, sort_keys=True))
    print(md)


if __name__ == "__main__":
    main()
