"""Run one benchmark arm in a fresh subprocess and collect its JSON result plus peak RSS.

Each arm prints one JSON object on its last stdout line; peak RSS comes from the child's own rusage,
so arms do not share memory high-water marks."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WRAP = (
    "import json, resource, runpy, sys\n"
    "sys.argv = {argv!r}\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "finally:\n"
    "    print(json.dumps({{'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}), flush=True)\n"
)


def bad_input(msg: str) -> None:
    """One line on stderr and exit 2, the CLI's code for bad input."""
    print(msg, file=sys.stderr)
    sys.exit(2)


def pick(csv: str, known, flag: str) -> list[str]:
    """Names from a comma list, each one of `known`; otherwise exit with one line naming the flag."""
    names = csv.split(",")
    unknown = sorted(set(names) - set(known))
    if unknown:
        bad_input(f"{flag}: unknown {unknown}; expected a comma list of {list(known)}")
    return names


def seeds(csv: str, flag: str = "--seeds") -> list[int]:
    """Seeds from a comma list of non-negative integers; otherwise exit with one line naming the flag."""
    try:
        out = [int(x) for x in csv.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 0:
        bad_input(f"{flag}: {csv!r}; expected a comma list of non-negative integers, e.g. 0,1,2")
    return out


def run_script(argv: list[str], env: dict | None = None, cwd: str | None = None, timeout: int = 3600) -> dict:
    """Run `python argv...` in a child; merge every JSON object line it printed, plus peak_rss_mib."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    proc = subprocess.run([sys.executable, "-c", WRAP.format(argv=argv)], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)
    result = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                result.update(json.loads(line))
            except json.JSONDecodeError:
                pass
    if proc.returncode != 0:
        result["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return result


def add_ratios(results: dict[str, dict], ref: dict, name: str, acc_key: str = "val_acc") -> None:
    """Speed and peak-RSS ratios and the accuracy difference of every arm against the reference arm `ref`."""
    for r in results.values():
        if ref.get("ex_per_s") and r.get("ex_per_s"):
            r[f"speed_vs_{name}"] = round(r["ex_per_s"] / ref["ex_per_s"], 2)
        if ref.get("peak_rss_mib") and r.get("peak_rss_mib"):
            r[f"rss_vs_{name}"] = round(r["peak_rss_mib"] / ref["peak_rss_mib"], 2)
        if ref.get(acc_key) is not None and r.get(acc_key) is not None:
            r[f"acc_minus_{name}"] = round(r[acc_key] - ref[acc_key], 4)


def adapterkit(args: list[str], log: Path, cwd) -> float:
    """Run an `adapterkit` command (this interpreter's), its output to `log`; exit with its last line when it fails.
    Returns the wall seconds."""
    t0 = time.perf_counter()
    with Path(log).open("w") as f:
        proc = subprocess.run([str(Path(sys.executable).with_name("adapterkit")), *args], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"))
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:2])}: failed, see {log}: {Path(log).read_text().strip().splitlines()[-1:]}")
    return round(time.perf_counter() - t0, 1)


def mean_sd(values) -> dict:
    """Mean, sample sd (0 for one value) and the values, rounded to 4 places: one table cell over seeds."""
    return dict(mean=round(statistics.mean(values), 4), sd=round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                values=[round(v, 4) for v in values])


NOTES = "<!-- notes:"  # in a results .md: what follows this marker is hand-written and kept


def write_md(path: Path, md: str) -> None:
    """Write a rendered results table, keeping the hand-written findings below NOTES of the file it replaces."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if NOTES in old:
        md += "\n" + NOTES + old.split(NOTES, 1)[1]
    path.write_text(md)
