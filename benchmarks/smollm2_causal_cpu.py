"""SmolLM2-135M-Instruct LoRA causal LM on CPU (WebNLG, 320 training pairs in the chat template, 1 epoch, batch 8):
examples/s and peak RSS of `adapterkit train recipes/smollm2-webnlg-lora-int8.yaml`, int8 and float32 backbones,
with this checkout's code ("after") and with the code of an earlier commit ("before", run from a git worktree of
it), in one run, on the same data and settings.

    python benchmarks/smollm2_causal_cpu.py [--before 84c8bc9] [--train-samples 320] [--arms after_int8,after_fp32,before_int8,before_fp32]

Validation is off (no evaluation, no generation): the table is about training. Writes
benchmarks/results/smollm2_causal_cpu.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import pick, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "webnlg"
RECIPE = ROOT / "recipes" / "smollm2-webnlg-lora-int8.yaml"
OUT = ROOT / "benchmarks" / "results"
BACKBONES = {"int8": [], "fp32": ["backbone.quantization=none"],
             # this checkout's defaults but without gradient checkpointing (on by default for causal LM since #22)
             "int8-nockpt": ["backbone.gradient_checkpointing=false"]}
ARM = "import sys\nsys.path.insert(0, {src!r})\nfrom adapterkit.cli import main\nsys.argv = ['adapterkit', *sys.argv[1:]]\nmain()\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="84c8bc9", help="the commit whose code is 'before'")
    ap.add_argument("--train-samples", type=int, default=320)
    ap.add_argument("--arms", default="after_int8,after_int8-nockpt,before_int8,after_fp32,before_fp32")
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: WebNLG not found (see ../shared/data/README)")
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-smollm2-"))
    before = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), a.before], check=True, capture_output=True)
    sources = {"after": ROOT, "before": before}
    try:
        results = {}
        for arm in pick(a.arms, [f"{c}_{b}" for c in sources for b in BACKBONES], "--arms"):
            code, backbone = arm.split("_", 1)
            script = tmp / f"{code}.py"
            script.write_text(ARM.format(src=str(sources[code])))
            out = tmp / arm
            sets = [f"data.train={DATA / 'train.jsonl'}", "data.validation=null", "data.test=null",
                    f"data.max_train_samples={a.train_samples}", f"training.output_dir={out}", "training.overwrite=true",
                    "training.checkpoint_every=null", *BACKBONES[backbone]]
            t = time.time()
            r = run_script([str(script), "train", str(RECIPE), *[x for s in sets for x in ("--set", s)]], cwd=str(sources[code]))
            r["wall_s"] = round(time.time() - t, 1)
            if (out / "metrics.json").is_file():
                m = json.loads((out / "metrics.json").read_text())
                r.update(ex_per_s=m["train"]["examples_per_s"], train_s=m["train"]["seconds"], steps=m["train"]["steps"],
                         peak_rss_by_part=m.get("peak_rss_mib"), timings=m.get("timings"))
            results[arm] = r
            print(arm, json.dumps(r), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)
    for b in BACKBONES:
        old, new = results.get(f"before_{b.split('-')[0]}", {}), results.get(f"after_{b}", {})
        if old.get("ex_per_s") and new.get("ex_per_s"):
            new["speed_vs_before"] = round(new["ex_per_s"] / old["ex_per_s"], 2)
            new["rss_vs_before"] = round(new["peak_rss_mib"] / old["peak_rss_mib"], 2)
    res = {"benchmark": "smollm2_causal_cpu", "when": time.strftime("%Y-%m-%d %H:%M"), "before": a.before,
           "train_samples": a.train_samples, "command": f"python benchmarks/smollm2_causal_cpu.py --before {a.before} "
           f"--train-samples {a.train_samples} --arms {a.arms}", "arms": results}
    (OUT / "smollm2_causal_cpu.json").write_text(json.dumps(res, indent=1))
    rows = ["| arm | examples/s | x before | peak RSS MiB | x before | whole command s | error |", "|---|---|---|---|---|---|---|"]
    for arm, r in results.items():
        rows.append(f"| {arm} | {r.get('ex_per_s')} | {r.get('speed_vs_before', '')} | {r.get('peak_rss_mib')} | "
                    f"{r.get('rss_vs_before', '')} | {r.get('wall_s')} | {r.get('error', '')} |")
    md = (f"# SmolLM2-135M LoRA causal LM on CPU: before and after\n\n`{res['command']}` ({res['when']}): "
          f"{a.train_samples} WebNLG training pairs (seeded subset) in the chat template, 1 epoch, batch 8, max length 320, "
          f"LoRA r=16 (recipe {RECIPE.relative_to(ROOT)}), no evaluation; 'before' is the code of commit {a.before}, "
          f"'after' this checkout, each in a fresh process.\n\n" + "\n".join(rows) + "\n")
    (OUT / "smollm2_causal_cpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
