"""The gap between adapters and full fine-tuning on the held-out test split, by method, over seeds (issue #42).

    python benchmarks/gap_to_full.py --task conll --arms lora,lora_plus,full --seeds 0 --split validation
    python benchmarks/gap_to_full.py --task conll --arms lora_plus,full --seeds 0,1,2 --split test --jobs 2

Every arm is a shipped recipe plus `--set` overrides (ARMS below), trained by `adapterkit train` in its own process
into a kept run folder (`--keep`, default runs/gap_to_full). `--split validation` chooses among arms: the
test file is not given to training at all. `--split test` trains with validation selecting the checkpoint, as the
recipes do, and scores the test split once; then `adapterkit compare ARM-seedN full-seedN --split test` gives the
paired bootstrap interval of each seed's difference. Cost: training examples seen and training seconds per arm,
against full fine-tuning's in the same run. `--jobs 2` runs two processes at once, one thread each (the wall times
are then each process's, on one core). Writes benchmarks/results/gap_to_full_<task>_<split>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import bad_input, mean_sd, pick, write_md  # noqa: E402
from _measure import seeds as parse_seeds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

TASKS = {
    "conll": {
        "recipe": "recipes/conll2003-lora-int8.yaml",
        "metric": "f1",
        "data": DATA / "conll2003",
        "test": "test.txt",
        # the recipe's own validation selects; the test split is held out
        "common": ["training.log_every=200", "training.overwrite=true"],
    },
    "sst2": {
        "recipe": "recipes/sst2-lora-int8.yaml",
        "metric": "accuracy",
        "data": DATA / "sst2",
        "test": "test.tsv",
        # the 8,000-example slice of methods_sst2.py and trainer_sst2.py, where the adapters were compared before
        "common": ["training.overwrite=true", "data.max_train_samples=8000"],
    },
    "webnlg": {
        "recipe": "recipes/smollm2-webnlg-lora-int8.yaml",
        "metric": "bleu",
        "data": DATA / "webnlg",
        "test": "test.jsonl",
        "common": ["training.log_every=50", "training.overwrite=true", "data.max_eval_samples=500"],
    },
}

LORA16 = ["adapter.r=16", "adapter.alpha=32", "adapter.use_rslora=false", "training.lr=2e-3"]  # the recipe until #42

# arm -> (task -> overrides). Full fine-tuning runs on the full-precision backbone (no int8 weights to update).
ARMS = {
    "conll": {  # every LoRA arm spelled out: the shipped recipe's adapter settings are one of these arms
        "lora": ["training.epochs=3", *LORA16],
        "lora_5ep": ["training.epochs=5", *LORA16],
        "lora_fp32": ["training.epochs=3", *LORA16, "backbone.quantization=none"],
        "lora_plus": ["training.epochs=3", *LORA16, "training.lr=5e-4", "adapter.loraplus_lr_ratio=16"],
        "rslora_r64": ["training.epochs=3", "adapter.r=64", "adapter.alpha=16", "adapter.use_rslora=true", "training.lr=1e-3"],
        "rslora_r64_head10x": ["training.epochs=3", "adapter.r=64", "adapter.alpha=16", "adapter.use_rslora=true",
                               "training.lr=1e-3", "training.head_lr=1e-2"],  # issue #43: steadier on sparse entities
        "lora_emb": ["training.epochs=3", *LORA16, "adapter.target_modules=[query,key,value,dense,word_embeddings]"],
        "dora": ["training.epochs=3", *LORA16, "adapter.method=dora"],
        "dora_r64_head10x": ["training.epochs=3", "adapter.r=64", "adapter.alpha=16", "adapter.use_rslora=true",
                             "adapter.use_dora=true", "training.lr=1e-3", "training.head_lr=1e-2"],
        "houlsby_head10x": ["training.epochs=3", "adapter.method=bottleneck", "adapter.placement=houlsby",
                            "adapter.bottleneck_size=64", "training.lr=1e-3", "training.head_lr=1e-2"],
        "full": ["training.epochs=2", "adapter.method=full", "backbone.quantization=none", "training.lr=1e-4"],
    },
    "sst2": {
        "lora": [],  # the shipped recipe
        "full": ["adapter.method=full", "backbone.quantization=none", "training.lr=5e-5"],  # methods_sst2.py's full arm
    },
    "webnlg": {
        "lora": [],
        "lora_plus": ["training.lr=2.5e-4", "adapter.loraplus_lr_ratio=16"],
        "rslora_r64": ["adapter.r=64", "adapter.alpha=16", "adapter.use_rslora=true"],
        "full": ["adapter.method=full", "backbone.quantization=none", "training.lr=5e-5"],
    },
}


def train_arm(task: dict, name: str, overrides: list[str], seed: int, split: str, keep: Path, threads: int | None,
              reuse: bool) -> dict:
    out = keep / f"{name}-seed{seed}"
    sets = [*task["common"], *overrides, f"training.seed={seed}", f"training.output_dir={out}"]
    if split == "validation":
        sets.append("data.test=null")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "adapterkit.cli", "train", task["recipe"]] + [a for s in sets for a in ("--set", s)]
    t = time.time()
    done = out / "metrics.json"
    settings = keep / f"{name}-seed{seed}.settings.json"  # beside the run folder: its own files stay as training left them
    if reuse and done.is_file() and settings.is_file() and json.loads(settings.read_text()) == sets:
        wall = None  # trained by an earlier invocation with the same settings
    else:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = round(time.time() - t, 1)
        if proc.returncode != 0:
            return {"arm": name, "seed": seed, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300], "wall_s": wall}
        settings.write_text(json.dumps(sets))
    m = json.loads((out / "metrics.json").read_text())
    row = {
        "arm": name,
        "seed": seed,
        "run": str(out),
        "examples": m["train"]["examples"],
        "train_s": m["train"]["seconds"],
        "wall_s": wall,
        "trainable_params": m["train"]["trainable_params"],
        "best_step": m["train"].get("best_step"),
        "validation": m.get("validation", {}).get(task["metric"]),
    }
    if split == "test":
        row["test"] = m["test"][task["metric"]]
    print(json.dumps(row), flush=True)
    return row


def compare(a: str, b: str, out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "adapterkit.cli", "compare", a, b, "--split", "test", "--out", str(out)],
                   cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        return json.loads((out / "compare.json").read_text())
    except OSError:
        return {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--arms", default="lora,full")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--split", choices=["validation", "test"], default="validation")
    ap.add_argument("--jobs", type=int, default=1, help="processes at once; more than 1 gives each one thread")
    ap.add_argument("--reuse", action="store_true", help="read a kept run trained with the same settings instead of training")
    ap.add_argument("--keep", type=Path, default=ROOT / "runs" / "gap_to_full")
    ap.add_argument("--results-name", help="benchmarks/results/NAME.{md,json} (default gap_to_full_TASK_SPLIT)")
    args = ap.parse_args()
    task = TASKS[args.task]
    if not task["data"].is_dir():
        bad_input(f"{task['data']} not found: this benchmark needs the shared data folder")
    arms = pick(args.arms, ARMS[args.task], "--arms")
    seeds = parse_seeds(args.seeds)
    if args.jobs < 1:
        bad_input(f"--jobs: {args.jobs}; expected 1 or more processes at once")
    keep = args.keep / f"{args.task}-{args.split}"
    keep.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.jobs > 1 else None
    jobs = [(a, s) for s in seeds for a in arms]
    with ThreadPoolExecutor(args.jobs) as ex:
        rows = list(ex.map(lambda j: train_arm(task, j[0], ARMS[args.task][j[0]], j[1], args.split, keep, threads, args.reuse), jobs))
    summary = summarise(rows, arms, task["metric"], args.split)
    if args.split == "test" and "full" in arms:
        for r in rows:
            if r["arm"] != "full" and "run" in r:
                full = next((f for f in rows if f["arm"] == "full" and f["seed"] == r["seed"] and "run" in f), None)
                if full:
                    c = compare(r["run"], full["run"], keep / f"compare-{r['arm']}-seed{r['seed']}")
                    r["compare"] = c.get("metrics", {}).get(task["metric"], c.get(task["metric"]))
    out = {"benchmark": "gap_to_full", "task": args.task, "split": args.split, "seeds": seeds, "jobs": args.jobs,
           "machine": platform.processor() or platform.machine(), "when": time.strftime("%Y-%m-%d %H:%M"),
           "runs": rows, "summary": summary}
    res = ROOT / "benchmarks" / "results"
    name = args.results_name or f"gap_to_full_{args.task}_{args.split}"
    (res / f"{name}.json").write_text(json.dumps(out, indent=1))
    write_md(res / f"{name}.md", markdown(out, task["metric"]))
    print(json.dumps(summary, indent=1))


def summarise(rows: list[dict], arms: list[str], metric: str, split: str) -> dict:
    full = [r for r in rows if r["arm"] == "full" and "error" not in r]
    out = {}
    for a in arms:
        got = [r for r in rows if r["arm"] == a and "error" not in r]
        if not got:
            continue
        s = {"score": mean_sd([r[split] for r in got]), "examples": got[0]["examples"],
             "train_s": mean_sd([r["train_s"] for r in got])}
        if full and a != "full":
            f_score = sum(r[split] for r in full) / len(full)
            s["minus_full_points"] = round(100 * (s["score"]["mean"] - f_score), 2)
            s["examples_vs_full"] = round(got[0]["examples"] / full[0]["examples"], 2)
            s["train_s_vs_full"] = round(s["train_s"]["mean"] / (sum(r["train_s"] for r in full) / len(full)), 2)
        out[a] = s
    return out


def markdown(out: dict, metric: str) -> str:
    split = out["split"]
    lines = [f"# Gap to full fine-tuning: {out['task']}, {split} {metric} ({out['when']}, {out['machine']})", "",
             f"`python benchmarks/gap_to_full.py --task {out['task']} --split {split} --seeds "
             f"{','.join(map(str, out['seeds']))} --jobs {out['jobs']}`", "",
             f"| arm | {split} {metric} (mean ± sd) | - full (points) | examples | x full | train s | x full |",
             "|---|---|---|---|---|---|---|"]
    for a, s in out["summary"].items():
        sc = s["score"]
        lines.append(f"| {a} | {sc['mean']:.4f} ± {sc['sd']:.4f} (n={len(sc['values'])}) | {s.get('minus_full_points', '')} | "
                     f"{s['examples']} | {s.get('examples_vs_full', '')} | {s['train_s']['mean']:.0f} | {s.get('train_s_vs_full', '')} |")
    lines += ["", "| arm | seed | validation | test | compare vs full (test, 95% interval) | examples | train s | error |",
              "|---|---|---|---|---|---|---|---|"]
    for r in out["runs"]:
        lines.append(f"| {r['arm']} | {r['seed']} | {r.get('validation')} | {r.get('test', '')} | {r.get('compare', '')} | "
                     f"{r.get('examples', '')} | {r.get('train_s', '')} | {r.get('error', '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
