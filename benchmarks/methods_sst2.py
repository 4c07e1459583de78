"""Every adapter method on the same SST-2 subset (8,000 examples, one epoch) on the int8 all-MiniLM-L6-v2, through
adapterkit's own train(), each method in a fresh process; full fine-tuning of the fp32 model is the reference.

    nice -n 5 python benchmarks/methods_sst2.py [--ntrain 8000] [--methods lora,houlsby,...] [--seeds 0,1,2 --out NAME]

Writes benchmarks/results/methods_sst2.{json,md}: validation accuracy, trainable parameters and share, examples/s and
peak RSS per method, and ratios against full fine-tuning measured in the same run. With several seeds (each seed also
draws its own 8,000-example subset) every number is the mean over seeds, and accuracy also gets its spread and
per-seed values: one run moves by about 2 points between seeds, more than most gaps between methods.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import add_ratios, pick, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = ROOT / "recipes" / "sst2-lora-int8.yaml"

# Per-method adapter section, learning rate and batch size (everything else: the recipe above, max length 66).
# These are the settings of the committed results/methods_sst2.md; other bottleneck settings tried are in
# results/bottleneck_tuning.md.
METHODS: dict[str, tuple[dict, float, int]] = {
    "full": ({"method": "full"}, 5e-5, 32),
    "lora": ({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05}, 1.5e-3, 32),
    "dora": ({"method": "dora", "r": 16, "alpha": 32, "dropout": 0.05}, 1.5e-3, 32),
    # rsLoRA scales by alpha/sqrt(r): alpha 8 gives 2 at r=16, the scale of the LoRA row (alpha 32 gave 8 and diverged).
    "rslora": ({"method": "rslora", "r": 16, "alpha": 8, "dropout": 0.05}, 1.5e-3, 32),
    "ia3": ({"method": "ia3"}, 1e-2, 32),
    "prompt_tuning": ({"method": "prompt_tuning", "num_virtual_tokens": 20}, 3e-2, 32),
    "prefix_tuning": ({"method": "prefix_tuning", "num_virtual_tokens": 20}, 1e-2, 32),
    "bottleneck_houlsby": ({"method": "bottleneck", "placement": "houlsby", "bottleneck_size": 64}, 1.5e-3, 16),
    "bottleneck_pfeiffer": ({"method": "bottleneck", "placement": "pfeiffer", "bottleneck_size": 64}, 1.5e-3, 16),
    "bottleneck_parallel": ({"method": "bottleneck", "placement": "parallel", "bottleneck_size": 64, "scaling": 4}, 2e-3, 32),
    # PEFT's wider surface (issue #17): LoRA initialisations and other PEFT types through `adapter.method: peft`.
    "lora_pissa": ({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "init_lora_weights": "pissa"}, 1.5e-3, 32),
    "lora_loftq": ({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "init_lora_weights": "loftq"}, 1.5e-3, 32),
    # LoftQ initialises LoRA against a 4-bit backbone's quantization error: it and its baseline run on NF4.
    "lora_nf4": ({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05}, 1.5e-3, 32),
    # PiSSA starts from the base weights' principal directions: PEFT initialises it on float weights only.
    "lora_fp32": ({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05}, 1.5e-3, 32),
    "lora_pissa_fp32": ({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "init_lora_weights": "pissa"}, 1.5e-3, 32),
    "lora_loftq_nf4": ({"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "init_lora_weights": "loftq"}, 1.5e-3, 32),
    "loha": ({"method": "peft", "peft_type": "loha", "r": 8, "alpha": 16}, 1.5e-3, 32),
    "lokr": ({"method": "peft", "peft_type": "lokr", "r": 8, "alpha": 16}, 1.5e-3, 32),
    "vera": ({"method": "peft", "peft_type": "vera", "r": 256}, 1e-2, 32),
    "adalora": ({"method": "peft", "peft_type": "adalora", "init_r": 12, "target_r": 8, "total_step": 250}, 1.5e-3, 32),
    "oft": ({"method": "peft", "peft_type": "oft", "r": 0, "oft_block_size": 32}, 1.5e-3, 32),
    "ln_tuning": ({"method": "peft", "peft_type": "ln_tuning"}, 5e-3, 32),
}


def overrides_for(name: str) -> list[str]:
    adapter, lr, batch = METHODS[name]
    out = [f"adapter={json.dumps(adapter)}", f"training.lr={lr}", f"training.batch_size={batch}"]
    if adapter["method"] == "full":
        out.append("backbone.quantization=none")
    if name.endswith("_nf4"):
        out.append("backbone.quantization=nf4")
    if name.endswith("_fp32"):
        out.append("backbone.quantization=none")
    return out


ARM = '''
import json, sys
from pathlib import Path
from adapterkit.cli import quiet_libraries
quiet_libraries()
from adapterkit.config import resolve_paths
from adapterkit.model import load_recipe
from adapterkit.training import train
overrides = json.loads(sys.argv[1])
recipe = resolve_paths(load_recipe(sys.argv[2], overrides))
final = train(recipe)
run = json.loads((Path(recipe.training.output_dir) / "run.json").read_text())
print(json.dumps(dict(val_acc=final["validation"]["accuracy"], ex_per_s=final["train"]["examples_per_s"],
                      train_s=final["train"]["seconds"], steps=final["train"]["steps"],
                      trainable_params=run["trainable_params"], total_params=run["total_params"])))
'''


def mean_over_seeds(rs: list[dict]) -> dict:
    """One method's runs over seeds -> their means (accuracy also per seed and its standard deviation)."""
    bad = [r for r in rs if "error" in r]
    if bad:
        return dict(bad[0], seeds_failed=[r.get("seed") for r in bad])
    out = {k: rs[0][k] for k in ("trainable_params", "total_params", "steps")}
    for k in ("val_acc", "ex_per_s", "train_s", "peak_rss_mib", "wall_s"):
        out[k] = round(statistics.fmean(r[k] for r in rs), 6 if k == "val_acc" else 2)
    out["val_acc_per_seed"] = [r["val_acc"] for r in rs]
    out["val_acc_sd"] = round(statistics.stdev(out["val_acc_per_seed"]), 6) if len(rs) > 1 else 0.0
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntrain", type=int, default=8000)
    ap.add_argument("--nval", type=int, default=None, help="Validation examples (all 872 by default; fewer only for a smoke run).")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0", help="Comma list of training seeds; numbers are means over them.")
    ap.add_argument("--out", default="methods_sst2", help="Result file stem under benchmarks/results/.")
    args = ap.parse_args()
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        sys.exit(f"--seeds: expected a comma list of integers, got {args.seeds!r}")
    names = pick(args.methods, METHODS, "--methods")
    if not SST2.is_dir():
        sys.exit(f"SST-2 not found at {SST2}: this benchmark needs the shared data folder beside the repository")
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-methods-"))
    arm = tmp / "arm.py"
    arm.write_text(ARM)
    common = [f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'validation.tsv'}", f"data.max_train_samples={args.ntrain}",
              "training.eval_every=100000", "training.overwrite=true", "training.epochs=1"]
    if args.nval:
        common.append(f"data.max_eval_samples={args.nval}")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds:
        for name in runs:
            t = time.time()
            overrides = common + overrides_for(name) + [f"training.output_dir={tmp / name}", f"training.seed={seed}"]
            r = run_script([str(arm), json.dumps(overrides), str(RECIPE)], timeout=3600)
            r.update(seed=seed, wall_s=round(time.time() - t, 1))
            runs[name].append(r)
            print(name, json.dumps(r), flush=True)
    results = {name: dict(mean_over_seeds(rs), adapter=METHODS[name][0], lr=METHODS[name][1], batch=METHODS[name][2])
               for name, rs in runs.items()}
    add_ratios(results, results.get("full", {}), "full")
    for r in results.values():
        if r.get("trainable_params") and r.get("total_params"):
            r["trainable_share"] = round(r["trainable_params"] / r["total_params"], 6)
    out = {"benchmark": "methods_sst2", "ntrain": args.ntrain, "seeds": seeds, "nval": args.nval or "all", "machine": platform.processor() or platform.machine(),
           "when": time.strftime("%Y-%m-%d %H:%M"), "methods": results}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"{args.out}.json").write_text(json.dumps(out, indent=1))
    many = len(seeds) > 1
    rows = ["| method | lr | batch | val acc" + (" (mean ± sd) | per seed" if many else "") +
            " | acc - full | trainable params | share | examples/s | x full | peak RSS MiB | x full |",
            "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if many else "")]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"| {name} | error: {r['error']} |||||||||| ")
            continue
        acc = (f"{r['val_acc']:.4f} ± {r['val_acc_sd']:.4f} | {' / '.join(f'{a:.4f}' for a in r['val_acc_per_seed'])}" if many
               else f"{r['val_acc']:.4f}")
        rows.append(f"| {name} | {r.get('lr')} | {r.get('batch')} | {acc} | {r.get('acc_minus_full', '')} | {r.get('trainable_params'):,} | "
                    f"{100 * r.get('trainable_share', 0):.3f}% | {r.get('ex_per_s')} | {r.get('speed_vs_full', '')} | "
                    f"{r.get('peak_rss_mib')} | {r.get('rss_vs_full', '')} |")
    md = (f"# Adapter methods on SST-2 (CPU)\n\n{args.ntrain} training examples, 1 epoch, all-MiniLM-L6-v2 in int8 "
          f"(full fine-tuning: fp32), max length 66, final weights (no best-step selection), validation: {args.nval or 'all 872'} SST-2 dev examples. One fresh process "
          f"per method and seed, seeds {args.seeds} ({out['when']}); settings per method in {args.out}.json.\n\n" + "\n".join(rows) + "\n")
    (res / f"{args.out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
