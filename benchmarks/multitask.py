"""Joint multi-task training vs single-task runs on the same budget: SST-2 + CoNLL-2003 on the int8 all-MiniLM-L6-v2,
LoRA r=8 (recipes/multitask-sst2-conll-int8.yaml), each arm in its own fresh process, one after the other.

    nice -n 5 python benchmarks/multitask.py [--steps-per-task 60] [--batch 16] [--ntrain 2000] [--neval 300]

Budget: every task gets the same number of training batches (`--steps-per-task` x `--batch` examples) in every arm.
  single_sst2   : single-task run on SST-2 (adapterkit.training.loop.train), steps-per-task steps
  single_conll  : single-task run on CoNLL-2003, steps-per-task steps
  joint_shared  : one run, both tasks, one shared LoRA adapter, round robin, 2 x steps-per-task steps
  joint_per_task: same, one adapter per task (PEFT named adapters) over the shared backbone
Same seed, learning rates, schedule and data subsets (first --ntrain training examples after a seeded shuffle,
first --neval validation examples) everywhere. Writes benchmarks/results/multitask.{json,md}: each task's
validation metric per arm, ratios joint/single, training seconds and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RECIPE = ROOT / "recipes" / "multitask-sst2-conll-int8.yaml"

ARM = '''
import json, sys, time
from adapterkit.cli import quiet_libraries
quiet_libraries()
from adapterkit.config import resolve_paths
from adapterkit.model import load_recipe
from adapterkit.training.multitask import task_recipe
from adapterkit.training import train
arm, out, steps, batch, ntrain, neval, lr, head_lr, log_every = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7]), *map(float, sys.argv[7:9]), sys.argv[9]
r = resolve_paths(load_recipe("{recipe}", [f"training.output_dir={{out}}", f"training.batch_size={{batch}}", f"training.log_every={{log_every}}",
                                         f"training.lr={{lr}}", f"training.head_lr={{head_lr}}", "training.overwrite=true"]))
for t in r.tasks:
    t.data.max_train_samples, t.data.max_eval_samples = ntrain, neval
t0 = time.perf_counter()
if arm.startswith("joint"):
    r.multitask.adapter = "per_task" if arm == "joint_per_task" else "shared"
    r.training.max_steps = 2 * steps
    final = train(r)
    tasks = {{n: v["validation"] for n, v in final["tasks"].items()}}
    batches = final["train"]["batches_per_task"]
else:
    spec = next(t for t in r.tasks if t.name == arm.removeprefix("single_"))
    sub = task_recipe(r, spec)
    sub.training.max_steps = steps
    final = train(sub)
    tasks = {{spec.name: final["validation"]}}
    batches = {{spec.name: final["train"]["steps"]}}
print(json.dumps(dict(tasks=tasks, batches=batches, train_s=final["train"]["seconds"], wall_s=round(time.perf_counter() - t0, 1),
                      trainable_params=final["train"]["trainable_params"])))
'''

HEADLINE = {"sst2": "accuracy", "conll": "f1"}  # entity-level micro F1 (seqeval) for CoNLL


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-per-task", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ntrain", type=int, default=2000)
    ap.add_argument("--neval", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--head-lr", type=float, default=1e-2)
    ap.add_argument("--arms", default="single_sst2,single_conll,joint_shared,joint_per_task")
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS per arm (1 helps a lot on an oversubscribed machine); 0: torch's default")
    ap.add_argument("--parallel", action="store_true", help="run the arms at the same time (when the machine is short of time, not cores)")
    args = ap.parse_args()
    for name in ("sst2", "conll2003"):
        if not (SHARED / "data" / name).is_dir():
            sys.exit(f"{name} not found under {SHARED / 'data'}: this benchmark needs the shared data folder")
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-mt-"))
    script = tmp / "arm.py"
    script.write_text(ARM.format(recipe=RECIPE))
    def run_arm(arm):
        t0 = time.time()
        res = run_script([str(script), arm, str(tmp / arm), str(args.steps_per_task), str(args.batch), str(args.ntrain),
                          str(args.neval), str(args.lr), str(args.head_lr), str(args.log_every)], cwd=str(ROOT),
                         env={"OMP_NUM_THREADS": str(args.threads)} if args.threads else None)
        res["arm_wall_s"] = round(time.time() - t0, 1)
        print(arm, json.dumps(res)[:400], flush=True)
        return arm, res

    arms = args.arms.split(",")
    if args.parallel:  # metrics are unaffected; timings then measure a shared machine, not one arm
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(arms)) as pool:
            results = dict(pool.map(run_arm, arms))
    else:
        results = dict(run_arm(a) for a in arms)

    table = []
    for task, metric in HEADLINE.items():
        single = results.get(f"single_{task}", {}).get("tasks", {}).get(task, {}).get(metric)
        for arm, res in results.items():
            v = res.get("tasks", {}).get(task, {}).get(metric)
            if v is None:
                continue
            table.append(dict(task=task, metric=metric, arm=arm, value=round(v, 4), batches=res["batches"].get(task),
                              ratio_vs_single=round(v / single, 3) if single else None))
    summary = dict(
        what=("Joint multi-task (SST-2 + CoNLL-2003) vs single-task runs, int8 all-MiniLM-L6-v2, LoRA r=8 alpha=16 on all "
              "linear layers, same number of training batches per task in every arm"),
        settings=vars(args), recipe=str(RECIPE.relative_to(ROOT)), machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                                                                                 load_avg_1m=round(os.getloadavg()[0], 1)),
        gpu="none: CPU only", arms=results, table=table)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "multitask.json").write_text(json.dumps(summary, indent=1))
    lines = ["# Joint multi-task vs single-task (SST-2 + CoNLL-2003, int8 MiniLM, CPU)", "",
             f"Command: `nice -n 5 python benchmarks/multitask.py --steps-per-task {args.steps_per_task} --batch {args.batch} "
             f"--ntrain {args.ntrain} --neval {args.neval} --lr {args.lr} --head-lr {args.head_lr} --arms {args.arms}"
             + (" --parallel" if args.parallel else "") + (f" --threads {args.threads}" if args.threads else "") + "`", "",
             f"Each task: {args.steps_per_task} batches of {args.batch} in every arm (joint runs: {2 * args.steps_per_task} steps, "
             f"round robin); training subset {args.ntrain} examples per task, validation subset {args.neval}. "
             f"Machine: {os.cpu_count()} shared CPU cores (1-minute load average at the end: {summary['machine']['load_avg_1m']}), no GPU.", "",
             "| task | metric | arm | value | batches | ratio vs single |", "| --- | --- | --- | --- | --- | --- |"]
    for row in table:
        lines.append(f"| {row['task']} | {row['metric']} | {row['arm']} | {row['value']} | {row['batches']} | {row['ratio_vs_single']} |")
    lines += ["", "| arm | training s | wall s (incl. load, eval, export) | peak RSS MiB | trainable params |", "| --- | --- | --- | --- | --- |"]
    for arm, res in results.items():
        lines.append(f"| {arm} | {res.get('train_s')} | {res.get('arm_wall_s')} | {res.get('peak_rss_mib')} | {res.get('trainable_params')} |"
                     + (f" error: {res['error']}" if "error" in res else ""))
    lines += ["", "Small budgets on a shared CPU: the numbers show the joint run trains both tasks in one process and how "
              "it compares at equal per-task batches, not converged scores."]
    (out / "multitask.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
