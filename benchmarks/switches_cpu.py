"""CPU micro-benchmark of the int8 and checkpointing switches on the int8 all-MiniLM-L6-v2 (LoRA r=8, batch 32 x 66):
per training step (forward + backward + AdamW), the arms interleaved step by step in one process so machine load
hits them alike; median step time and bytes saved for backward. Robust on a shared machine where whole-run arms
(benchmarks/sst2_cpu.py) are not.

    python benchmarks/switches_cpu.py [--reps 8] [--threads 1]

Writes benchmarks/results/switches_cpu.{json,md}, ratios against bitsandbytes' int8 matmul without checkpointing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = {
    "bnb_int8": {"int8_matmul": "bitsandbytes"},
    "dequant_int8": {"int8_matmul": "dequantize"},
    "bnb_int8_grad_ckpt": {"int8_matmul": "bitsandbytes", "gradient_checkpointing": True},
    "dequant_int8_grad_ckpt": {"int8_matmul": "dequantize", "gradient_checkpointing": True},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from adapterkit.cli import quiet_libraries

    quiet_libraries()
    from adapterkit.model import recipe_from_dict
    from adapterkit.model import build
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' helpers, as pytest sees them
    from helpers import minilm_dir, write_sentiment
    from training.test_perf_switches import saved_bytes

    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-switches-"))
    files = write_sentiment(tmp)
    ids = torch.randint(1000, 20000, (32, 66), generator=torch.Generator().manual_seed(0))
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1] * 16))
    models, opts, saved = {}, {}, {}
    for name, backbone in ARMS.items():
        r = recipe_from_dict({"backbone": {"path": str(minilm_dir()), "quantization": "int8", **backbone},
                              "adapter": {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "key", "value", "dense"]},
                              "data": {"train": str(files["train"])}, "training": {"output_dir": str(tmp / name)}})
        torch.manual_seed(0)
        model, _ = build(r, ["neg", "pos"])
        model.train()
        models[name] = model
        opts[name] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        saved[name] = saved_bytes(model, batch)  # also the warm-up step
        model.zero_grad()
    times = {n: [] for n in ARMS}
    for _ in range(args.reps):
        for name, model in models.items():
            t = time.perf_counter()
            model(**batch).loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["bnb_int8"])
    rows = {}
    for name in ARMS:
        med = statistics.median(times[name])
        rows[name] = dict(median_step_s=round(med, 4), examples_per_s=round(32 / med, 1), speed_vs_bnb=round(base / med, 3),
                          saved_for_backward_mib=round(saved[name] / 2**20, 1),
                          saved_vs_bnb=round(saved[name] / saved["bnb_int8"], 3))
        print(name, json.dumps(rows[name]), flush=True)
    out = dict(benchmark="switches_cpu", reps=args.reps, threads=args.threads, batch="32x66", when=time.strftime("%Y-%m-%d %H:%M"),
               load_avg=os.getloadavg()[0], arms=rows)
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "switches_cpu.json").write_text(json.dumps(out, indent=1))
    lines = ["| arm | median step s | examples/s | x bnb | saved for backward MiB | x bnb |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['median_step_s']} | {r['examples_per_s']} | {r['speed_vs_bnb']} | {r['saved_for_backward_mib']} | "
              f"{r['saved_vs_bnb']} |" for n, r in rows.items()]
    (res / "switches_cpu.md").write_text(
        f"# int8 path and checkpointing switches on CPU\n\nint8 all-MiniLM-L6-v2, LoRA r=8, batch 32 x 66, {args.reps} interleaved "
        f"steps per arm, {args.threads} thread(s), load average {out['load_avg']:.1f} ({out['when']}).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
