"""CPU benchmark: adapterkit vs the raw-PEFT anchor on SST-2 (8,000 examples, 1 epoch, int8 all-MiniLM-L6-v2,
batch 32, max length 66; anchor LoRA r=8 on query/key/value/dense, adapterkit as its recipe says), one fresh process per arm.

    python benchmarks/sst2_cpu.py [--ntrain 8000] [--arms anchor,adapterkit,adapterkit_fp32,adapterkit_full,...]

Arms: the anchor; each adapterkit arm is the user's command, `adapterkit train recipes/sst2-lora-int8.yaml --set ...`:
the recipe as it stands, in float32, as full fine-tuning, with random batches (no length grouping), and one arm per
speed/memory switch (SWITCH_ARMS: bitsandbytes' int8 matmul, gradient checkpointing, torch.compile).

Writes benchmarks/results/sst2_cpu.{json,md}: examples/s, whole-command wall time, peak RSS, validation accuracy,
achieved FLOP/s against the matrix-product peak measured in the same run, and ratios against the anchor.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import add_ratios, pick, run_script  # noqa: E402
from _roofline import matmul_peaks, training_flops  # noqa: E402

from adapterkit.training.loop import cpu_has_bf16  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ANCHOR = SHARED / "anchors" / "cpu_sst2_anchor.py"

SWITCH_ARMS = {
    "adapterkit_bnb_int8": ["backbone.int8_matmul=bitsandbytes"],
    "adapterkit_grad_ckpt": ["backbone.gradient_checkpointing=true"],
    "adapterkit_compile": ["training.compile=true"],
}
ARMS = {
    "adapterkit": [],                                         # the recipe as shipped (mixed_precision auto: bf16 here)
    "adapterkit_fp32": ["training.mixed_precision=no"],
    "adapterkit_full": ["adapter.method=full", "backbone.quantization=none", "training.lr=5e-5"],
    # Random (not length-grouped) batches, to show what grouping buys.
    "adapterkit_padded": ["training.group_by_length=false"],
    **SWITCH_ARMS,
}
DEFAULT_ARMS = "anchor,adapterkit,adapterkit_fp32,adapterkit_full"


def flops_of(run_dir: Path) -> dict:
    """Training FLOPs of a finished run from its model's shapes and the real (unpadded) tokens it trained on."""
    from adapterkit import data as data_mod
    from adapterkit.data.loaders import lengths
    from adapterkit.heads import HEADS
    from adapterkit.model import build, load_recipe
    from adapterkit.model.backbone import load_tokenizer

    recipe = load_recipe(run_dir / "recipe.yaml")
    tok = load_tokenizer(recipe.backbone)
    prepared = data_mod.prepare(recipe, tok, HEADS[recipe.task.type])
    model, _ = build(recipe, prepared.labels, tokenizer=tok)
    train = prepared.splits["train"]
    tokens = sum(lengths(train)) * recipe.training.epochs
    return dict(real_tokens=tokens, flops=training_flops(model, len(train) * recipe.training.epochs, tokens))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntrain", type=int, default=8000)
    ap.add_argument("--render", action="store_true", help="rewrite the tables from benchmarks/results/sst2_cpu.json")
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"default {DEFAULT_ARMS}; also adapterkit_padded and {', '.join(SWITCH_ARMS)}")
    args = ap.parse_args()
    if not (SHARED / "data" / "sst2").is_dir():
        sys.exit(f"SST-2 not found under {SHARED / 'data'}: this benchmark needs the shared data folder")
    sst2 = SHARED / "data" / "sst2"
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-bench-"))
    cli = Path(sys.executable).with_name("adapterkit")
    common = [f"data.train={sst2 / 'train.tsv'}", f"data.validation={sst2 / 'validation.tsv'}",
              f"data.max_train_samples={args.ntrain}", "data.test=null", "training.eval_every=100000", "training.overwrite=true"]

    def adapterkit_arm(name):
        out = tmp / name
        sets = [x for kv in common + [f"training.output_dir={out}"] + ARMS[name] for x in ("--set", kv)]
        r = run_script([str(cli), "train", str(ROOT / "recipes" / "sst2-lora-int8.yaml"), *sets])
        if (out / "metrics.json").is_file():
            m = json.loads((out / "metrics.json").read_text())
            r.update(ex_per_s=m["train"]["examples_per_s"], train_s=m["train"]["seconds"], val_acc=m["validation"]["accuracy"],
                     steps=m["train"]["steps"], timings=m.get("timings"), run=out)
        return r

    arms = {"anchor": lambda: run_script([str(ANCHOR), "lora_int8"], env={"NTRAIN": str(args.ntrain), "DATA": str(sst2)})}
    arms.update({name: (lambda name=name: adapterkit_arm(name)) for name in ARMS})
    peaks = None if args.render else matmul_peaks()
    results = {}
    if args.render:  # the tables again from the saved results, nothing re-run
        saved = json.loads((ROOT / "benchmarks" / "results" / "sst2_cpu.json").read_text())
        results, peaks, args.arms = saved["arms"], saved["peak_gflops"], saved["command"].split("--arms ")[1]
    for name in [] if args.render else pick(args.arms, arms, "--arms"):
        t = time.time()
        results[name] = arms[name]()
        results[name]["wall_s"] = round(time.time() - t, 1)  # the whole command, process start to exit
        print(name, json.dumps(results[name], default=str), flush=True)
    for name, r in results.items():
        if r.get("run") is not None and not args.render:
            r.update(flops_of(r.pop("run")))
            dtype = "float32" if "training.mixed_precision=no" in ARMS[name] else ("bfloat16" if cpu_has_bf16() else "float32")
            r.update(compute_dtype=dtype, achieved_gflops=round(r["flops"] / r["train_s"] / 1e9, 1))
            r["share_of_peak"] = round(r["achieved_gflops"] / peaks[dtype], 3)
    base = results.get("anchor", {})
    add_ratios(results, base, "anchor")
    for r in results.values():
        if base.get("wall_s") and r.get("wall_s"):
            r["wall_vs_anchor"] = round(base["wall_s"] / r["wall_s"], 2)  # > 1: the command finishes sooner
    if "adapterkit" in results and "adapterkit_full" in results and results["adapterkit_full"].get("ex_per_s"):
        results["adapterkit"]["speed_vs_full"] = round(results["adapterkit"]["ex_per_s"] / results["adapterkit_full"]["ex_per_s"], 2)
    out = {"benchmark": "sst2_cpu", "ntrain": args.ntrain, "machine": platform.processor() or platform.machine(),
           "when": saved["when"] if args.render else time.strftime("%Y-%m-%d %H:%M"), "peak_gflops": peaks, "command": f"python benchmarks/sst2_cpu.py --arms {args.arms}",
           "arms": results}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "sst2_cpu.json").write_text(json.dumps(out, indent=1))
    rows = ["| arm | examples/s | x anchor | whole command s | x anchor | peak RSS MiB | x anchor | val acc (final weights) | "
            "acc - anchor | GFLOP/s | share of peak |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r.get('ex_per_s')} | {r.get('speed_vs_anchor', '')} | {r.get('wall_s')} | {r.get('wall_vs_anchor', '')} | "
                    f"{r.get('peak_rss_mib')} | {r.get('rss_vs_anchor', '')} | {r.get('val_acc')} | {r.get('acc_minus_anchor', '')} | "
                    f"{r.get('achieved_gflops', '')} | {r.get('share_of_peak', '')} |")
    parts = list(dict.fromkeys(k for r in results.values() for k in (r.get("timings") or {})))  # the command's order
    trows = ["| arm | " + " | ".join(parts) + " |", "|---" * (len(parts) + 1) + "|"]
    for name, r in results.items():
        if r.get("timings"):
            trows.append(f"| {name} | " + " | ".join(str(r["timings"].get(k, "")) for k in parts) + " |")
    md = (f"# SST-2 on CPU: adapterkit vs raw PEFT\n\n`{out['command']}`: {args.ntrain} training examples, 1 epoch, int8 "
          f"all-MiniLM-L6-v2, LoRA (anchor r=8 on query/key/value/dense; adapterkit as its recipe says, r=16), batch 32, max "
          f"length 66; one fresh process per arm, one run ({out['when']}). Whole command: process start to exit. Accuracy: "
          f"final weights on the 872 validation examples (neither side selects a checkpoint). FLOP/s: training FLOPs from the "
          f"model's linear shapes and the real (unpadded) tokens trained, over the training loop's time, against a 2048^3 "
          f"matrix product measured in this run (float32 {peaks['float32']}, bfloat16 {peaks['bfloat16']} GFLOP/s) in the "
          f"arm's compute dtype.\n\n" + "\n".join(rows) +
          f"\n\nLoRA (the recipe) vs adapterkit's own full fine-tuning, examples/s: "
          f"{results.get('adapterkit', {}).get('speed_vs_full', 'not run')}x.\n\n"
          f"Where an adapterkit command's time goes (seconds, metrics.json `timings`):\n\n" + "\n".join(trows) + "\n")
    (res / "sst2_cpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
