"""SmolLM2-135M-Instruct on SST-2 as label words: LoRA-tuned vs its own zero-shot accuracy, one run, same command.

    python benchmarks/smollm2_label_words.py [--ntrain 400] [--neval 872] [--run FINISHED_RUN_DIR]

Trains recipes/smollm2-sst2-label-words-lora.yaml (`adapterkit train`), then scores the SST-2 validation split twice
with the same command and code: `adapterkit eval RUN --data validation.tsv --zero-shot` (base model, adapter left out)
and `adapterkit eval RUN --data validation.tsv` (tuned), on the first --neval rows of the split. Each command runs in
its own process. `--run` scores an already trained run of this recipe instead of training one.
Writes benchmarks/results/smollm2_label_words.{json,md} with both accuracies/F1 and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = ROOT / "recipes" / "smollm2-sst2-label-words-lora.yaml"
OUT = ROOT / "benchmarks" / "results"


def cli(*args: str) -> tuple[str, float]:
    """Run `adapterkit ARGS` in a fresh process; return its stdout and wall seconds."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "adapterkit.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"adapterkit {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout, round(time.perf_counter() - t0, 1)


def first_json(text: str) -> dict:
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntrain", type=int, default=400, help="training examples (seeded sample of SST-2 train)")
    ap.add_argument("--neval", type=int, default=872, help="validation examples (872 = the whole split)")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--run", help="a finished run of the recipe to score (skips training)")
    args = ap.parse_args()
    if not SST2.is_dir():
        sys.exit(f"SST-2 not found at {SST2}: this benchmark needs the shared data folder")
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-smollm2-"))
    lines = (SST2 / "validation.tsv").read_text().splitlines(keepends=True)
    val = tmp / "validation.tsv"  # header + the first --neval rows of the split
    val.write_text("".join(lines[:args.neval + 1]))
    args.neval = len(lines[1:args.neval + 1])
    if args.run:
        run, train_wall = Path(args.run), None
        final = json.loads((run / "metrics.json").read_text())
        args.ntrain = final["train"]["examples"]
    else:
        run = tmp / "run"
        # Validation is scored after training by `adapterkit eval`, not inside training (that would score it a third time).
        train_out, train_wall = cli("train", str(RECIPE), "-o", str(run), "--set", "data.validation=null",
                                    "--set", f"data.train={SST2 / 'train.tsv'}", "--set", f"data.max_train_samples={args.ntrain}",
                                    "--set", f"training.epochs={args.epochs}", "--set", "training.early_stopping.metric=loss")
        final = first_json(train_out)
    val = str(val)
    zs_out, zs_wall = cli("eval", str(run), "--data", val, "--zero-shot")
    tuned_out, tuned_wall = cli("eval", str(run), "--data", val)
    zero_shot, tuned = first_json(zs_out), first_json(tuned_out)
    samples = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés from start to finish."]
    prompts = [a for s in samples for a in ("--prompt", s)]
    gen_zs = [json.loads(l) for l in cli("generate", str(run), *prompts, "--max-new-tokens", "3", "--zero-shot")[0].splitlines() if l.startswith("{")]
    gen_tuned = [json.loads(l) for l in cli("generate", str(run), *prompts, "--max-new-tokens", "3")[0].splitlines() if l.startswith("{")]
    result = {
        "benchmark": "smollm2_label_words",
        "recipe": str(RECIPE.relative_to(ROOT)),
        "command": f"adapterkit eval RUN --data VAL [--zero-shot] (VAL: header + first {args.neval} rows of ../shared/data/sst2/validation.tsv)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "train_examples": args.ntrain, "epochs": args.epochs, "validation_examples": args.neval,
        "train": final["train"], "train_wall_s": train_wall,
        "zero_shot": {**zero_shot, "wall_s": zs_wall},
        "tuned": {**tuned, "wall_s": tuned_wall},
        "accuracy_gain": round(tuned["accuracy"] - zero_shot["accuracy"], 6),
        "accuracy_ratio_tuned_over_zero_shot": round(tuned["accuracy"] / zero_shot["accuracy"], 4),
        "tuned_beats_zero_shot": tuned["accuracy"] > zero_shot["accuracy"],
        "generate": {"zero_shot": gen_zs, "tuned": gen_tuned},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "smollm2_label_words.json").write_text(json.dumps(result, indent=1))
    md = [
        "# SmolLM2-135M-Instruct, SST-2 as label words: LoRA vs zero-shot",
        "",
        f"Recipe `{result['recipe']}`; LoRA trained on {args.ntrain} SST-2 training examples for {args.epochs} epoch(s) "
        f"({final['train']['steps']} steps, {final['train']['seconds']} s, {final['train']['examples_per_s']} examples/s). "
        f"Both rows scored on {args.neval} SST-2 validation examples by `{result['command']}`.",
        "",
        "| model | accuracy | F1 (macro) | loss | eval wall s |",
        "|---|---|---|---|---|",
        f"| zero-shot (base, no adapter) | {zero_shot['accuracy']:.4f} | {zero_shot['f1']:.4f} | {zero_shot['loss']:.4f} | {zs_wall} |",
        f"| LoRA-tuned | {tuned['accuracy']:.4f} | {tuned['f1']:.4f} | {tuned['loss']:.4f} | {tuned_wall} |",
        "",
        f"Accuracy gain: {result['accuracy_gain']:+.4f} (tuned / zero-shot = {result['accuracy_ratio_tuned_over_zero_shot']}). "
        f"Tuned beats zero-shot: **{result['tuned_beats_zero_shot']}**.",
        "",
        "Greedy `adapterkit generate` (3 new tokens):",
        "",
        *[f"- {z['prompt']!r}: zero-shot {z['completion']!r}, tuned {t['completion']!r}" for z, t in zip(gen_zs, gen_tuned)],
        "",
        f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs (shared with other jobs: timings are indicative).",
    ]
    (OUT / "smollm2_label_words.md").write_text("\n".join(md) + "\n")
    print(json.dumps({k: result[k] for k in ("zero_shot", "tuned", "accuracy_gain", "tuned_beats_zero_shot")}, indent=1))


if __name__ == "__main__":
    main()
