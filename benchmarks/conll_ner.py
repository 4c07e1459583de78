"""CoNLL-2003 NER: LoRA on the 8-bit all-MiniLM-L6-v2 vs full fine-tuning (fp32) of the same backbone, both trained
and scored on the full CoNLL-2003 test set (entity-level F1, seqeval) in one run, each arm in its own process.

    python benchmarks/conll_ner.py [--ntrain 14041] [--epochs-lora 5] [--epochs-full 2] [--arms lora_int8,full_fp32] [--parallel]

Both arms see the same training sentences (a seeded subset when --ntrain is below 14,041). Writes
benchmarks/results/conll_ner.{json,md}: test entity P/R/F1 per arm and per entity type, the F1 gap
(LoRA - full, in points), trainable parameters and training throughput.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import pick, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"

ARM = '''
import json, sys
from adapterkit.cli import quiet_libraries
quiet_libraries()
import yaml
from adapterkit.config import resolve_paths
from adapterkit.model import recipe_from_dict
from adapterkit.training import train
data = yaml.safe_load(open("{recipe}"))
if sys.argv[2] == "full":
    data["adapter"] = {{"method": "full"}}
r = resolve_paths(recipe_from_dict(data, json.loads(sys.argv[1])))
final = train(r)
t = final["test"]
steps = [json.loads(l) for l in open(r.training.output_dir + "/log.jsonl") if l.startswith('{{"step"')]
print(json.dumps(dict(test_f1=t["f1"], test_precision=t["precision"], test_recall=t["recall"], test_token_acc=t["accuracy"],
                      per_type={{k: round(v["f1"], 4) for k, v in t["per_type"].items()}}, ex_per_s=final["train"]["examples_per_s"],
                      train_s=final["train"]["seconds"], steps=final["train"]["steps"],
                      trainable_params=final["train"]["trainable_params"], final_train_loss=steps[-1]["loss"] if steps else None)))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntrain", type=int, default=14041)
    ap.add_argument("--epochs-lora", type=float, default=5)
    ap.add_argument("--epochs-full", type=float, default=2)
    ap.add_argument("--lr-lora", type=float, default=2e-3)
    ap.add_argument("--lr-full", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--arms", default="lora_int8,full_fp32", help="comma list; the gap is reported only when both ran")
    ap.add_argument("--parallel", action="store_true", help="run both arms at once (one thread each); throughput then is not comparable")
    args = ap.parse_args()
    if not CONLL.is_dir():
        sys.exit(f"CoNLL-2003 not found at {CONLL}: this benchmark needs the shared data folder")
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-conll-"))
    script = tmp / "arm.py"
    script.write_text(ARM.format(recipe=ROOT / "recipes" / "conll2003-lora-int8.yaml"))
    # No validation passes: both arms train for a fixed budget and are scored once on the test set.
    common = [f"data.train={CONLL / 'train.txt'}", "data.validation=null", f"data.test={CONLL / 'test.txt'}",
              f"data.max_train_samples={args.ntrain}", f"training.batch_size={args.batch_size}", "training.overwrite=true",
              "training.log_every=50"]
    arms = {
        "lora_int8": common + [f"training.output_dir={tmp / 'lora'}", f"training.epochs={args.epochs_lora}", f"training.lr={args.lr_lora}"],
        "full_fp32": common + [f"training.output_dir={tmp / 'full'}", f"training.epochs={args.epochs_full}", f"training.lr={args.lr_full}",
                               "backbone.quantization=none"],
    }
    arms = {n: arms[n] for n in pick(args.arms, arms, "--arms")}
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if args.parallel else {}

    def run(name):
        t = time.time()
        r = run_script([str(script), json.dumps(arms[name]), name.split("_")[0]], env=env, timeout=3 * 3600)
        r["wall_s"] = round(time.time() - t, 1)
        print(name, json.dumps(r), flush=True)
        return name, r

    if args.parallel:
        with ThreadPoolExecutor(2) as ex:
            results = dict(ex.map(run, arms))
    else:
        results = dict(run(n) for n in arms)
    lora, full = results.get("lora_int8", {}), results.get("full_fp32", {})
    gap = round(100 * (lora["test_f1"] - full["test_f1"]), 2) if "test_f1" in lora and "test_f1" in full else None
    out = {"benchmark": "conll_ner", "ntrain": min(args.ntrain, 14041), "test_sentences": 3453, "args": vars(args),
           "machine": platform.processor() or platform.machine(), "when": time.strftime("%Y-%m-%d %H:%M"),
           "arms": results, "f1_gap_points": gap, "within_1_5_points": gap is not None and gap >= -1.5}
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "conll_ner.json").write_text(json.dumps(out, indent=1))
    rows = ["# CoNLL-2003 NER: int8 MiniLM + LoRA vs full fine-tuning (fp32)\n",
            f"Training sentences: {out['ntrain']} (seeded subset of 14,041), LoRA {args.epochs_lora} epochs at lr {args.lr_lora}, "
            f"full {args.epochs_full} epochs at lr {args.lr_full}, batch {args.batch_size}; scored on all 3,453 test sentences "
            f"(entity-level, seqeval). Arms run {'in parallel, one thread each' if args.parallel else 'one after the other'} "
            f"on {out['machine']} ({out['when']}).\n",
            "| arm | test F1 | precision | recall | PER | ORG | LOC | MISC | trainable params | examples/s | train s | final train loss |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        pt = r.get("per_type", {})
        rows.append(f"| {name} | {r.get('test_f1')} | {r.get('test_precision')} | {r.get('test_recall')} | {pt.get('PER')} | "
                    f"{pt.get('ORG')} | {pt.get('LOC')} | {pt.get('MISC')} | {r.get('trainable_params')} | {r.get('ex_per_s')} | "
                    f"{r.get('train_s')} | {r.get('final_train_loss')} |")
    rows.append(f"\nF1 gap (LoRA - full): {gap} points; within 1.5 points: {out['within_1_5_points']}.")
    (res / "conll_ner.md").write_text("\n".join(rows) + "\n")
    print(json.dumps({"f1_gap_points": gap, "lora_f1": lora.get("test_f1"), "full_f1": full.get("test_f1")}))


if __name__ == "__main__":
    main()
