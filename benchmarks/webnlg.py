"""WebNLG 2017 data-to-text with SmolLM2-135M-Instruct on CPU: zero-shot, LoRA on the int8 backbone, LoRA on the
float32 backbone and full fine-tuning, trained on the same seeded slice of the training pairs (same examples, epochs
and batch size), scored on a fixed seeded subset of the test split with corpus BLEU and chrF against every
reference; a paired bootstrap gives the 95% interval of each difference, and generation throughput is measured
batched vs one prompt at a time on the two LoRA runs.

Every arm is the user's own commands (`adapterkit train`, `adapterkit generate --file`), run in a subprocess; the
results file is rewritten after every step, and a step whose output exists is not redone (rerun to continue).

    python benchmarks/webnlg.py [--train-samples 1600] [--test-samples 500] [--arms zero_shot,lora_int8,full,lora_fp32]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from _measure import adapterkit, pick

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "webnlg"
RECIPE = ROOT / "recipes" / "smollm2-webnlg-lora-int8.yaml"
WORK = ROOT / "runs" / "bench-webnlg"
OUT = ROOT / "benchmarks" / "results"
# Full fine-tuning at LoRA's 1e-3 diverges; 5e-5 is the usual AdamW rate for a model of this size.
ARMS = {
    "lora_int8": [],
    "full": ["adapter.method=full", "training.lr=5.0e-5", "backbone.quantization=none"],
    "lora_fp32": ["backbone.quantization=none"],
}
ORDER = ["lora_int8", "zero_shot", "full", "lora_fp32"]


def sh(args: list[str], log: Path) -> float:
    return adapterkit(args, log, ROOT)


def subset(src: Path, n: int, seed: int, dst: Path) -> list[dict]:
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    keep = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    picked = [rows[i] for i in keep]
    dst.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return picked


def prepare(work: Path, test_samples: int) -> list[dict]:
    """The fixed test subset (random.Random(0)) and the 48 validation triple sets, written into `work`: the test rows."""
    test_rows = subset(DATA / "test.jsonl", test_samples, 0, work / "test_subset.jsonl")
    subset(DATA / "validation.jsonl", 48, 0, work / "validation_subset.jsonl")
    return test_rows


def train_sets(work: Path, train_samples: int, max_new_tokens: int) -> list[str]:
    """The `--set` overrides every trained arm shares (the arm's own come after)."""
    return [f"data.max_train_samples={train_samples}", "data.max_length=320", "data.max_eval_samples=48",
            f"data.validation={work / 'validation_subset.jsonl'}", "data.test=null",
            f"task.generation.max_new_tokens={max_new_tokens}"]


def generate_args(run: Path, work: Path, out: Path, max_new_tokens: int) -> list[str]:
    """`adapterkit generate` over the test subset, greedy, batch 16."""
    return ["generate", str(run), "--file", str(work / "test_subset.jsonl"), "--out", str(out),
            "--max-new-tokens", str(max_new_tokens), "--batch-size", "16"]


def scores(hyps: list[str], refs: list[list[str]]) -> dict:
    import sacrebleu

    from adapterkit.metrics.generated import reference_streams

    streams = reference_streams(refs)
    return {"bleu": round(sacrebleu.corpus_bleu(hyps, streams).score, 2), "chrf": round(sacrebleu.corpus_chrf(hyps, streams).score, 2)}


def paired_bootstrap(a: list[str], b: list[str], refs: list[list[str]], samples: int = 1000, seed: int = 0) -> dict:
    """95% interval of corpus score(a) - score(b) over test sets resampled with replacement (same resample for both)."""
    import numpy as np
    from sacrebleu.metrics import BLEU, CHRF

    from adapterkit.metrics.generated import reference_streams

    rng = np.random.default_rng(seed)
    streams = reference_streams(refs)
    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        sa = np.array(metric._extract_corpus_statistics(a, streams))
        sb = np.array(metric._extract_corpus_statistics(b, streams))
        diffs = []
        for _ in range(samples):
            idx = rng.integers(0, len(a), len(a))
            diffs.append(metric._compute_score_from_stats(list(sa[idx].sum(0))).score
                         - metric._compute_score_from_stats(list(sb[idx].sum(0))).score)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        out[name] = [round(float(lo), 2), round(float(hi), 2)]
    return out


def throughput(run_dir: Path, rows: list[dict], prompts: int, max_new_tokens: int) -> dict:
    """Generated tokens/s at batch 16 vs batch 1 on the same prompts, arms interleaved over 2 rounds, best counted."""
    from adapterkit.cli import quiet_libraries

    quiet_libraries()
    from adapterkit.heads.lm import GenerationSettings, text_ids
    from adapterkit.inference.generate import prompt_ids
    from adapterkit.inference.run import load_for_eval
    from adapterkit.model.generation import generate_batch

    run = load_for_eval(run_dir)
    ids = [prompt_ids(run.recipe, run.tokenizer, r["prompt"]) for r in rows[:prompts]]
    times, outs = {16: [], 1: []}, {}
    for _ in range(2):
        for size in (16, 1):
            t0 = time.perf_counter()
            outs[size] = generate_batch(run.model, run.tokenizer, ids, GenerationSettings(max_new_tokens=max_new_tokens, batch_size=size))
            times[size].append(time.perf_counter() - t0)
    tokens = sum(len(text_ids(run.tokenizer, t)) for t in outs[1])
    rate = {s: tokens / min(times[s]) for s in times}
    return {"prompts": len(ids), "tokens": tokens, "tokens_per_s_batch16": round(rate[16], 1),
            "tokens_per_s_batch1": round(rate[1], 1), "speedup": round(rate[16] / rate[1], 2),
            "identical": sum(x == y for x, y in zip(outs[16], outs[1]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-samples", type=int, default=1600)
    ap.add_argument("--test-samples", type=int, default=500)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--arms", default=",".join(ORDER))
    ap.add_argument("--throughput-prompts", type=int, default=32, help="0: skip the throughput measurement")
    a = ap.parse_args()
    arms = pick(a.arms, ORDER, "--arms")
    if not DATA.is_dir():
        sys.exit(f"{DATA}: WebNLG data not found (see ../shared/data/README)")
    WORK.mkdir(parents=True, exist_ok=True)
    test_rows = prepare(WORK, a.test_samples)
    refs = [r["references"] for r in test_rows]
    path = OUT / "webnlg.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    if res.get("settings", {}).get("train_samples") != a.train_samples or res.get("settings", {}).get("test_samples") != a.test_samples:
        res = {}
    res["settings"] = {"train_samples": a.train_samples, "test_samples": len(test_rows), "max_new_tokens": a.max_new_tokens,
                       "epochs": 1, "batch_size": 8, "seed": 0, "test_subset": "random.Random(0).sample of test.jsonl rows"}
    arms_res = res.setdefault("arms", {})
    common = train_sets(WORK, a.train_samples, a.max_new_tokens)

    def save() -> None:
        path.write_text(json.dumps(res, indent=1))

    for arm in [x for x in ORDER if x in arms]:
        entry = arms_res.setdefault(arm, {})
        run = WORK / ("lora_int8" if arm == "zero_shot" else arm)
        gen = WORK / f"{arm}.generations.jsonl"
        if arm != "zero_shot" and "train_seconds" not in entry:
            sets = [x for s in common + ARMS[arm] for x in ("--set", s)]
            entry["train_seconds"] = sh(["train", str(RECIPE), "-o", str(run), "--set", "training.overwrite=true", *sets], WORK / f"{arm}.train.log")
            metrics = json.loads((run / "metrics.json").read_text())
            entry["train"] = metrics["train"]
            entry["validation"] = {k: metrics["validation"][k] for k in ("bleu", "chrf", "loss") if k in metrics["validation"]}
            save()
        if "test" not in entry:
            if not (run / "run.json").is_file():
                sys.exit(f"{arm}: needs the lora_int8 run first (--arms lora_int8,zero_shot)")
            entry["generate_seconds"] = sh(generate_args(run, WORK, gen, a.max_new_tokens)
                                           + (["--zero-shot"] if arm == "zero_shot" else []), WORK / f"{arm}.generate.log")
            hyps = [json.loads(line)["completion"] for line in gen.read_text().splitlines()]
            entry["test"] = scores(hyps, refs)
            save()
        print(arm, json.dumps(entry), flush=True)

    hyps = {arm: [json.loads(line)["completion"] for line in (WORK / f"{arm}.generations.jsonl").read_text().splitlines()]
            for arm in arms_res if (WORK / f"{arm}.generations.jsonl").is_file()}
    res["bootstrap_95"] = {f"{x}-{y}": paired_bootstrap(hyps[x], hyps[y], refs)
                           for x, y in (("lora_int8", "zero_shot"), ("lora_int8", "full"), ("lora_int8", "lora_fp32"))
                           if x in hyps and y in hyps}
    for arm in ("lora_int8", "lora_fp32"):
        if a.throughput_prompts and arm not in res.setdefault("throughput", {}) and (WORK / arm / "run.json").is_file():
            res["throughput"][arm] = throughput(WORK / arm, test_rows, a.throughput_prompts, 48)
            save()
    save()
    write_md(res)


def write_md(res: dict) -> None:
    s, arms = res["settings"], res["arms"]
    lines = ["# WebNLG 2017 data-to-text: SmolLM2-135M-Instruct, zero-shot vs LoRA (int8, fp32) vs full fine-tuning (CPU)", "",
             f"Command: `python benchmarks/webnlg.py --train-samples {s['train_samples']} --test-samples {s['test_samples']}` "
             f"(recipe `recipes/smollm2-webnlg-lora-int8.yaml`, arms as `--set` overrides). Training: the same "
             f"{s['train_samples']} pairs (seeded shuffle of train.jsonl), 1 epoch, batch 8, max_length 320; LoRA r16 "
             f"alpha 32 lr 1e-3, full fine-tuning lr 5e-5 on the float32 backbone. Test: {s['test_samples']} triple sets "
             f"drawn with `random.Random(0)` from test.jsonl (seen and unseen categories), greedy, at most "
             f"{s['max_new_tokens']} new tokens, batch 16; corpus BLEU and chrF (sacrebleu) against every reference. "
             "One seed; the intervals are a paired bootstrap over test sets (1,000 resamples).", "",
             "| arm | test BLEU | test chrF | trainable params | train examples/s | train wall s | generate wall s |",
             "|---|---|---|---|---|---|---|"]
    for arm in ORDER:
        e = arms.get(arm)
        if not e or "test" not in e:
            continue
        t = e.get("train", {})
        lines.append(f"| {arm} | {e['test']['bleu']:.2f} | {e['test']['chrf']:.2f} | {t.get('trainable_params', 0):,} | "
                     f"{t.get('examples_per_s', '-')} | {e.get('train_seconds', '-')} | {e.get('generate_seconds', '-')} |")
    if res.get("bootstrap_95"):
        lines += ["", "| difference | BLEU 95% interval | chrF 95% interval |", "|---|---|---|"]
        for k, v in res["bootstrap_95"].items():
            x, y = k.split("-")
            d = arms[x]["test"]["bleu"] - arms[y]["test"]["bleu"], arms[x]["test"]["chrf"] - arms[y]["test"]["chrf"]
            lines.append(f"| {x} - {y} | {d[0]:+.2f} [{v['bleu'][0]:+.2f}, {v['bleu'][1]:+.2f}] | {d[1]:+.2f} [{v['chrf'][0]:+.2f}, {v['chrf'][1]:+.2f}] |")
    if res.get("throughput"):
        lines += ["", "Generation throughput, batch 16 vs one prompt at a time, on the trained runs (the first test prompts, "
                  "at most 48 new tokens, greedy, arms interleaved over 2 rounds, best counted):", "",
                  "| run | prompts | tokens/s batch 16 | tokens/s batch 1 | speed-up | greedy text identical |", "|---|---|---|---|---|---|"]
        for arm, t in res["throughput"].items():
            lines.append(f"| {arm} | {t['prompts']} | {t['tokens_per_s_batch16']} | {t['tokens_per_s_batch1']} | "
                         f"**{t['speedup']}x** | {t['identical']} of {t['prompts']} |")
    (OUT / "webnlg.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
