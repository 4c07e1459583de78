"""Where a training step's time goes: SST-2 LoRA (or any --set variant) on all-MiniLM-L6-v2, under torch's profiler.

    python benchmarks/profile_sst2.py [--steps 20] [--arms lora_int8_fp32,lora_int8_bf16,...] [--out NAME]

Each arm builds the model exactly as `adapterkit train` does (recipe recipes/sst2-lora-int8.yaml plus the arm's
overrides), takes real length-grouped batches of the SST-2 training split, runs warm-up steps, then profiles
`--steps` steps (forward, backward, clip, AdamW, zero_grad, the next batch) and sorts every operator's own time
into: frozen-weight GEMMs (forward), input-gradient GEMMs, weight-gradient GEMMs (full tuning), adapter GEMMs
(a dimension equal to the rank), int8 dequantization, dropout, attention, other tensor ops (norms, activations,
adds, casts), optimizer, data, and host/Python overhead (step wall time not spent inside an operator).

It also measures, in the same process, a 2048^3 float32 and bfloat16 matrix product (the machine's practical
peak) and counts the step's FLOPs with torch's FlopCounterMode, so each arm gets achieved FLOP/s and its share
of the peak for its compute dtype. Writes benchmarks/results/profile_sst2.{json,md}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _measure import pick  # noqa: E402
from _roofline import matmul_peaks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = ROOT / "recipes" / "sst2-lora-int8.yaml"

ARMS = {
    "lora_int8_fp32": ["training.mixed_precision=no"],
    "lora_int8_bf16": ["training.mixed_precision=bf16"],
    "lora_fp32_bf16": ["training.mixed_precision=bf16", "backbone.quantization=none"],
    "full_bf16": ["training.mixed_precision=bf16", "backbone.quantization=none", "adapter.method=full", "training.lr=5e-5"],
    "full_fp32": ["training.mixed_precision=no", "backbone.quantization=none", "adapter.method=full", "training.lr=5e-5"],
}
# Four times the tokens per step: what the fixed per-step host work costs when it is spread over more GEMM work.
ARMS["lora_int8_bf16_batch128"] = [*ARMS["lora_int8_bf16"], "training.batch_size=128", "data.max_train_samples=8000"]
# The same arms through torch.compile (inductor, dynamic shapes: batches vary in length); compiled during warm-up.
ARMS.update({f"{k}_compile": v for k, v in list(ARMS.items()) if k in ("lora_int8_bf16", "lora_fp32_bf16")})
CATEGORIES = ["frozen GEMM (forward)", "input-gradient GEMM", "weight-gradient GEMM", "adapter GEMM", "int8 dequantize",
              "dropout", "attention", "other tensor ops", "optimizer", "data", "host / Python"]
GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"}


def build(overrides):
    from adapterkit import data as data_mod
    from adapterkit.config import resolve_paths
    from adapterkit.heads import HEADS
    from adapterkit.model import build as build_model, load_recipe
    from adapterkit.model.backbone import load_tokenizer
    from adapterkit.training.loop import param_groups

    recipe = resolve_paths(load_recipe(str(RECIPE), [f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'validation.tsv'}",
                                                     "data.max_train_samples=2000", *overrides]))
    tok = load_tokenizer(recipe.backbone)
    head = HEADS[recipe.task.type]
    data = data_mod.prepare(recipe, tok, head)
    torch.manual_seed(0)
    model, head_modules = build_model(recipe, data.labels, tokenizer=tok)
    model.train()
    dl = data_mod.dataloader(data.splits["train"], tok, recipe.training.batch_size, True, 0, True)
    opt = torch.optim.AdamW(param_groups(model, recipe, head_modules), lr=recipe.training.lr)
    return recipe, model, dl, opt


def label_modules(model, rank: int | None):
    """Forward-hook record_function scopes, so forward operators can be told apart by the module that ran them."""
    def scope(label):
        def pre(_m, _a):
            _m._ak_rf = torch.profiler.record_function(label)
            _m._ak_rf.__enter__()

        def post(_m, _a, _o):
            _m._ak_rf.__exit__(None, None, None)
        return pre, post

    for name, m in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        label = None
        if leaf in ("lora_A", "lora_B") or name.endswith((".lora_A.default", ".lora_B.default")):
            label = "ak:adapter"
        elif leaf.startswith("lora_dropout") or ".lora_dropout." in name:
            label = "ak:dropout"
        elif isinstance(m, torch.nn.Dropout):
            label = "ak:dropout"
        elif isinstance(m, torch.nn.Linear) and not any(True for _ in m.children()):
            label = "ak:linear"
        if label:
            pre, post = scope(label)
            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)


def classify(ev, parents, rank):
    names = [p.name for p in parents]
    joined = " ".join(names)
    if "Optimizer." in joined or "ak:optimizer" in names:
        return "optimizer"
    if "ak:data" in names:
        return "data"
    backward = any(n.startswith("autograd::engine::evaluate_function") for n in names)
    shapes = [tuple(s) for s in (ev.input_shapes or []) if s]
    is_gemm = ev.name in GEMMS
    has_rank = rank is not None and any(len(s) == 2 and rank in s for s in shapes)  # LoRA mms are 2-D
    if "ak:dropout" in names or "Dropout" in joined or "MaskedScale" in joined:
        return "dropout"
    if "DequantLinear" in joined and not is_gemm:
        return "int8 dequantize"
    if "ak:adapter" in names or (is_gemm and has_rank):
        return "adapter GEMM"
    if "attention" in ev.name or "softmax" in ev.name or ev.name in ("aten::bmm", "aten::baddbmm") or "Sdpa" in joined or "Attention" in joined:
        return "attention"
    if is_gemm:
        if not backward:
            return "frozen GEMM (forward)"
        # A weight gradient multiplies [out, tokens] x [tokens, in]: its inner dimension is the step's token count.
        tokens = next((int(n.removeprefix("ak:step:")) for n in names if n.startswith("ak:step:")), None)
        if len(shapes) >= 2 and len(shapes[0]) == 2 and shapes[0][1] == tokens:
            return "weight-gradient GEMM"
        return "input-gradient GEMM"
    if "random_" in ev.name or "bernoulli" in ev.name:
        return "dropout"
    return "other tensor ops"


def profile_arm(name, overrides, steps, warmup):
    from torch.utils.flop_counter import FlopCounterMode

    recipe, plain, dl, opt = build(overrides)
    dtype = torch.bfloat16 if recipe.training.mixed_precision == "bf16" else None
    rank = getattr(recipe.adapter, "r", None) if recipe.adapter.method == "lora" else None
    label_modules(plain, rank)
    compiled = name.endswith("_compile")
    model = torch.compile(plain, dynamic=True) if compiled else plain
    if compiled:
        warmup += 10  # every batch length the timed steps meet, compiled before timing
    it = iter(dl)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(count_flops=False):
        with torch.profiler.record_function("ak:data"):
            batch = next(it)
        with torch.profiler.record_function(f"ak:step:{batch['input_ids'].numel()}"):
            return run(batch, count_flops)

    def run(batch, count_flops):
        counter = FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
        with counter:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = (plain if count_flops else model)(**batch).loss  # FLOPs counted on the eager module
            loss.backward()
        with torch.profiler.record_function("ak:optimizer"):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return counter.get_total_flops() if count_flops else 0, int(batch["attention_mask"].sum()), batch["input_ids"].numel()

    for _ in range(warmup):
        step()
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
    t0 = time.perf_counter()
    real = padded = 0
    with prof:
        for _ in range(steps):
            _, r, p = step()
            real, padded = real + r, padded + p
    wall = time.perf_counter() - t0
    # FLOPs of the same number of (later) steps, counted outside the timed window.
    flops = sum(step(count_flops=True)[0] for _ in range(steps))
    times = defaultdict(float)
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
    for ev in events:
        if not ev.name.startswith(("aten::", "bitsandbytes")):
            continue
        parents, p = [], ev.cpu_parent
        while p is not None:
            parents.append(p)
            p = p.cpu_parent
        if any(q.name.startswith("aten::") for q in parents):
            continue  # counted with its outermost aten operator
        times[classify(ev, parents, rank)] += ev.cpu_time_total / 1e6
    # The data scope holds Python (the collator) more than operators: count its whole span.
    times["data"] = sum(e.cpu_time_total for e in events if e.name == "ak:data") / 1e6
    op_s = sum(times.values())
    times["host / Python"] = max(wall - op_s, 0.0)
    return dict(arm=name, overrides=overrides, steps=steps, wall_s=round(wall, 3), step_ms=round(1000 * wall / steps, 1),
                examples_per_s=round(steps * recipe.training.batch_size / wall, 1), real_tokens=real, padded_tokens=padded,
                flops=flops, achieved_gflops=round(flops / wall / 1e9, 1), compute_dtype="bfloat16" if dtype else "float32",
                breakdown_s={k: round(times.get(k, 0.0), 3) for k in CATEGORIES})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--out", default="profile_sst2")
    args = ap.parse_args()
    if not SST2.is_dir():
        sys.exit(f"SST-2 not found under {SST2.parent}: this benchmark needs the shared data folder")
    from adapterkit.progress import quiet_libraries
    quiet_libraries()
    peaks = matmul_peaks()
    arms = [profile_arm(a, ARMS[a], args.steps, args.warmup) for a in pick(args.arms, ARMS, "--arms")]
    for a in arms:
        a["share_of_peak"] = round(a["achieved_gflops"] / peaks[a["compute_dtype"]], 3)
    out = {"benchmark": "profile_sst2", "when": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(),
           "peak_gflops": peaks, "arms": arms,
           "command": f"python benchmarks/profile_sst2.py --steps {args.steps} --arms {args.arms}"}
    res = ROOT / "benchmarks" / "results"
    (res / f"{args.out}.json").write_text(json.dumps(out, indent=1))
    head = "| category | " + " | ".join(a["arm"] for a in arms) + " |"
    rows = [head, "|---" * (len(arms) + 1) + "|"]
    for c in CATEGORIES:
        rows.append(f"| {c} | " + " | ".join(f"{a['breakdown_s'][c] / a['wall_s'] * 100:.1f}%" for a in arms) + " |")
    for label, key in (("step ms", "step_ms"), ("examples/s", "examples_per_s"), ("achieved GFLOP/s", "achieved_gflops"),
                       ("share of peak", "share_of_peak")):
        rows.append(f"| **{label}** | " + " | ".join(str(a[key]) for a in arms) + " |")
    md = (f"# Where a training step's time goes (SST-2, all-MiniLM-L6-v2, batch 32 unless the arm says, length-grouped)\n\n"
          f"`{out['command']}` ({out['when']}, {out['threads']} threads). Peak of a 2048^3 matrix product in the same "
          f"process: float32 {peaks['float32']} GFLOP/s, bfloat16 {peaks['bfloat16']} GFLOP/s. FLOPs counted by torch's "
          f"FlopCounterMode over as many steps; share of peak is against the arm's compute dtype.\n\n" + "\n".join(rows) + "\n")
    (res / f"{args.out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
