"""AdapterFusion on a low-resource target (issue #45): does fusing adapters trained on other tasks beat the
single-task adapter on 500 SST-2 training examples?

    python benchmarks/fusion_sst2.py [--seeds 0,1,2] [--arms single,fusion,fusion_other] [--jobs 2]

Sources (bottleneck adapters, every default: Pfeiffer, size 64, on the int8 all-MiniLM-L6-v2; trained once, seed 0):
- sst2: SST-2 sentiment on 8,000 training sentences disjoint from the target's 500 (recipes/sst2-lora-int8.yaml);
- types: which entity types a CoNLL-2003 sentence mentions (examples/conll_derived.py, multi-label;
  recipes/conll2003-entity-types-multilabel.yaml), 6,000 training sentences;
- count: how many entities it mentions (regression; recipes/conll2003-entity-count-regression.yaml), 6,000 sentences;
- reviews: the product-review sentiment of examples/reviews (a domain adapter; recipes/demo.yaml).
Target: 500 SST-2 training sentences (fixed draw), 5 epochs, batch 16, lr 1.5e-3 for every arm, evaluated on the
872 validation sentences each epoch (choosing the checkpoint) and scored once on the 1,821 held-out test sentences.
Arms: `single` a new bottleneck adapter; `fusion` fusion over all four sources; `fusion_other` over types, count and
reviews (no SST-2 source). `adapterkit compare ARM-seedN single-seedN --split test` gives each seed's interval.
Each run in its own process; --jobs 2 runs two at once on one thread each. Writes
benchmarks/results/fusion_sst2.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import bad_input, mean_sd, pick, write_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "bench-fusion-sst2"
OUT = ROOT / "benchmarks" / "results"
BOTTLENECK = ["adapter.method=bottleneck"]
SOURCES = {
    "sst2": ("recipes/sst2-lora-int8.yaml", lambda d: [f"data.train={d / 'sst2_other.tsv'}", "data.test=null"]),
    "types": ("recipes/conll2003-entity-types-multilabel.yaml",
              lambda d: [f"data.{s}={d / 'conll-derived' / f'{s}.jsonl'}" for s in ("train", "validation")]
              + ["data.test=null", "data.max_train_samples=6000"]),
    "count": ("recipes/conll2003-entity-count-regression.yaml",
              lambda d: [f"data.{s}={d / 'conll-derived' / f'{s}.jsonl'}" for s in ("train", "validation")]
              + ["data.test=null", "data.max_train_samples=6000"]),
    "reviews": ("recipes/demo.yaml", lambda d: ["data.test=null"]),
}
ARMS = {"single": None, "fusion": ["sst2", "types", "count", "reviews"], "fusion_other": ["types", "count", "reviews"]}
TARGET = ["data.max_train_samples=null", "training.epochs=5", "training.batch_size=16", "training.lr=1.5e-3",
          "training.eval_every=null", "training.warmup_ratio=0.1"]


def write_data() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    lines = (SHARED / "sst2" / "train.tsv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    random.Random(45).shuffle(rows)
    (WORK / "target500.tsv").write_text("\n".join([header, *rows[:500]]) + "\n")
    (WORK / "sst2_other.tsv").write_text("\n".join([header, *rows[500:8500]]) + "\n")
    if not (WORK / "conll-derived" / "train.jsonl").is_file():
        subprocess.run([sys.executable, "examples/conll_derived.py", "--src", str(SHARED / "conll2003"), "--out",
                        str(WORK / "conll-derived")], cwd=ROOT, check=True, capture_output=True)


def train(recipe: str, out: Path, sets: list[str], threads: int | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if not (out / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "adapterkit.cli", "train", recipe, "-o", str(out), "--set", "training.overwrite=true",
               *[a for s in sets for a in ("--set", s)]]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{out.name}: failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads((out / "metrics.json").read_text())


def target(arm: str, seed: int, threads: int | None) -> dict:
    sst2 = SHARED / "sst2"
    sets = [*TARGET, f"data.train={WORK / 'target500.tsv'}", f"data.validation={sst2 / 'validation.tsv'}",
            f"data.test={sst2 / 'test.tsv'}", f"training.seed={seed}"]
    if ARMS[arm] is None:
        sets += BOTTLENECK
    else:
        sets += ["adapter.method=fusion", f"adapter.sources={json.dumps([str(WORK / f'src-{s}') for s in ARMS[arm]])}"]
    out = WORK / f"{arm}-seed{seed}"
    t = time.time()
    m = train("recipes/sst2-lora-int8.yaml", out, sets, threads)
    wall = round(time.time() - t, 1)
    # Reloaded from the run folder alone (the sources copied in): the same test accuracy as training reported.
    env = dict(os.environ, HF_HUB_OFFLINE="1", **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    again = subprocess.run([sys.executable, "-m", "adapterkit.cli", "eval", str(out), "--split", "test"], cwd=ROOT,
                           env=env, capture_output=True, text=True)
    reloaded = json.loads(again.stdout)["accuracy"] if again.returncode == 0 else None
    return {"arm": arm, "seed": seed, "run": str(out), "validation": m["validation"]["accuracy"],
            "test": m["test"]["accuracy"], "reloaded_test": reloaded, "train_s": m["train"]["seconds"],
            "examples": m["train"]["examples"], "trainable_params": m["train"]["trainable_params"], "wall_s": wall}


def compare(a: str, b: str, out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "adapterkit.cli", "compare", a, b, "--split", "test", "--out", str(out)],
                   cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return json.loads((out / "compare.json").read_text())["metrics"]["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="single,fusion,fusion_other")
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args()
    if not (SHARED / "sst2").is_dir() or not (SHARED / "conll2003").is_dir():
        bad_input(f"{SHARED}: SST-2 and CoNLL-2003 are needed (see ../shared/data/README)")
    write_data()
    threads = 1 if a.jobs > 1 else None
    arms, seeds = pick(a.arms, ARMS, "--arms"), [int(s) for s in a.seeds.split(",")]
    needed = sorted({s for arm in arms for s in (ARMS[arm] or [])})
    with ThreadPoolExecutor(a.jobs) as pool:
        src = dict(zip(needed, pool.map(lambda s: train(SOURCES[s][0], WORK / f"src-{s}", [*BOTTLENECK, "training.seed=0",
                                                                                          *SOURCES[s][1](WORK)], threads), needed)))
        rows = list(pool.map(lambda job: target(*job, threads), [(arm, seed) for seed in seeds for arm in arms]))
    for r in rows:
        if r["arm"] != "single" and "single" in arms:
            r["vs_single"] = compare(r["run"], str(WORK / f"single-seed{r['seed']}"), WORK / f"compare-{r['arm']}-seed{r['seed']}")
    sources = {s: {k: v for k, v in m.get("validation", {}).items() if isinstance(v, (int, float))} for s, m in src.items()}
    res = {"seeds": seeds, "rows": rows, "sources": sources,
           "arms": {arm: {"validation": mean_sd([r["validation"] for r in rows if r["arm"] == arm]),
                          "test": mean_sd([r["test"] for r in rows if r["arm"] == arm])} for arm in arms}}
    (OUT / "fusion_sst2.json").write_text(json.dumps(res, indent=1))
    render(res)


def render(res: dict) -> None:
    def ms(x):
        return f"{x['mean']:.4f} ± {x['sd']:.4f} ({', '.join(f'{v:.4f}' for v in x['values'])})"

    lines = ["| arm | sources | trainable params | validation acc | test acc | test diff vs single (95% interval), per seed | "
             "reloaded run's test acc equal |", "|---|---|---|---|---|---|---|"]
    for arm, agg in res["arms"].items():
        rows = [r for r in res["rows"] if r["arm"] == arm]
        diffs = "; ".join(f"{r['vs_single']['diff']:+.4f} [{r['vs_single']['low']:+.4f}, {r['vs_single']['high']:+.4f}]"
                          for r in rows if "vs_single" in r)
        lines.append(f"| {arm} | {', '.join(ARMS[arm] or []) or '(none)'} | {rows[0]['trainable_params']:,} | "
                     f"{ms(agg['validation'])} | {ms(agg['test'])} | {diffs} | "
                     f"{all(r['reloaded_test'] == r['test'] for r in rows)} |")
    src = "; ".join(f"{s}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "loss") for s, m in res["sources"].items())
    md = (f"# AdapterFusion on 500 SST-2 examples (int8 all-MiniLM-L6-v2)\n\n`python benchmarks/fusion_sst2.py --seeds "
          f"{','.join(map(str, res['seeds']))}` ({time.strftime('%Y-%m-%d %H:%M')}). Target: 500 SST-2 training sentences, "
          "5 epochs, batch 16, lr 1.5e-3, checkpoint chosen on validation (872), scored once on test (1,821). Sources "
          f"(bottleneck, Pfeiffer 64, seed 0; their own validation scores): {src}.\n\n" + "\n".join(lines) + "\n")
    write_md(OUT / "fusion_sst2.md", md)
    print(md)


if __name__ == "__main__":
    main()
