"""WebNLG 2017 over seeds: LoRA on the int8 backbone (the shipped recipe) against full fine-tuning, each seed's pair
trained side by side, scored on webnlg.py's fixed test subset (issue #42: 3 seeds each side).

The settings are webnlg.py's (the same training slice size, epochs, batch, lrs, validation subset, test subset, greedy
generation); `training.seed` sets both the seeded slice of training pairs and the initialisation, the same for both
arms of a seed. Each seed's difference gets a paired percentile bootstrap over the test sets (1,000 resamples, as
`adapterkit compare`), on the generations already written and from sacrebleu's per-sentence statistics (webnlg.py's
`paired_bootstrap`): compare scores every resample's texts again, which took over 10 minutes for these two seeds.
`--jobs 2` runs two processes at once, one thread each. A step whose output exists is not redone (rerun to continue).

    python benchmarks/webnlg_seeds.py --seeds 1,2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _measure import adapterkit, bad_input, mean_sd, pick, seeds, write_md
from webnlg import ARMS, DATA, RECIPE, generate_args, paired_bootstrap, prepare, scores, train_sets

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "bench-webnlg-seeds"
OUT = ROOT / "benchmarks" / "results" / "webnlg_seeds"
TRAIN_SAMPLES, TEST_SAMPLES, MAX_NEW_TOKENS = 1600, 500, 80  # webnlg.py's defaults, the run of 2026-12-01


def run_arm(arm: str, seed: int, common: list[str]) -> dict:
    run, gen = WORK / f"{arm}-seed{seed}", WORK / f"{arm}-seed{seed}.generations.jsonl"
    row: dict = {"arm": arm, "seed": seed}
    sets = [x for s in [*common, *ARMS[arm], f"training.seed={seed}"] for x in ("--set", s)]
    if not (run / "metrics.json").is_file():
        row["train_wall_s"] = adapterkit(["train", str(RECIPE), "-o", str(run), "--set", "training.overwrite=true", *sets],
                                         WORK / f"{arm}-seed{seed}.train.log", ROOT)
    if not gen.is_file():
        row["generate_wall_s"] = adapterkit(generate_args(run, WORK, gen, MAX_NEW_TOKENS), WORK / f"{arm}-seed{seed}.generate.log", ROOT)
    m = json.loads((run / "metrics.json").read_text())
    row.update(examples=m["train"]["examples"], train_s=m["train"]["seconds"], examples_per_s=m["train"]["examples_per_s"],
               validation_bleu=m["validation"].get("bleu"))
    print(json.dumps(row), flush=True)
    return row


def earlier(arms: list[str]) -> list[dict]:
    """Seed 0 as webnlg.py ran it (results/webnlg.json, same settings): its test scores and its paired bootstrap
    of lora_int8 - full (sacrebleu's statistics resampled, 1,000 times), so a seed run there is not trained twice."""
    path = OUT.parent / "webnlg.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    s = res.get("settings", {})
    if (s.get("train_samples"), s.get("test_samples"), s.get("max_new_tokens")) != (TRAIN_SAMPLES, TEST_SAMPLES, MAX_NEW_TOKENS):
        return []
    rows = []
    for arm in arms:
        e = res["arms"].get(arm, {})
        if "test" not in e:
            return []
        t = e["train"]
        rows.append({"arm": arm, "seed": 0, "source": "webnlg.json", "examples": t["examples"], "train_s": t["seconds"],
                     "examples_per_s": t["examples_per_s"], "validation_bleu": e["validation"]["bleu"], "test": e["test"]})
    full = next(r for r in rows if r["arm"] == "full")
    for r in rows:
        ci = res.get("bootstrap_95", {}).get(f"{r['arm']}-full")
        if r is not full and ci:
            r["compare_vs_full"] = vs_full(r["test"], full["test"], ci)
    return rows


def vs_full(a: dict, full: dict, ci: dict) -> dict:
    """A - full per metric (test scores already computed) with its 95% interval."""
    return {k: {"diff": round(a[k] - full[k], 2), "low": ci[k][0], "high": ci[k][1]} for k in ("bleu", "chrf")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="lora_int8,full")
    ap.add_argument("--jobs", type=int, default=1, help="processes at once; more than 1 gives each one thread")
    a = ap.parse_args()
    arms = pick(a.arms, list(ARMS), "--arms")
    if "full" not in arms:
        bad_input("--arms: needs full (every other arm is compared with it)")
    run_seeds = seeds(a.seeds)
    if a.jobs < 1:
        bad_input(f"--jobs: {a.jobs}; expected 1 or more processes at once")
    if not DATA.is_dir():
        bad_input(f"{DATA}: WebNLG data not found (see ../shared/data/README)")
    WORK.mkdir(parents=True, exist_ok=True)
    test_rows = prepare(WORK, TEST_SAMPLES)
    refs = [r["references"] for r in test_rows]
    common = train_sets(WORK, TRAIN_SAMPLES, MAX_NEW_TOKENS)
    if a.jobs > 1:
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # each child on one core
    jobs = [(arm, s) for s in run_seeds for arm in arms]  # a seed's arms side by side
    with ThreadPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(lambda j: run_arm(j[0], j[1], common), jobs))
    hyps = {(r["arm"], r["seed"]): [json.loads(x)["completion"] for x in
                                    (WORK / f"{r['arm']}-seed{r['seed']}.generations.jsonl").read_text().splitlines()] for r in rows}
    test = {key: scores(h, refs) for key, h in hyps.items()}
    for r in rows:
        key, full = (r["arm"], r["seed"]), ("full", r["seed"])
        r["test"] = test[key]
        if r["arm"] != "full":
            r["compare_vs_full"] = vs_full(test[key], test[full], paired_bootstrap(hyps[key], hyps[full], refs))
    rows += [r for r in earlier(arms) if r["seed"] not in run_seeds]
    rows.sort(key=lambda r: r["seed"])  # stable: a seed's arms in --arms order
    summary = {arm: {"bleu": mean_sd([r["test"]["bleu"] for r in rows if r["arm"] == arm]),
                     "chrf": mean_sd([r["test"]["chrf"] for r in rows if r["arm"] == arm]),
                     # cost from the pairs trained side by side here (seed 0's run shared the machine with other jobs)
                     "train_s": mean_sd([r["train_s"] for r in rows if r["arm"] == arm and "source" not in r])} for arm in arms}
    out = {"benchmark": "webnlg_seeds", "seeds": run_seeds, "jobs": a.jobs, "when": time.strftime("%Y-%m-%d %H:%M"),
           "settings": {"train_samples": TRAIN_SAMPLES, "test_samples": len(test_rows), "max_new_tokens": MAX_NEW_TOKENS},
           "runs": rows, "summary": summary}
    OUT.with_suffix(".json").write_text(json.dumps(out, indent=1))
    write_md(OUT.with_suffix(".md"), markdown(out))
    print(json.dumps(summary, indent=1))


def markdown(out: dict) -> str:
    s = out["settings"]
    lines = [f"# WebNLG 2017 over seeds: LoRA int8 vs full fine-tuning, test BLEU ({out['when']})", "",
             f"`python benchmarks/webnlg_seeds.py --seeds {','.join(map(str, out['seeds']))} --jobs {out['jobs']}`: webnlg.py's "
             f"settings ({s['train_samples']} training pairs, 1 epoch, {s['test_samples']} test triple sets, greedy, at most "
             f"{s['max_new_tokens']} new tokens); intervals: paired bootstrap (1,000 resamples) of each seed's difference.", "",
             "| arm | seed | test BLEU | test chrF | - full BLEU [95%] | - full chrF [95%] | examples | train s | examples/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in out["runs"]:
        c = r.get("compare_vs_full")
        cell = {k: f"{c[k]['diff']:+.2f} [{c[k]['low']:+.2f}, {c[k]['high']:+.2f}]" if c else "" for k in ("bleu", "chrf")}
        seed = f"{r['seed']} (from {r['source']})" if "source" in r else r["seed"]
        lines.append(f"| {r['arm']} | {seed} | {r['test']['bleu']:.2f} | {r['test']['chrf']:.2f} | {cell['bleu']} | "
                     f"{cell['chrf']} | {r['examples']} | {r['train_s']:.0f} | {r['examples_per_s']} |")
    lines += ["", "| arm | BLEU mean ± sd (seeds) | chrF mean ± sd | train s mean (seeds run here) |", "|---|---|---|---|"]
    for arm, v in out["summary"].items():
        lines.append(f"| {arm} | {v['bleu']['mean']:.2f} ± {v['bleu']['sd']:.2f} ({len(v['bleu']['values'])}) | {v['chrf']['mean']:.2f} ± {v['chrf']['sd']:.2f} | "
                     f"{v['train_s']['mean']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
