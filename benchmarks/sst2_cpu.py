"""CPU benchmark: adapterkit vs the raw-PEFT anchor on SST-2 (8,000 examples, 1 epoch, int8 all-MiniLM-L6-v2,
batch 32, max length 66; anchor LoRA r=8 on query/key/value/dense, adapterkit as its recipe says), one fresh process per arm.

    python benchmarks/sst2_cpu.py [--ntrain 8000] [--arms anchor,adapterkit,adapterkit_padded,adapterkit_dequant_int8,...]

Arms: the anchor; adapterkit with the recipe as it stands; adapterkit with random batches (no length grouping);
one arm per speed/memory switch (SWITCH_ARMS: int8 matmul path, gradient checkpointing, torch.compile).

Writes benchmarks/results/sst2_cpu.{json,md}: examples/s, peak RSS, validation accuracy and ratios against the anchor.
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
from _measure import add_ratios, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ANCHOR = SHARED / "anchors" / "cpu_sst2_anchor.py"

ADAPTERKIT_ARM = '''
import json, sys
from adapterkit.cli import quiet_libraries
quiet_libraries()
from adapterkit.config import resolve_paths
from adapterkit.model import load_recipe
from adapterkit.training import train
overrides = json.loads(sys.argv[1])
final = train(resolve_paths(load_recipe("{recipe}", overrides)))
print(json.dumps(dict(ex_per_s=final["train"]["examples_per_s"], train_s=final["train"]["seconds"],
                      val_acc=final["validation"]["accuracy"], steps=final["train"]["steps"])))
'''


SWITCH_ARMS = {
    "adapterkit_bnb_int8": "backbone.int8_matmul=bitsandbytes",
    "adapterkit_dequant_int8": "backbone.int8_matmul=dequantize",
    "adapterkit_grad_ckpt": "backbone.gradient_checkpointing=true",
    "adapterkit_compile": "training.compile=true",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntrain", type=int, default=8000)
    ap.add_argument("--arms", default="anchor,adapterkit,adapterkit_padded," + ",".join(SWITCH_ARMS))
    args = ap.parse_args()
    if not (SHARED / "data" / "sst2").is_dir():
        sys.exit(f"SST-2 not found under {SHARED / 'data'}: this benchmark needs the shared data folder")
    sst2 = SHARED / "data" / "sst2"
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-bench-"))
    arm_script = tmp / "arm.py"
    arm_script.write_text(ADAPTERKIT_ARM.format(recipe=ROOT / "recipes" / "sst2-lora-int8.yaml"))
    common = [f"data.train={sst2 / 'train.tsv'}", f"data.validation={sst2 / 'validation.tsv'}",
              f"data.max_train_samples={args.ntrain}", "training.eval_every=100000", "training.overwrite=true"]
    arms = {
        "anchor": lambda: run_script([str(ANCHOR), "lora_int8"], env={"NTRAIN": str(args.ntrain), "DATA": str(sst2)}),
        "adapterkit": lambda: run_script([str(arm_script), json.dumps(common + [f"training.output_dir={tmp / 'a'}"])]),
        # Same as adapterkit but with random (not length-grouped) batches, to show what grouping buys.
        "adapterkit_padded": lambda: run_script([str(arm_script), json.dumps(common + [f"training.output_dir={tmp / 'b'}",
                                                                                    "training.group_by_length=false"])]),
    }
    # One arm per speed/memory switch, each flipped against the recipe as it stands (issue #7).
    for name, setting in SWITCH_ARMS.items():
        arms[name] = (lambda name=name, setting=setting: run_script(
            [str(arm_script), json.dumps(common + [f"training.output_dir={tmp / name}", setting])]))
    results = {}
    for name in args.arms.split(","):
        t = time.time()
        results[name] = arms[name]()
        results[name]["wall_s"] = round(time.time() - t, 1)
        print(name, json.dumps(results[name]), flush=True)
    base = results.get("anchor", {})
    add_ratios(results, base, "anchor")
    out = {"benchmark": "sst2_cpu", "ntrain": args.ntrain, "machine": platform.processor() or platform.machine(),
           "when": time.strftime("%Y-%m-%d %H:%M"), "arms": results}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "sst2_cpu.json").write_text(json.dumps(out, indent=1))
    rows = ["| arm | examples/s | x anchor | peak RSS MiB | x anchor | val acc | acc - anchor |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r.get('ex_per_s')} | {r.get('speed_vs_anchor', '')} | {r.get('peak_rss_mib')} | "
                    f"{r.get('rss_vs_anchor', '')} | {r.get('val_acc')} | {r.get('acc_minus_anchor', '')} |")
    md = (f"# SST-2 on CPU: adapterkit vs raw PEFT\n\n{args.ntrain} training examples, 1 epoch, int8 all-MiniLM-L6-v2, LoRA (recipe: r=16), "
          f"batch 32, max length 66; one fresh process per arm, one run ({out['when']}).\n\n" + "\n".join(rows) + "\n")
    (res / "sst2_cpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
