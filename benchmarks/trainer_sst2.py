"""LoRA quality parity on SST-2: adapterkit's recipe against PEFT + transformers `Trainer` written the usual way,
on the same subsets (8,000 training examples drawn with each seed, the same tokenization) and seeds, final weights,
scored on validation and on the held-out test split.

    python benchmarks/trainer_sst2.py [--seeds 0,1,2] [--arms adapterkit,trainer]

Trainer arm: all-MiniLM-L6-v2 loaded in 8-bit (bitsandbytes, classifier and pooler kept in float), LoRA r=16,
alpha 32, dropout 0.05 on all linear layers (PEFT's `all-linear`: the pooler's dense too), the classifier in
`modules_to_save` (task type SEQ_CLS), AdamW lr 1.5e-3, weight decay 0.01, linear schedule with 6% warmup, batch 32,
length grouping, 1 epoch, float32 (the Trainer's CPU default). adapterkit arm: `adapterkit train
recipes/sst2-lora-int8.yaml --seeds ...` with evaluation only at the end. Writes benchmarks/results/trainer_sst2.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import adapterkit, mean_sd, pick, run_script, write_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = "recipes/sst2-lora-int8.yaml"
WORK = ROOT / "runs" / "bench-trainer-sst2"
OUT = ROOT / "benchmarks" / "results"
SETS = ["data.max_train_samples=8000", "training.eval_every=100000", f"data.train={DATA / 'train.tsv'}",
        f"data.validation={DATA / 'validation.tsv'}", f"data.test={DATA / 'test.tsv'}"]

TRAINER_ARM = r'''
import json, sys
import numpy as np
import torch
from adapterkit.progress import quiet_libraries
quiet_libraries()
from adapterkit import data as data_mod
from adapterkit.config import resolve_paths
from adapterkit.heads import HEADS
from adapterkit.model import load_recipe
from adapterkit.model.backbone import checkpoint_dir, load_tokenizer
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForSequenceClassification, BitsAndBytesConfig, DataCollatorWithPadding, Trainer,
                          TrainingArguments)

seed, out, sets = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
recipe = resolve_paths(load_recipe("{recipe}", sets + [f"training.seed={{seed}}"]))
tok = load_tokenizer(recipe.backbone)
prep = data_mod.prepare(recipe, tok, HEADS[recipe.task.type])   # the very rows and token ids adapterkit trains on
splits = {{k: v.remove_columns([c for c in v.column_names if c not in ("input_ids", "attention_mask", "labels")])
          for k, v in prep.splits.items()}}
torch.manual_seed(seed)
model = AutoModelForSequenceClassification.from_pretrained(
    checkpoint_dir(recipe.backbone), num_labels=len(prep.labels), device_map="cpu",
    quantization_config=BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["classifier", "pooler"]))
model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear"))
args = TrainingArguments(output_dir=out, learning_rate=1.5e-3, per_device_train_batch_size=32, per_device_eval_batch_size=64,
                         num_train_epochs=1, weight_decay=0.01, warmup_steps=0.06, lr_scheduler_type="linear",
                         train_sampling_strategy="group_by_length", seed=seed, report_to=[], save_strategy="no", eval_strategy="no",
                         logging_steps=50, use_cpu=True, dataloader_num_workers=0)
acc = lambda p: {{"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}}
trainer = Trainer(model=model, args=args, train_dataset=splits["train"], data_collator=DataCollatorWithPadding(tok),
                  compute_metrics=acc)
result = trainer.train()
val = trainer.evaluate(splits["validation"])["eval_accuracy"]
test = trainer.evaluate(splits["test"], metric_key_prefix="test")["test_accuracy"]
print(json.dumps(dict(val_acc=round(val, 6), test_acc=round(test, 6), ex_per_s=round(result.metrics["train_samples_per_second"], 2),
                      trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="adapterkit,trainer")
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: SST-2 not found (see ../shared/data/README)")
    seeds = [int(s) for s in a.seeds.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    res = {}
    for arm in pick(a.arms, ["adapterkit", "trainer"], "--arms"):
        t = time.time()
        if arm == "adapterkit":
            out = WORK / "adapterkit"
            sets = [x for s in SETS for x in ("--set", s)]
            if len(seeds) > 1:
                adapterkit(["train", RECIPE, "--seeds", a.seeds, "-o", str(out), *sets], WORK / "adapterkit.log", ROOT)
            else:  # one seed: `--seeds 0` would be a count
                adapterkit(["train", RECIPE, "-o", str(out / f"seed-{seeds[0]}"), *sets, "--set", f"training.seed={seeds[0]}"],
                           WORK / "adapterkit.log", ROOT)
            runs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in seeds]
            rows = [dict(val_acc=m["validation"]["accuracy"], test_acc=m["test"]["accuracy"], ex_per_s=m["train"]["examples_per_s"],
                         trainable=m["train"]["trainable_params"]) for m in runs]
        else:
            script = WORK / "trainer_arm.py"
            script.write_text(TRAINER_ARM.format(recipe=RECIPE))
            rows = []
            for s in seeds:
                r = run_script([str(script), str(s), str(WORK / f"trainer-{s}"), json.dumps(SETS)], cwd=str(ROOT))
                if "error" in r:
                    sys.exit(f"trainer seed {s}: {r['error']}")
                rows.append(r)
        res[arm] = dict(seeds=seeds, wall_s=round(time.time() - t, 1), trainable=rows[0]["trainable"],
                        **{k: mean_sd([r[k] for r in rows]) for k in ("val_acc", "test_acc", "ex_per_s")})
        print(arm, json.dumps(res[arm]), flush=True)
    (OUT / "trainer_sst2.json").write_text(json.dumps(res, indent=1))
    f = lambda x: f"{x['mean']:.4f} ± {x['sd']:.4f} ({', '.join(f'{v:.4f}' for v in x['values'])})"
    lines = ["| arm | trainable params | validation acc | test acc | examples/s |", "|---|---|---|---|---|"]
    for arm, r in res.items():
        lines.append(f"| {arm} | {r['trainable']:,} | {f(r['val_acc'])} | {f(r['test_acc'])} | {r['ex_per_s']['mean']:.1f} |")
    md = (f"# SST-2 LoRA: adapterkit vs PEFT + Trainer, final weights\n\n`python benchmarks/trainer_sst2.py --seeds {a.seeds}` "
          f"({time.strftime('%Y-%m-%d %H:%M')}): the same 8,000-example subset per seed, the same tokenization, 1 epoch, batch 32, "
          f"int8 all-MiniLM-L6-v2; final weights, validation 872, test 1,821; mean ± sd over seeds {a.seeds}.\n\n" + "\n".join(lines) + "\n")
    write_md(OUT / "trainer_sst2.md", md)  # hand-written notes below the marker survive a re-run
    print(md)


if __name__ == "__main__":
    main()
