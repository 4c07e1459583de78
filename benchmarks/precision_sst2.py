"""bf16 autocast vs float32 on CPU, and LoRA dropout 0.05 vs 0, for the SST-2 LoRA recipe (8-bit all-MiniLM-L6-v2,
8,000 training examples, 1 epoch), 3 seeds each, scored on final weights on validation and on the held-out test split.

    python benchmarks/precision_sst2.py [--seeds 3] [--arms bf16,fp32,bf16_dropout0,fp32_dropout0]

Every arm is `adapterkit train recipes/sst2-lora-int8.yaml --seeds N` with `--set` overrides; an arm whose summary
exists is read, not retrained. Writes benchmarks/results/precision_sst2.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _measure import adapterkit, pick

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = "recipes/sst2-lora-int8.yaml"
WORK = ROOT / "runs" / "bench-precision-sst2"
OUT = ROOT / "benchmarks" / "results"
ARMS = {
    "bf16": ["training.mixed_precision=bf16", "adapter.dropout=0.05"],
    "fp32": ["training.mixed_precision=no", "adapter.dropout=0.05"],
    "bf16_dropout0": ["training.mixed_precision=bf16", "adapter.dropout=0"],
    "fp32_dropout0": ["training.mixed_precision=no", "adapter.dropout=0"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", default=",".join(ARMS))
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: SST-2 not found (see ../shared/data/README)")
    WORK.mkdir(parents=True, exist_ok=True)
    path = OUT / "precision_sst2.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    common = ["--set", "data.max_train_samples=8000", "--set", "training.eval_every=100000", "--set", f"data.test={DATA / 'test.tsv'}"]
    for arm in pick(a.arms, ARMS, "--arms"):
        out = WORK / arm
        if arm in res and res[arm].get("seeds") == a.seeds:
            continue
        sets = [x for s in ARMS[arm] for x in ("--set", s)]
        secs = adapterkit(["train", RECIPE, "--seeds", str(a.seeds), "-o", str(out), *common, *sets], WORK / f"{arm}.log", ROOT)
        summary = json.loads((out / "summary.json").read_text())["summary"]
        res[arm] = {k: summary[k] for k in ("validation/accuracy", "test/accuracy", "train/examples_per_s") if k in summary}
        res[arm].update(seeds=a.seeds, settings=ARMS[arm], wall_s=secs)
        path.write_text(json.dumps(res, indent=1))
    ms = lambda x: f"{x['mean']:.4f} ± {x['sd']:.4f}"
    rows = ["| arm | settings | validation acc | test acc | examples/s |", "|---|---|---|---|---|"]
    for arm, r in res.items():
        rows.append(f"| {arm} | {', '.join(r['settings'])} | {ms(r['validation/accuracy'])} | {ms(r['test/accuracy'])} | "
                    f"{r['train/examples_per_s']['mean']:.1f} |")
    md = (f"# bf16 vs float32 on CPU, LoRA dropout 0.05 vs 0 (SST-2, LoRA, int8 all-MiniLM-L6-v2)\n\n"
          f"`python benchmarks/precision_sst2.py --seeds {a.seeds}`: `adapterkit train {RECIPE} --seeds {a.seeds}` per arm, "
          f"8,000 training examples, 1 epoch, batch 32, final weights (no checkpoint selection), validation 872, "
          f"test 1,821; mean ± sd over seeds 0..{a.seeds - 1}.\n\n" + "\n".join(rows) + "\n")
    (OUT / "precision_sst2.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
