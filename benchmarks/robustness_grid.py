"""Robustness grid: do the default learning rates (and their double) ever collapse?

    python benchmarks/robustness_grid.py [--seeds 0,1,2] [--methods lora,bottleneck] [--sets conll1k,sparse_ner,sst2_1k]

Cells: method x data set x learning rate (the method's default, `training.lr` omitted, and twice it), 3 seeds each,
through `adapterkit train RECIPE --seeds ...` on the int8 all-MiniLM-L6-v2:
- conll1k: recipes/conll2003-lora-int8.yaml on a seeded 1,000-sentence subset of CoNLL-2003 train (`--ner-epochs`, 3; batch 16),
  scored on the first 1,000 validation sentences;
- sparse_ner: the same recipe on a low-resource set built from CoNLL-2003: 1,500 training sentences holding at most one
  entity each (seeded draw, written under runs/), validation the first 1,000 validation sentences with at most one
  entity;
- sst2_1k: recipes/sst2-lora-int8.yaml on a seeded 1,000-example subset of SST-2 train (3 epochs, batch 32), all 872
  validation sentences.
lora: the recipe's LoRA (r 16, alpha 32, dropout 0.05, all linear layers); bottleneck: `adapter.method: bottleneck` with
every default. Warmup: the method's default (`training.warmup_ratio` omitted). Evaluation at each epoch's end; a cell collapsed when any seed's run carries a collapse warning
(metrics.json `warnings`: one tag or class for everything, entity F1 0 with gold entities, accuracy at the majority
rate). Reported: the validation metric of the final weights (mean, sd, values). Writes
benchmarks/results/robustness_grid.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import adapterkit, pick, write_md  # noqa: E402

from adapterkit.adapters import METHODS as REGISTRY  # noqa: E402
from adapterkit.config.schema import DEFAULT_LR as GENERIC_LR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "bench-robustness"
OUT = ROOT / "benchmarks" / "results"
METHODS = {"lora": None, "bottleneck": {"method": "bottleneck"}}   # None: the recipe's own adapter
DEFAULT_LR = {m: REGISTRY[m].default_lr or GENERIC_LR for m in METHODS}  # read from the registry, so the 2x cell follows the shipped default


def sentences(path: Path) -> list[list[str]]:
    out, cur = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur = []
        elif not line.startswith("-DOCSTART-"):
            cur.append(line)
    return out + ([cur] if cur else [])


def entities(sent: list[str]) -> int:
    return sum(line.split()[-1].startswith("B-") for line in sent)


def write_sparse(dest: Path) -> tuple[Path, Path, dict]:
    """1,500 train sentences with <= 1 entity (seeded), and validation sentences with <= 1 entity."""
    dest.mkdir(parents=True, exist_ok=True)
    train = [s for s in sentences(SHARED / "conll2003" / "train.txt") if entities(s) <= 1]
    random.Random(0).shuffle(train)
    train = train[:1500]
    val = [s for s in sentences(SHARED / "conll2003" / "validation.txt") if entities(s) <= 1][:1000]
    for name, rows in (("train.txt", train), ("validation.txt", val)):
        (dest / name).write_text("\n\n".join("\n".join(s) for s in rows) + "\n")
    stats = {k: dict(sentences=len(v), with_entity=sum(entities(s) == 1 for s in v)) for k, v in (("train", train), ("validation", val))}
    return dest / "train.txt", dest / "validation.txt", stats


def data_sets(stats: dict, ner_epochs: float) -> dict[str, tuple[str, list[str], str]]:
    conll = SHARED / "conll2003"
    tr, va, stats["sparse_ner"] = write_sparse(WORK / "sparse_ner")
    ner = ["data.test=null", "data.max_eval_samples=1000", f"training.epochs={ner_epochs:g}"]
    return {
        "conll1k": ("recipes/conll2003-lora-int8.yaml", [f"data.train={conll / 'train.txt'}", f"data.validation={conll / 'validation.txt'}",
                                                          "data.max_train_samples=1000", *ner], "f1"),
        "sparse_ner": ("recipes/conll2003-lora-int8.yaml", [f"data.train={tr}", f"data.validation={va}", *ner], "f1"),
        "sst2_1k": ("recipes/sst2-lora-int8.yaml", [f"data.train={SHARED / 'sst2' / 'train.tsv'}", f"data.validation={SHARED / 'sst2' / 'validation.tsv'}",
                                                     "data.test=null", "data.max_train_samples=1000", "training.epochs=3",
                                                     "training.eval_every=null"], "accuracy"),
    }


def final_metric(run: Path, metric: str) -> tuple[float, bool, list[str]]:
    """The last evaluation's metric (final weights), whether any collapse warning was raised, and the warnings."""
    m = json.loads((run / "metrics.json").read_text())
    evals = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    last = [e for e in evals if e.get("event") == "eval"][-1]
    warns = [w.get("message", str(w)) if isinstance(w, dict) else str(w) for w in m.get("warnings", [])]
    return float(last[metric]), bool(warns), warns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="lora,bottleneck")
    ap.add_argument("--sets", default="conll1k,sparse_ner,sst2_1k")
    ap.add_argument("--ner-epochs", type=float, default=3, help="epochs for the two NER sets (the CoNLL recipe trains 5)")
    ap.add_argument("--redo", action="store_true", help="re-run cells already in the work folder's results.json")
    a = ap.parse_args()
    if not (SHARED / "conll2003").is_dir() or not (SHARED / "sst2").is_dir():
        sys.exit(f"{SHARED}: CoNLL-2003 and SST-2 are needed (see ../shared/data/README)")
    seeds = [int(s) for s in a.seeds.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    stats: dict = {}
    sets = data_sets(stats, a.ner_epochs)
    done = WORK / "results.json"
    res = json.loads(done.read_text()) if done.exists() else {}
    for method in pick(a.methods, METHODS, "--methods"):
        for name in pick(a.sets, sets, "--sets"):
            recipe, extra, metric = sets[name]
            for mult in (1, 2):
                cell = f"{method}/{name}/lr{mult}x"
                if cell in res and not a.redo:
                    print(cell, "(done)", flush=True)
                    continue
                lr = DEFAULT_LR[method] * mult
                out = WORK / cell.replace("/", "-")
                over = [*extra, f"training.lr={lr:g}" if mult == 2 else "training.lr=null", "training.warmup_ratio=null", "training.overwrite=true",
                        "training.checkpoint_every=null"]
                if METHODS[method]:
                    over.append(f"adapter={json.dumps(METHODS[method])}")
                t = time.time()
                adapterkit(["train", recipe, "--seeds", a.seeds, "-o", str(out), *[x for o in over for x in ("--set", o)]],
                           WORK / f"{cell.replace('/', '-')}.log", ROOT)
                runs = [final_metric(out / f"seed-{s}", metric) for s in seeds]
                vals = [r[0] for r in runs]
                epochs = next((float(o.split("=")[1]) for o in extra if o.startswith("training.epochs=")), 5.0)
                res[cell] = dict(method=method, set=name, lr=lr, metric=metric, epochs=epochs, threads=os.environ.get("OMP_NUM_THREADS", "all"), seeds=seeds, values=[round(v, 4) for v in vals],
                                 mean=round(statistics.mean(vals), 4), sd=round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                                 collapsed=[s for s, r in zip(seeds, runs) if r[1]], warnings=sorted({w for r in runs for w in r[2]}),
                                 wall_s=round(time.time() - t, 1))
                print(cell, json.dumps(res[cell]), flush=True)
                done.write_text(json.dumps(res, indent=1))
    (OUT / "robustness_grid.json").write_text(json.dumps(dict(data=stats, cells=res), indent=1))
    lines = ["| method | data | lr | epochs | metric | mean ± sd | seeds | collapsed seeds |", "|---|---|---|---|---|---|---|---|"]
    for c in sorted(res.values(), key=lambda c: (c['method'], c['set'], c['lr'])):
        lines.append(f"| {c['method']} | {c['set']} | {c['lr']:g} | {c.get('epochs', 5):g} | {c['metric']} | {c['mean']:.4f} ± {c['sd']:.4f} | "
                     f"{', '.join(f'{v:.4f}' for v in c['values'])} | {', '.join(map(str, c['collapsed'])) or 'none'} |")
    sp = stats.get("sparse_ner", {})
    md = (f"# Robustness grid: default learning rate and twice it\n\n`python benchmarks/robustness_grid.py --seeds {a.seeds}` "
          f"({time.strftime('%Y-%m-%d %H:%M')}), int8 all-MiniLM-L6-v2, final weights scored on validation, each run on "
          f"{'/'.join(sorted({str(c.get('threads', '?')) for c in res.values()}))} thread(s). Data: conll1k "
          "(1,000 CoNLL-2003 train sentences, batch 16; first 1,000 validation sentences), sparse_ner (CoNLL-2003 "
          f"sentences with at most one entity: {sp.get('train', {}).get('sentences', '?')} train, "
          f"{sp.get('train', {}).get('with_entity', '?')} of them with an entity; {sp.get('validation', {}).get('sentences', '?')} "
          "validation), sst2_1k (1,000 SST-2 train sentences, 3 epochs, batch 32; 872 validation). lora = the recipes' "
          "LoRA r 16; bottleneck = every default (pfeiffer, size 64). lr: the method's default (`training.lr` omitted) and "
          "twice it; warmup: the method's default (`training.warmup_ratio` omitted: lora 0.06, bottleneck 0.1). A seed counts as collapsed when its run carries a collapse warning in metrics.json (the guard: degenerate predictions at two consecutive evaluations in the second half of training, or at the final weights).\n\n" + "\n".join(lines) + "\n")
    write_md(OUT / "robustness_grid.md", md)  # hand-written findings below the notes marker survive a re-run
    print(md)


if __name__ == "__main__":
    main()
