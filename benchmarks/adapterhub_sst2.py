"""Bottleneck parity on SST-2: adapterkit's Pfeiffer and Houlsby adapters against AdapterHub `adapters` 1.3.0 on the
same subsets (8,000 training examples drawn with each seed, the very token ids adapterkit trains on), the same
budget (1 epoch, batch 16, lr 1.5e-3, linear schedule, 6% warmup, weight decay 0.01, bottleneck 64) and seeds;
final weights, scored on validation (872) and the held-out test split (1,821).

    python benchmarks/adapterhub_sst2.py [--seeds 0,1,2,3,4] [--arms ...] [--venv runs/adapterhub-venv]

AdapterHub pins transformers 4.57, so its arm runs in a venv of its own, built on first use (torch 2.13 CPU,
adapters 1.3.0, accelerate): `AutoAdapterModel` in float32 with `seq_bn` (Pfeiffer) or `double_seq_bn` (Houlsby) at
reduction factor 6 (384 / 64), its default classification head (2 layers, tanh), `train_adapter`, `AdapterTrainer`.
adapterkit arms: `adapterkit train recipes/sst2-lora-int8.yaml --seeds ...` on the int8 backbone with the bottleneck
settings of each arm (`*-ah`: the AdapterHub-equivalent design: Pfeiffer `adapter_input: post_norm` and
`init_weights: bert`; Houlsby `activation: swish` and `init_weights: bert`; `*-zero`: the previous design, reading
the projection, zero up-projection, relu; `*-random`: the `*-ah` design trained on AdapterHub's batch order,
`training.group_by_length=false`, random batches as `Trainer` draws them, where adapterkit's default is length groups
in random order). Writes benchmarks/results/adapterhub_sst2.{json,md}; notes below the marker `<!-- notes:` in the
.md survive a re-run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import adapterkit, bad_input, mean_sd, pick, write_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = "recipes/sst2-lora-int8.yaml"
WORK = ROOT / "runs" / "bench-adapterhub-sst2"
OUT = ROOT / "benchmarks" / "results"
BUDGET = ["data.max_train_samples=8000", "training.eval_every=100000", "training.batch_size=16", "training.lr=1.5e-3",
          "training.warmup_ratio=0.06", "training.weight_decay=0.01", f"data.train={DATA / 'train.tsv'}",
          f"data.validation={DATA / 'validation.tsv'}", f"data.test={DATA / 'test.tsv'}"]
BN = {"method": "bottleneck", "bottleneck_size": 64}
PFEIFFER_AH = {**BN, "placement": "pfeiffer", "adapter_input": "post_norm", "init_weights": "bert"}
HOULSBY_AH = {**BN, "placement": "houlsby", "activation": "swish", "init_weights": "bert"}


@dataclass(frozen=True)
class Arm:
    """An adapterkit arm: its bottleneck settings and batch order."""
    adapter: dict
    random_order: bool = False  # AdapterHub's Trainer draws random batches; adapterkit's default is length groups

    def sets(self) -> list[str]:
        return [*(["training.group_by_length=false"] if self.random_order else []), f"adapter={json.dumps(self.adapter)}"]


ZERO = {**BN, "adapter_input": "projection", "init_weights": True, "activation": "relu"}
AK_ARMS = {
    "adapterkit-pfeiffer-ah": Arm(PFEIFFER_AH),
    "adapterkit-houlsby-ah": Arm(HOULSBY_AH),
    "adapterkit-pfeiffer-ah-random": Arm(PFEIFFER_AH, random_order=True),
    "adapterkit-houlsby-ah-random": Arm(HOULSBY_AH, random_order=True),
    "adapterkit-pfeiffer-zero": Arm({**ZERO, "placement": "pfeiffer"}),
    "adapterkit-houlsby-zero": Arm({**ZERO, "placement": "houlsby"}),
}
AH_ARMS = {"adapterhub-pfeiffer": "seq_bn", "adapterhub-houlsby": "double_seq_bn"}
ARMS = [*AH_ARMS, *AK_ARMS]

# Runs in the main venv: the rows and token ids adapterkit trains on, per seed, for the AdapterHub arm.
EXPORT = r'''
import json, sys
from adapterkit.progress import quiet_libraries
quiet_libraries()
from adapterkit import data as data_mod
from adapterkit.config import resolve_paths
from adapterkit.heads import HEADS
from adapterkit.model import load_recipe
from adapterkit.model.backbone import checkpoint_dir, load_tokenizer
seed, out, sets = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
recipe = resolve_paths(load_recipe(sys.argv[4], sets + [f"training.seed={seed}"]))
prep = data_mod.prepare(recipe, load_tokenizer(recipe.backbone), HEADS[recipe.task.type])
rows = {k: {"input_ids": [list(map(int, r)) for r in v["input_ids"]], "labels": [int(x) for x in v["labels"]]}
        for k, v in prep.splits.items()}
json.dump({"checkpoint": str(checkpoint_dir(recipe.backbone)), "labels": list(prep.labels), "splits": rows}, open(out, "w"))
print(json.dumps({k: len(v["labels"]) for k, v in rows.items()}))
'''

# Runs in the AdapterHub venv.
AH_ARM = r'''
import json, sys
import numpy as np
import torch
from adapters import AdapterTrainer, AutoAdapterModel, BnConfig
from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments
from transformers.utils import logging
logging.set_verbosity_error()

data_file, config_name, seed, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
d = json.load(open(data_file))
tok = AutoTokenizer.from_pretrained(d["checkpoint"])
ds = lambda s: [{"input_ids": i, "attention_mask": [1] * len(i), "labels": y}
                for i, y in zip(d["splits"][s]["input_ids"], d["splits"][s]["labels"])]
torch.manual_seed(seed)
model = AutoAdapterModel.from_pretrained(d["checkpoint"])
model.add_adapter("sst2", config=BnConfig.load(config_name, reduction_factor=6))
model.add_classification_head("sst2", num_labels=len(d["labels"]))
model.train_adapter("sst2")
args = TrainingArguments(output_dir=out, learning_rate=1.5e-3, per_device_train_batch_size=16, per_device_eval_batch_size=64,
                         num_train_epochs=1, weight_decay=0.01, warmup_ratio=0.06, lr_scheduler_type="linear", seed=seed,
                         report_to=[], save_strategy="no", eval_strategy="no", logging_steps=100, use_cpu=True,
                         dataloader_num_workers=0)
acc = lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}
trainer = AdapterTrainer(model=model, args=args, train_dataset=ds("train"), data_collator=DataCollatorWithPadding(tok),
                         compute_metrics=acc)
result = trainer.train()
val = trainer.evaluate(ds("validation"))["eval_accuracy"]
test = trainer.evaluate(ds("test"), metric_key_prefix="test")["test_accuracy"]
print(json.dumps(dict(val_acc=round(val, 6), test_acc=round(test, 6), ex_per_s=round(result.metrics["train_samples_per_second"], 2),
                      trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))))
'''


def ensure_venv(venv: Path) -> Path:
    """The AdapterHub venv's python; built on first use (adapters pins transformers 4.57, adapterkit needs 5)."""
    py = venv / "bin" / "python"
    if py.exists():
        return py
    print(f"building {venv} (torch 2.13 CPU, adapters 1.3.0) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU build first: a bare requirement may pull CUDA
    subprocess.run([*pip, "adapters==1.3.0", "transformers~=4.57.6", "accelerate"], check=True)
    return py


def child(py: str, code_file: Path, argv: list[str]) -> dict:
    """Run a script with `py`; its last JSON line, or exit with its last stderr line."""
    proc = subprocess.run([py, str(code_file), *argv], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{code_file.name} {' '.join(argv[1:3])}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--venv", default=str(ROOT / "runs" / "adapterhub-venv"))
    ap.add_argument("--render", action="store_true", help="only write the table from the arms already run")
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: SST-2 not found (see ../shared/data/README)")
    seeds = [int(s) for s in a.seeds.split(",")]
    arms = pick(a.arms, ARMS, "--arms")
    WORK.mkdir(parents=True, exist_ok=True)
    done = WORK / "results.json"   # per-arm results kept, so a rerun with other --arms adds to the table
    res = json.loads(done.read_text()) if done.exists() else {}
    for arm in [] if a.render else arms:
        t = time.time()
        if arm in AH_ARMS:
            py = str(ensure_venv(Path(a.venv)))
            (WORK / "export.py").write_text(EXPORT)
            (WORK / "ah_arm.py").write_text(AH_ARM)
            rows = []
            for s in seeds:
                data = WORK / f"data-seed{s}.json"
                if not data.exists():
                    child(sys.executable, WORK / "export.py", [str(s), str(data), json.dumps(BUDGET), RECIPE])
                rows.append(child(py, WORK / "ah_arm.py", [str(data), AH_ARMS[arm], str(s), str(WORK / f"{arm}-{s}")]))
        else:
            out = WORK / arm
            sets = [x for s in [*BUDGET, *AK_ARMS[arm].sets()] for x in ("--set", s)]
            if len(seeds) > 1:
                adapterkit(["train", RECIPE, "--seeds", a.seeds, "-o", str(out), *sets], WORK / f"{arm}.log", ROOT)
            else:  # one seed: `--seeds 0` would be a count
                adapterkit(["train", RECIPE, "-o", str(out / f"seed-{seeds[0]}"), *sets, "--set", f"training.seed={seeds[0]}"],
                           WORK / f"{arm}.log", ROOT)
            runs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in seeds]
            rows = [dict(val_acc=m["validation"]["accuracy"], test_acc=m["test"]["accuracy"], ex_per_s=m["train"]["examples_per_s"],
                         trainable=m["train"]["trainable_params"]) for m in runs]
        res[arm] = dict(seeds=seeds, wall_s=round(time.time() - t, 1), trainable=rows[0]["trainable"],
                        **{k: mean_sd([r[k] for r in rows]) for k in ("val_acc", "test_acc", "ex_per_s")})
        print(arm, json.dumps(res[arm]), flush=True)
        done.write_text(json.dumps(res, indent=1))
    if not res:  # --render before any arm ran: keep the committed tables
        bad_input(f"{done}: no arm results to render; run the arms first (without --render)")
    (OUT / "adapterhub_sst2.json").write_text(json.dumps(res, indent=1))
    f = lambda x: f"{x['mean']:.4f} ± {x['sd']:.4f} ({', '.join(f'{v:.4f}' for v in x['values'])})"
    order = lambda arm: "random" if arm in AH_ARMS or AK_ARMS[arm].random_order else "length groups, random order"
    lines = ["| arm | backbone | batch order | seeds | trainable params | validation acc | test acc |", "|---|---|---|---|---|---|---|"]
    for arm in [x for x in ARMS if x in res]:
        r = res[arm]
        lines.append(f"| {arm} | {'float32' if arm in AH_ARMS else 'int8'} | {order(arm)} | {','.join(map(str, r['seeds']))} | {r['trainable']:,} "
                     f"| {f(r['val_acc'])} | {f(r['test_acc'])} |")
    md = (f"# SST-2 bottleneck adapters: adapterkit vs AdapterHub, final weights\n\n`python benchmarks/adapterhub_sst2.py "
          f"--seeds {a.seeds}` (arms run one after another, rendered {time.strftime('%Y-%m-%d %H:%M')}): per seed the same 8,000-example subset and token ids, "
          "1 epoch, batch 16, lr 1.5e-3, linear schedule with 6% warmup, weight decay 0.01, bottleneck 64, all-MiniLM-L6-v2; "
          "final weights, validation 872, test 1,821; mean ± sd (values). Examples/s per arm are in the .json (a rough "
          "guide on shared cores).\n\n" + "\n".join(lines) + "\n")
    write_md(OUT / "adapterhub_sst2.md", md)
    print(md)


if __name__ == "__main__":
    main()
