"""Issue 5 on real data: export, merge and sweep SST-2 LoRA runs (all-MiniLM-L6-v2, int8), against the unmerged
8-bit trained run as the baseline in the same run.

    python benchmarks/export_merge_sst2.py [RUN_SEED0 RUN_SEED1]   # trains the two runs when not given

Steps: train two seeds (8,000 examples, 1 epoch), `adapterkit export` of seed 0 (report: merged-vs-unmerged
logits, metric trained/exported/re-quantized int8), load of the export in a process that never imports
adapterkit (fp32 and int8 on load), `adapterkit merge --method linear` and `cat` of the two seeds with eval,
`adapterkit sweep` of seed 0. Writes benchmarks/results/export_merge_sst2.{json,md}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench-issue5"
RESULTS = ROOT / "benchmarks" / "results"
VAL = ROOT.parent / "shared" / "data" / "sst2" / "validation.tsv"


def sh(*args, **kw) -> tuple[str, float]:
    t0 = time.perf_counter()
    res = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"), **kw)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{res.stderr[-3000:]}")
    return res.stdout, time.perf_counter() - t0


def main():
    ak = [sys.executable, "-m", "adapterkit.cli"]
    runs = [Path(p) for p in sys.argv[1:3]]
    timings = {}
    if not runs:
        for seed in (0, 1):
            run = OUT / f"sst2-seed{seed}"
            _, timings[f"train_seed{seed}_s"] = sh(*ak, "train", "recipes/sst2-lora-int8.yaml", "--set", "data.max_train_samples=8000",
                                                    "--set", f"training.seed={seed}", "--set", "training.overwrite=true", "-o", run)
            runs.append(run)
    trained = [json.loads((r / "metrics.json").read_text())["validation"] for r in runs]
    exp = OUT / "export-seed0"
    _, timings["export_s"] = sh(*ak, "export", runs[0], "--out", exp)
    report = json.loads((exp / "export_report.json").read_text())
    plain, timings["plain_load_s"] = sh(sys.executable, ROOT / "benchmarks" / "load_export_plain.py", exp, VAL)
    plain = json.loads(plain.strip().splitlines()[-1])
    merges = {}
    for method in ("linear", "cat"):
        m = OUT / f"merge-{method}"
        subprocess.run(["rm", "-rf", str(m)])
        out, timings[f"merge_{method}_s"] = sh(*ak, "merge", *runs, "--weights", "0.5,0.5", "--method", method, "--out", m)
        merges[method] = json.loads((m / "metrics.json").read_text())["validation"]
    _, timings["sweep_s"] = sh(*ak, "sweep", runs[0], "--scales", "0,0.25,0.5,0.75,1,1.25", "--out", OUT / "sweep-seed0")
    sweep = json.loads((OUT / "sweep-seed0" / "sweep.json").read_text())
    v = report["verification"]
    result = {"runs": [str(r) for r in runs], "trained_validation": trained, "export_report": report, "plain_transformers": plain,
              "merge": merges, "sweep": sweep, "timings_s": timings,
              "int8_requant_delta_points": v["exported_int8"]["delta_points"],
              "int8_requant_within_0.5_points": abs(v["exported_int8"]["delta_points"]) <= 0.5}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export_merge_sst2.json").write_text(json.dumps(result, indent=1))
    acc = lambda d: f"{d['accuracy']:.4f}"  # noqa: E731
    lines = ["# Issue 5 on SST-2 (all-MiniLM-L6-v2, int8, LoRA r=8, 8,000 training examples)", "",
             "| model | validation accuracy | delta vs trained int8 (points) | agreement with trained |", "|---|---|---|---|",
             f"| trained, unmerged int8 (baseline) | {acc(v['trained']['metrics'])} | 0 | 1 |"]
    for name in ("exported", "exported_int8"):
        lines.append(f"| export {name} | {acc(v[name]['metrics'])} | {v[name]['delta_points']:+.2f} | {v[name]['prediction_agreement']:.4f} |")
    lines += ["", f"merged vs unmerged float32 logits: max {report['merged_vs_unmerged']['max_abs_diff']:.2e}, "
                  f"mean {report['merged_vs_unmerged']['mean_abs_diff']:.2e}",
              f"plain transformers (no adapterkit import): fp32 {plain['as_exported']['accuracy']:.4f}, "
              f"int8 on load {plain['int8_on_load']['accuracy']:.4f}", "",
              "| merge (0.5/0.5 of seeds 0 and 1) | validation accuracy |", "|---|---|",
              f"| seed 0 alone | {acc(trained[0])} |", f"| seed 1 alone | {acc(trained[1])} |"]
    lines += [f"| {k} | {acc(m)} |" for k, m in merges.items()]
    lines += ["", "| adapter scale | accuracy |", "|---|---|"] + [f"| {p['scale']:g} | {p['accuracy']:.4f} |" for p in sweep["points"]]
    (RESULTS / "export_merge_sst2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
