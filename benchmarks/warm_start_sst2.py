"""Warm start on SST-2: train one epoch on half of an 8,000-example subset, continue one epoch on the other half from
that run (`adapter.init_from`), and compare with a cold run on the second half alone; int8 all-MiniLM-L6-v2, LoRA
as in recipes/sst2-lora-int8.yaml, final weights, all 872 validation sentences. Each run is a fresh process.

    python benchmarks/warm_start_sst2.py [--ntrain 8000] [--seeds 0,1]
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
RECIPE = ROOT / "recipes" / "sst2-lora-int8.yaml"
ARM = '''
import json, sys
from adapterkit.cli import quiet_libraries
quiet_libraries()
from adapterkit.config import resolve_paths
from adapterkit.model import load_recipe
from adapterkit.training import train
final = train(resolve_paths(load_recipe(sys.argv[2], json.loads(sys.argv[1]))))
print(json.dumps(dict(val_acc=final["validation"]["accuracy"], steps=final["train"]["steps"])))
'''


def halves(tmp: Path, n: int, seed: int) -> tuple[Path, Path]:
    with open(SST2 / "train.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    random.Random(seed).shuffle(body)
    out = []
    for i, part in enumerate((body[: n // 2], body[n // 2: n])):
        p = tmp / f"half{i}-seed{seed}.tsv"
        p.write_text("".join("\t".join(r) + "\n" for r in [header, *part]))  # the rows as read: no quoting added
        out.append(p)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ntrain", type=int, default=8000)
    ap.add_argument("--seeds", default="0")
    a = ap.parse_args()
    if not SST2.is_dir():
        sys.exit(f"SST-2 not found at {SST2}: this benchmark needs the shared data folder beside the repository")
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-warm-"))
    (tmp / "arm.py").write_text(ARM)
    results = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        first, second = halves(tmp, a.ntrain, seed)
        common = [f"data.validation={SST2 / 'validation.tsv'}", "training.eval_every=100000", "training.overwrite=true",
                  "training.epochs=1", f"training.seed={seed}"]
        row = {"seed": seed}
        for name, train_file, extra in (("first_half", first, []),
                                        ("continued", second, [f"adapter.init_from={tmp / f'first_half-{seed}'}"]),
                                        ("cold_second_half", second, [])):
            overrides = common + [f"data.train={train_file}", f"training.output_dir={tmp / f'{name}-{seed}'}"] + extra
            r = run_script([str(tmp / "arm.py"), json.dumps(overrides), str(RECIPE)])
            row[name] = r.get("val_acc", r.get("error"))
            print(seed, name, json.dumps(r), flush=True)
        results.append(row)
    lines = [f"# Warm start on SST-2 (int8 all-MiniLM-L6-v2, LoRA r=16)", "",
             f"Command: `python benchmarks/warm_start_sst2.py --ntrain {a.ntrain} --seeds {a.seeds}`. Each seed shuffles the "
             f"SST-2 training file and takes {a.ntrain:,} sentences in two halves of {a.ntrain // 2:,}; one epoch each, final "
             f"weights, validation accuracy on all 872 dev sentences; every run a fresh process.", "",
             "| seed | first half | continued on the second half (init_from the first) | cold on the second half | continued - first |",
             "|---|---|---|---|---|"]
    for r in results:
        diff = (r["continued"] - r["first_half"]) if all(isinstance(r[k], float) for k in ("continued", "first_half")) else ""
        lines.append(f"| {r['seed']} | {r['first_half']} | {r['continued']} | {r['cold_second_half']} | {diff if diff == '' else f'{diff:+.4f}'} |")
    ok = [r for r in results if all(isinstance(r[k], float) for k in ("continued", "first_half"))]
    if len(ok) > 1:
        lines += ["", f"Mean: first {statistics.fmean(r['first_half'] for r in ok):.4f}, continued "
                      f"{statistics.fmean(r['continued'] for r in ok):.4f}, cold {statistics.fmean(r['cold_second_half'] for r in ok):.4f}."]
    res = ROOT / "benchmarks" / "results"
    (res / "warm_start_sst2.json").write_text(json.dumps({"ntrain": a.ntrain, "runs": results}, indent=1))
    (res / "warm_start_sst2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
